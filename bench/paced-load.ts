/**
 * Paced load against Outrun and its baselines, on the same machine and the same clock model: N runs started
 * evenly over a ramp (default 100 and 500 runs over 2 s), each streaming 1,000 tokens at 50 tokens/s, each read
 * by its own SSE connection, every stream cut at a deadline (40 s after the first start).
 *
 *   npx tsx bench/paced-load.ts [--target a0,a,b,d,pglite,postgres,redis] [--runs 100,500] [--tokens 1000]
 *     [--rate 50] [--ramp-ms 2000] [--deadline-s 40] [--workers 1] [--worker-concurrency N]
 *     [--worker-base-concurrency N]
 *     [--redis-url redis://…] [--rounds N] [--quick]
 *
 * Targets (default: every one this machine can run): `a0` bare SSE writes on node:http (no AI SDK), `a` the
 * AI SDK `streamText` → SSE pipe, `b` that pipe plus `resumable-stream` on Redis (needs the npm package), `d`
 * that pipe plus a minimal durable log on PostgreSQL (the durable floor: bench/support/durable-pipe-server.ts),
 * and Outrun on `pglite`, on `postgres`, and on PostgreSQL + Redis (`redis`) with `--workers` server processes
 * sharing one database and one Redis, requests spread round robin over them.
 *
 * Figures, per target:
 * 1. time to first token p50/p99 at the smallest wave: request sent → first text delta received by its reader;
 * 2. schedule latency p99 at the smallest wave: how late each token reaches its reader against its place in
 *    the run's pacing schedule (received − due, clock offset subtracted; the schedule starts when the model
 *    is called, so time spent queued shows in the time to first token, not here);
 * 3. runs completed (reader saw `[DONE]`) within the deadline at the largest wave;
 * 4. CPU ms per 1,000 tokens for one stream alone: the server process(es), plus the PostgreSQL backends of the
 *    target's database and the redis-server the benchmark started, where used.
 *
 * Each target gets a fresh server (and database, and Redis); after a wave that was cut at the deadline the
 * target is restarted, since Outrun's runs go on without their readers. An Outrun process runs
 * `OUTRUN_WORKER_BASE_CONCURRENCY` runs at once whatever its load (default 100), more while its event loop
 * keeps up, never more than `OUTRUN_WORKER_CONCURRENCY` (default 1,000); the rest wait in the queue, which a
 * wave larger than it admits shows as queued runs finishing late. Both flags equal give a fixed cap.
 *
 * With `--rounds N` every target is measured N times, each round beginning with the next target in turn (so no
 * target is always the one measured first, or right after another's wave), and a last table gives, per
 * target, the median over the rounds of each figure and of its ratio to the pipe's in the same round.
 */
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.ts';
import { printHeader } from './support/environment.ts';
import { cpuBetween, runPacedWave, totalCpu, type PacedWaveResult } from './support/paced-wave.ts';
import { median, type Sample } from './support/stats.ts';
import { printTable, type Cell } from './support/table.ts';
import {
  isTargetKind,
  startTarget,
  TARGET_KINDS,
  targetLabel,
  targetUnavailable,
  type Target,
  type TargetKind,
  type TargetOptions,
} from './support/targets.ts';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    runs: { type: 'string' },
    tokens: { type: 'string' },
    rate: { type: 'string' },
    'ramp-ms': { type: 'string' },
    'deadline-s': { type: 'string' },
    workers: { type: 'string', default: '1' },
    'worker-concurrency': { type: 'string' },
    'worker-base-concurrency': { type: 'string' },
    'redis-url': { type: 'string' },
    rounds: { type: 'string', default: '1' },
    quick: { type: 'boolean', default: false },
    // Accepted so `bench/all.ts --store …` can run every benchmark alike; the targets name their stores.
    store: { type: 'string' },
  },
});
const quick = values.quick ?? false;
const runCounts = (values.runs ?? (quick ? '20,50' : '100,500')).split(',').map(Number);
const tokens = Number(values.tokens ?? (quick ? 100 : 1000));
const rate = Number(values.rate ?? 50);
const rampMs = Number(values['ramp-ms'] ?? (quick ? 500 : 2000));
const deadlineMs = Number(values['deadline-s'] ?? (quick ? 6 : 40)) * 1000;
const workers = Number(values.workers);
const workerConcurrency = values['worker-concurrency'] ? Number(values['worker-concurrency']) : undefined;
const workerBaseConcurrency = values['worker-base-concurrency']
  ? Number(values['worker-base-concurrency'])
  : undefined;
