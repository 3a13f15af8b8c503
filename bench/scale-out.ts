/**
 * Scale-out: Outrun on PostgreSQL + Redis with 1, 2, 4 … server processes sharing one database and one Redis,
 * under a sustained paced load above what one process carries (default 400 runs × 50 tokens/s = 20,000
 * tokens/s offered, started over 2 s, 1,000 tokens each). Requests are spread round robin over the processes'
 * HTTP ports; a run executes on whichever process's worker claims it from the queue (BullMQ), and its reader
 * follows it over the Redis bus.
 *
 *   npx tsx bench/scale-out.ts [--workers 1,2,4] [--runs 400] [--tokens 1000] [--rate 50] [--ramp-ms 2000]
 *     [--window-s 15] [--deadline-s 40] [--worker-concurrency N] [--redis-url redis://…] [--quick]
 *
 * Per process count: delivered tokens/s and schedule latency p99 over a fixed window in the steady state
 * (from the end of the ramp, `--window-s` long, while every run is still streaming), time to first token, runs
 * completed within the deadline, and CPU over the window: each server process, their sum, the PostgreSQL
 * backends, the redis-server (started by the benchmark, stopped by PID at the end) and everything together.
 *
 * Each process executes at most `--worker-concurrency` runs at once (default 100 here, as a fixed cap: the
 * benchmark sets `OUTRUN_WORKER_BASE_CONCURRENCY` to the same, so no process admits more by load); the rest
 * wait in the queue. So N processes accept at most N × concurrency × rate tokens/s ("cap"), whatever their
 * CPU: one process takes 100 of the 400 runs, 5,000 tokens/s. `--worker-concurrency` raises the cap to find
 * the CPU ceiling instead.
 */
import { parseArgs } from 'node:util';
import { printHeader } from './support/environment.ts';
import { runPacedWave, totalCpu } from './support/paced-wave.ts';
import { printTable, type Cell } from './support/table.ts';
import { startTarget, targetUnavailable, type Target, type TargetOptions } from './support/targets.ts';

const { values } = parseArgs({
  options: {
    workers: { type: 'string' },
    runs: { type: 'string' },
    tokens: { type: 'string' },
    rate: { type: 'string' },
    'ramp-ms': { type: 'string' },
    'window-s': { type: 'string' },
    'deadline-s': { type: 'string' },
    'worker-concurrency': { type: 'string' },
    'redis-url': { type: 'string' },
    quick: { type: 'boolean', default: false },
    // Accepted so `bench/all.ts --store …` can run every benchmark alike; this one always uses PostgreSQL.
    store: { type: 'string' },
  },
});
const quick = values.quick ?? false;
const workerCounts = (values.workers ?? (quick ? '1,2' : '1,2,4')).split(',').map(Number);
const runs = Number(values.runs ?? (quick ? 40 : 400));
const tokens = Number(values.tokens ?? (quick ? 150 : 1000));
const rate = Number(values.rate ?? 50);
const rampMs = Number(values['ramp-ms'] ?? (quick ? 500 : 2000));
const windowMs = Number(values['window-s'] ?? (quick ? 2 : 15)) * 1000;
const deadlineMs = Number(values['deadline-s'] ?? (quick ? 10 : 40)) * 1000;
const workerConcurrency = values['worker-concurrency'] ? Number(values['worker-concurrency']) : undefined;
const delayMs = 1000 / rate;
/** A fixed cap per process, so the curve shows processes added, not one process admitting more by load. */
const concurrency = workerConcurrency ?? 100;
if (workerCounts.some((count) => !Number.isInteger(count) || count < 1)) {
  throw new Error('--workers: a list of positive integers, e.g. 1,2,4');
}
for (const [name, value] of Object.entries({
  runs,
  tokens,
  rate,
  'window-s': windowMs,
  'deadline-s': deadlineMs,
})) {
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
}
if (rampMs + windowMs > deadlineMs) throw new Error('--ramp-ms + --window-s must fit within --deadline-s');
if (rampMs + windowMs > tokens * delayMs) {
  console.warn(
    `warning: runs last ${(tokens * delayMs) / 1000} s, shorter than ramp + window; the window sees runs end`,
  );
}

const unavailable = await targetUnavailable('redis', { sharedRedisUrl: values['redis-url'] });
if (unavailable) {
  console.error(`scale-out needs PostgreSQL and Redis: ${unavailable}`);
  process.exit(1);
}