const rounds = Number(values.rounds);
const delayMs = 1000 / rate;
for (const [name, value] of Object.entries({ tokens, rate, 'deadline-s': deadlineMs, workers })) {
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
}
if (!Number.isInteger(rounds) || rounds <= 0) throw new Error('--rounds must be a positive integer');
if (runCounts.some((runs) => !Number.isInteger(runs) || runs <= 0))
  throw new Error('--runs: positive integers');
if (!(rampMs >= 0)) throw new Error('--ramp-ms must be 0 or more');
const requested = values.target?.split(',');
for (const kind of requested ?? []) {
  if (!isTargetKind(kind)) throw new Error(`--target: "${kind}" is not one of ${TARGET_KINDS.join(', ')}`);
}
const targetOptions: TargetOptions = {
  workers,
  workerConcurrency,
  workerBaseConcurrency,
  sharedRedisUrl: values['redis-url'],
};

const kinds: TargetKind[] = [];
const skipped: string[] = [];
for (const kind of (requested as TargetKind[] | undefined) ?? TARGET_KINDS) {
  const reason = await targetUnavailable(kind, targetOptions);
  if (reason === null) kinds.push(kind);
  else {
    skipped.push(`${targetLabel(kind, workers)}: ${reason}`);
    if (requested) process.exitCode = 1;
  }
}

const defaults = loadConfig({});
printHeader('paced-load', {
  load: `${runCounts.join(' and ')} runs started evenly over ${rampMs} ms, ${tokens} tokens each at ${rate} tokens/s (one every ${delayMs} ms), one SSE reader per run, all cut ${deadlineMs / 1000} s after the first start`,
  targets: kinds.map((kind) => targetLabel(kind, workers)).join('; ') || 'none',
  OUTRUN_WORKER_CONCURRENCY: workerConcurrency ?? `${defaults.workerConcurrency} (default)`,
  OUTRUN_WORKER_BASE_CONCURRENCY: workerBaseConcurrency ?? `${defaults.workerBaseConcurrency} (default)`,
  rounds,
});
for (const skip of skipped) console.log(`- skipped ${skip}`);

interface TargetResults {
  kind: TargetKind;
  /** 0 for the first round (`--rounds`). */
  round: number;
  label: string;
  description: string;
  oneStream?: PacedWaveResult;
  /** CPU time (µs) everything serving the target used per ms while idle, just before the one-stream wave. */
  idleMicrosPerMs?: number;
  waves: PacedWaveResult[];
}
const results: TargetResults[] = [];
const failures: string[] = [];
const oneStreamTokens = tokens;
/** How long the idle CPU of a target is measured before its one-stream wave. */
const idleMs = quick ? 2_000 : 5_000;