printHeader('scale-out', {
  load: `${runs} runs started evenly over ${rampMs} ms, ${tokens} tokens each at ${rate} tokens/s (${(runs * rate).toLocaleString('en-US')} tokens/s offered), one SSE reader per run, requests round robin over the processes; window ${rampMs / 1000}–${(rampMs + windowMs) / 1000} s after the first start; all cut at ${deadlineMs / 1000} s`,
  'server processes': workerCounts.join(', '),
  'OUTRUN_WORKER_CONCURRENCY and _BASE_CONCURRENCY': `${concurrency}${workerConcurrency ? '' : ' (default here)'} runs per process`,
});

const rows: Cell[][] = [];
const descriptions: string[] = [];
for (const workers of workerCounts) {
  const options: TargetOptions = {
    workers,
    workerConcurrency: concurrency,
    workerBaseConcurrency: concurrency,
    sharedRedisUrl: values['redis-url'],
  };
  let target: Target | undefined;
  try {
    target = await startTarget('redis', options);
    descriptions.push(`- ×${workers}: ${target.description}`);
    console.log(`\n×${workers}: ${target.description}`);
    const warmUpRuns = Math.max(5, 2 * workers);
    await runPacedWave(target, { runs: warmUpRuns, tokens: 20, delayMs: 5, rampMs: 0, deadlineMs: 30_000 });
    const wave = await runPacedWave(target, {
      runs,
      tokens,
      delayMs,
      rampMs,
      deadlineMs,
      window: { startMs: rampMs, endMs: rampMs + windowMs },
    });
    const window = wave.window!;
    const percent = (micros: number | null) => (micros === null ? null : (micros / 1000 / window.ms) * 100);
    const servers = window.cpu.servers.reduce((sum, micros) => sum + micros, 0);
    const delivered = window.deltas / (window.ms / 1000);
    const first = wave.timeToFirstToken.summary();
    console.log(
      `×${workers}: ${delivered.toFixed(0)} tokens/s delivered in the window, schedule p99 ` +
        `${window.scheduleLatency.summary().p99.toFixed(1)} ms, ${wave.completed}/${runs} completed` +
        (wave.failed > 0 ? `, ${wave.failed} failed (${wave.errors.join('; ')})` : ''),
    );
    rows.push([
      workers,
      runs * rate,
      Math.min(runs, workers * concurrency) * rate,
      delivered,
      window.scheduleLatency.summary().p50,
      window.scheduleLatency.summary().p99,
      first.p50,
      first.p99,
      wave.completed,
      wave.failed,
      window.cpu.servers.map((micros) => percent(micros)!.toFixed(0)).join(' / '),
      percent(servers),
      percent(window.cpu.database),
      percent(window.cpu.redis),
      percent(totalCpu(window.cpu)),
      percent(window.clientCpuMicros),
      delivered > 0 ? totalCpu(window.cpu) / 1000 / (window.deltas / 1000) : null,
    ]);
  } catch (error) {
    console.error(`×${workers} failed:`, error);
    process.exitCode = 1;
  } finally {
    await target?.close();
  }
}

printTable({
  title: `scale-out — ${process.version}, ${runs} runs × ${tokens} tokens at ${rate} tokens/s, PostgreSQL + Redis`,
  columns: [
    'processes',
    'offered tok/s',
    'cap tok/s',
    'delivered tok/s',
    'schedule p50 ms',
    'schedule p99 ms',
    'TTFT p50 ms',
    'TTFT p99 ms',
    `completed in ${deadlineMs / 1000} s`,
    'failed',
    'CPU % per process',
    'servers CPU %',
    'PostgreSQL CPU %',
    'Redis CPU %',
    'all CPU %',
    'client CPU %',
    'all CPU ms/1k tok',
  ],
  rows,
  digits: [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
  notes: [
    `Window: ${windowMs / 1000} s from the end of the ramp. Delivered: text deltas received by the readers in ` +
      'the window per second. Cap: runs the processes execute at once (OUTRUN_WORKER_CONCURRENCY each) × rate. ' +
      'Schedule: received − due in the run’s pacing schedule, deltas received in the window. TTFT: request sent ' +
      '→ first delta, every run (queued runs wait for a worker slot). CPU % is of one core over the window; ' +
      `the machine has the cores printed above, shared with the readers (client). \`all\` = servers + PostgreSQL ` +
      '+ Redis.',
    descriptions.join('\n'),
  ],
});