/** Each round begins with the next target in turn. */
const schedule = Array.from({ length: rounds }, (_, round) =>
  kinds.map((_, index) => ({ round, kind: kinds[(index + round) % kinds.length]! })),
).flat();
for (const { round, kind } of schedule) {
  const label = targetLabel(kind, workers) + (rounds > 1 ? ` (round ${round + 1})` : '');
  const entry: TargetResults = { kind, round, label, description: '', waves: [] };
  let target: Target | undefined;
  try {
    target = await startTarget(kind, targetOptions);
    entry.description = target.description;
    console.log(`\n${entry.label}: ${target.description}`);
    await warmUp(target);
    const idleBefore = await target.cpu();
    await new Promise((resolve) => setTimeout(resolve, idleMs));
    entry.idleMicrosPerMs = totalCpu(cpuBetween(idleBefore, await target.cpu())) / idleMs;
    entry.oneStream = await runPacedWave(target, {
      runs: 1,
      tokens: oneStreamTokens,
      delayMs,
      rampMs: 0,
      deadlineMs: Math.max(deadlineMs, oneStreamTokens * delayMs * 2),
    });
    report(entry.label, entry.oneStream);
    for (const runs of runCounts) {
      // With BENCH_PROFILE_DIR, a CPU profile of each server over the wave (server-process.ts).
      await Promise.all(target.servers.map((server) => server.profile('start')));
      const wave = await runPacedWave(target, { runs, tokens, delayMs, rampMs, deadlineMs });
      const profileName = `paced-load-${kind}-${runs}${rounds > 1 ? `-round${round + 1}` : ''}`;
      await Promise.all(
        target.servers.map((server, index) => server.profile('stop', `${profileName}-${index}`)),
      );
      entry.waves.push(wave);
      report(entry.label, wave);
      if (wave.completed < runs && runs !== runCounts.at(-1)) {
        // Cut runs may still be executing: the next wave gets a fresh target.
        await target.close();
        target = await startTarget(kind, targetOptions);
        await warmUp(target);
      }
    }
  } catch (error) {
    failures.push(`${entry.label}: ${(error as Error).stack ?? String(error)}`);
    console.error(`${entry.label} failed:`, error);
    process.exitCode = 1;
  } finally {
    await target?.close();
  }
  results.push(entry);
}

const percent = (micros: number | null, ms: number) => (micros === null ? null : (micros / 1000 / ms) * 100);
const waveRows: Cell[][] = results.flatMap((entry) =>
  entry.waves.map((wave) => {
    const latency = wave.scheduleLatency.summary();
    const first = wave.timeToFirstToken.summary();
    const servers = wave.cpu.servers.reduce((sum, micros) => sum + micros, 0);
    return [
      entry.label,
      wave.runs,
      first.p50,
      first.p99,
      latency.p50,
      latency.p99,
      latency.max,
      wave.emitLag.summary().p99,
      wave.completed,
      wave.withoutFirstToken,
      wave.failed,
      wave.deltas / (wave.elapsedMs / 1000),
      percent(servers, wave.elapsedMs),
      percent(wave.cpu.database, wave.elapsedMs),
      percent(wave.cpu.redis, wave.elapsedMs),
      percent(wave.clientCpuMicros, wave.elapsedMs),
      wave.stealPercent,
    ];
  }),
);
printTable({
  title: `paced-load — ${process.version}, ${tokens} tokens/run at ${rate} tokens/s, started over ${rampMs} ms`,
  columns: [
    'target',
    'runs',
    'TTFT p50 ms',
    'TTFT p99 ms',
    'schedule p50 ms',
    'schedule p99 ms',
    'schedule max ms',
    'emit lag p99 ms',
    `completed in ${deadlineMs / 1000} s`,
    'no first token',
    'failed',
    'tokens/s',
    'server CPU %',
    'PostgreSQL CPU %',
    'Redis CPU %',
    'client CPU %',
    'steal %',
  ],
  rows: waveRows,
  digits: [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
  notes: [
    'TTFT: request sent → first text delta at its reader. Schedule: received − due in the run’s pacing ' +
      'schedule (clock offset subtracted), over every delta. Emit lag: model emitted − due (a busy server picks ' +
      `tokens up late). An unsaturated server finishes a run in ${((tokens * delayMs) / 1000).toFixed(1)} s. ` +
      'CPU % is of one core over first start → last end; server CPU sums every server process. ' +
      '`no first token`: runs still queued or cut before their first delta (not in the TTFT percentiles). ' +
      'Steal: the share of the machine’s CPU time the hypervisor gave to other guests during the wave ' +
      '(/proc/stat); a wave with steal ran slower than its load shows.',
  ],
});

/** The pipe's entry of the same round as `entry`. */
const pipeOf = (entry: TargetResults) =>
  results.find((other) => other.kind === 'a' && other.round === entry.round);
const perThousand = (micros: number | null, wave: PacedWaveResult) =>
  micros === null ? null : (micros / 1000 / wave.deltas) * 1000;
/** What the target would have used idle over the one-stream wave, per 1,000 of its tokens (ms). */
const idlePerThousand = (entry: TargetResults) =>
  entry.idleMicrosPerMs === undefined || !entry.oneStream
    ? null
    : perThousand(entry.idleMicrosPerMs * entry.oneStream.elapsedMs, entry.oneStream);
const cpuRows: Cell[][] = results
  .filter((entry) => entry.oneStream)
  .map((entry) => {
    const wave = entry.oneStream!;
    const servers = wave.cpu.servers.reduce((sum, micros) => sum + micros, 0);
    const total = perThousand(totalCpu(wave.cpu), wave)!;
    const idle = idlePerThousand(entry);
    const pipe = pipeOf(entry)?.oneStream;
    return [
      entry.label,
      wave.deltas,
      perThousand(servers, wave),
      perThousand(wave.cpu.database, wave),
      perThousand(wave.cpu.redis, wave),
      total,
      idle,
      idle === null ? null : total - idle,
      pipe ? total / perThousand(totalCpu(pipe.cpu), pipe)! : null,
    ];
  });
printTable({
  title: `paced-load, one stream — CPU per 1,000 tokens, ${process.version}`,
  columns: [
    'target',
    'tokens',
    'server ms/1k tok',
    'PostgreSQL ms/1k tok',
    'Redis ms/1k tok',
    'total ms/1k tok',
    'idle ms/1k tok',
    'above idle ms/1k tok',
    'total / A',
  ],
  rows: cpuRows,
  digits: [0, 0, 1, 1, 1, 1, 1, 1, 2],
  notes: [
    `One run of ${oneStreamTokens} tokens at ${rate} tokens/s alone on a warmed-up target: CPU time of the ` +
      'server process(es), the PostgreSQL backends of its database and the redis-server the benchmark started, ' +
      'over first start → last end, so idle work (timers, pollers, the benchmark’s own sampling in the ' +
      `server process) in that span counts too. \`idle\`: the same processes' CPU over ${idleMs / 1000} s ` +
      'with nothing running, just before, scaled to the wave’s length; `above idle` = total − idle. ' +
      '/proc counts PostgreSQL and Redis in 10 ms ticks.',
  ],
});

// The issue's table: one column per target, one row per figure.
const small = runCounts[0]!;
const large = runCounts.at(-1)!;
const waveOf = (entry: TargetResults, runs: number) => entry.waves[runCounts.indexOf(runs)];
const format = (value: number | null | undefined, digits = 0) =>
  value === null || value === undefined || Number.isNaN(value)
    ? '–'
    : value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
printTable({
  title: `paced-load summary — ${process.version}, ${tokens} tokens at ${rate} tokens/s, started over ${rampMs / 1000} s`,
  columns: ['', ...results.map((entry) => entry.label)],
  rows: [
    [
      `time to first token p50 / p99 (ms), ${small} runs`,
      ...results.map((entry) => {
        const first = waveOf(entry, small)?.timeToFirstToken.summary();
        return first ? `${format(first.p50, 1)} / ${format(first.p99, 1)}` : '–';
      }),
    ],
    [
      `schedule latency p99 (ms), ${small} runs`,
      ...results.map((entry) => format(waveOf(entry, small)?.scheduleLatency.summary().p99, 1)),
    ],
    [
      `schedule p99 (ms) while runs start / steady / while they end, ${small} runs`,
      ...results.map((entry) => {
        const phases = waveOf(entry, small)?.phases;
        if (!phases) return '–';
        const p99 = (sample: Sample) => (sample.length === 0 ? '–' : format(sample.summary().p99, 1));
        return `${p99(phases.starting)} / ${p99(phases.steady)} / ${p99(phases.ending)}`;
      }),
    ],
    [
      `runs completed in ${deadlineMs / 1000} s, ${large} runs`,
      ...results.map((entry) => {
        const wave = waveOf(entry, large);
        return wave ? `${wave.completed} / ${wave.runs}` : '–';
      }),
    ],
    [
      'CPU ms per 1k tokens, 1 stream (all processes)',
      ...results.map((entry) =>
        entry.oneStream ? format(perThousand(totalCpu(entry.oneStream.cpu), entry.oneStream), 1) : '–',
      ),
    ],
    ['of which idle (ms per 1k tokens)', ...results.map((entry) => format(idlePerThousand(entry), 1))],
  ],
  notes: [
    'Schedule p99 by phase: tokens received until a second after the last start, from the first run’s end ' +
      `(${((tokens * delayMs) / 1000).toFixed(0)} s after the first start) on, and in between.`,
    [
      ...results.map((entry) => `- ${entry.label}: ${entry.description || 'did not start'}`),
      ...skipped.map((skip) => `- skipped ${skip}`),
    ].join('\n'),
  ],
});
if (rounds > 1) printRoundMedians();
if (failures.length > 0) console.error(`\nFailed:\n${failures.join('\n')}`);

/**
 * `--rounds`: per target, the median over the rounds of each figure, and of its ratio to the pipe's figure in
 * the same round (the goals compare within a wave's hour, not across hours).
 */
function printRoundMedians(): void {
  const figures: { title: string; runs: number; digits: number; of: (wave: PacedWaveResult) => number }[] = [
    { title: 'TTFT p50 ms', runs: small, digits: 1, of: (wave) => wave.timeToFirstToken.summary().p50 },
    { title: 'TTFT p99 ms', runs: small, digits: 1, of: (wave) => wave.timeToFirstToken.summary().p99 },
    { title: 'schedule p99 ms', runs: small, digits: 1, of: (wave) => wave.scheduleLatency.summary().p99 },
    { title: 'completed', runs: large, digits: 0, of: (wave) => wave.completed },
  ];
  const medianOf = (values: number[]) => (values.length === rounds ? median(values) : null);
  const rows: Cell[][] = kinds.map((kind) => {
    const entries = results.filter((entry) => entry.kind === kind);
    const cells = figures.map(({ runs, digits, of }) => {
      const values: number[] = [];
      const ratios: number[] = [];
      for (const entry of entries) {
        const wave = waveOf(entry, runs);
        const pipe = pipeOf(entry);
        const pipeWave = pipe && waveOf(pipe, runs);
        if (!wave) continue;
        values.push(of(wave));
        if (pipeWave) ratios.push(of(wave) / of(pipeWave));
      }
      const value = medianOf(values);
      const ratio = medianOf(ratios);
      return `${format(value, digits)}${ratio === null ? '' : ` (${format(ratio, 2)}×)`}`;
    });
    return [targetLabel(kind, workers), ...cells];
  });
  printTable({
    title: `paced-load, medians of ${rounds} rounds — ${process.version}`,
    columns: ['target', ...figures.map(({ title, runs }) => `${title}, ${runs} runs (÷ pipe)`)],
    rows,
    notes: [
      'Each figure is the median of its value in every round; in brackets the median of the rounds’ own ratios ' +
        'to the pipe (A) in the same round. `–` where a round has no such wave (a target that failed).',
    ],
  });
}

/** A few short runs so the first measured wave does not pay for JIT compilation and connection pools. */
async function warmUp(target: Target): Promise<void> {
  const runs = Math.max(5, 2 * target.servers.length);
  const wave = await runPacedWave(target, { runs, tokens: 20, delayMs: 5, rampMs: 0, deadlineMs: 30_000 });
  if (wave.completed < runs) {
    throw new Error(`warm-up: ${wave.completed} of ${runs} runs completed (${wave.errors.join('; ')})`);
  }
}

function report(label: string, wave: PacedWaveResult): void {
  const first = wave.timeToFirstToken.summary();
  const latency = wave.scheduleLatency.summary();
  console.log(
    `${label}, ${wave.runs} run${wave.runs === 1 ? '' : 's'}: TTFT p50 ${first.p50.toFixed(1)} ms, ` +
      `schedule p99 ${latency.p99.toFixed(1)} ms, ${wave.completed}/${wave.runs} completed, ` +
      `${wave.deltas} deltas, server CPU ${(totalCpu(wave.cpu) / 1000).toFixed(0)} ms` +
      (wave.failed > 0 ? `, ${wave.failed} failed (${wave.errors.join('; ')})` : ''),
  );
}
