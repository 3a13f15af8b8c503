/**
 * Many paced runs at once: 100 and 1,000 concurrent runs (one chat each, 100 text deltas 20 ms apart, one
 * SSE reader each), on PGlite or PostgreSQL.
 *
 *   npx tsx bench/concurrent-runs.ts [--store pglite|postgres] [--quick] [--runs 100,1000] [--floor]
 *
 * The server runs in a child process; the readers in this process. Every run is started and read in one
 * request (`POST /v1/chats/:id/runs` with `Accept: text/event-stream`, 32 starts at a time). The clock model
 * (bench/support/clock-model.ts) holds every run's first token until every run is claimed and streaming (its
 * reader has seen `text-start`); then each run ticks every 20 ms from its own random phase within the first
 * 20 ms, as independent users' runs would. Each delta carries its emit time and its due time, so a reader
 * measures delivery latency (clock offset between the processes measured and subtracted) and the server's
 * lag in picking tokens up. Reported over the streaming window (gate opened → last `[DONE]`): latency,
 * tokens/s and events/s through the server, server CPU (% of one core), the server's peak RSS and event-loop
 * delay, and the client's CPU (the readers share the machine's 2 cores with the server). With `--floor`, the
 * same waves also run against the plain `streamText` → SSE pipe (no auth, no persistence) for comparison.
 */
import { parseArgs } from 'node:util';
import { BenchApi, forEachLimit } from './support/api.ts';
import {
  CLOCK_MODEL_ID,
  clockScript,
  deliveryLatency,
  dueTimeOf,
  emitTimeOf,
} from './support/clock-model.ts';
import { printHeader } from './support/environment.ts';
import { BENCH_ADMIN_KEY, launchServer, type ServerProcess } from './support/server-process.ts';
import { streamSse, type SseStreamResult } from './support/sse-client.ts';
import { Sample } from './support/stats.ts';
import { createBenchStore, postgresBackendCpuMicros, type StoreKind } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'pglite' },
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    tokens: { type: 'string', default: '100' },
    floor: { type: 'boolean', default: false },
  },
});
const storeKind = values.store as StoreKind;
if (storeKind !== 'pglite' && storeKind !== 'postgres') throw new Error('--store must be pglite or postgres');
const runCounts = (values.runs ?? (values.quick ? '100' : '100,1000')).split(',').map(Number);
const tokens = Number(values.tokens);
const delayMs = 20;

const store = await createBenchStore(storeKind);
printHeader('concurrent-runs', {
  store: store.description,
  runs: `${runCounts.join(' and ')} concurrent runs, ${tokens} text deltas each, one every ${delayMs} ms, one SSE reader per run`,
});

const rows: Cell[][] = [];
let offsetNote = '';
try {
  // Runs wait at the gate until the last of them is streaming (over 10 s for 1,000 runs); with the default 15 s
  // keep-alive, every idle reader would re-read the log at once just as the window opens (see docs/benchmarks.md).
  const server = await launchServer({ mode: 'outrun', store, env: { OUTRUN_KEEP_ALIVE_MS: '60000' } });
  try {
    const api = new BenchApi(server.url);
    const offset = await server.clockOffset();
    offsetNote = `Server clock offset (measured, subtracted): ${offset.toFixed(3)} ms.`;
    await wave({ server, api, offset, runs: 20, gate: 'warm-up' });
    for (const runs of runCounts) {
      rows.push([
        `Outrun (${storeKind})`,
        ...(await wave({ server, api, offset, runs, gate: `wave-${runs}` })),
      ]);
    }
  } finally {
    await server.close();
  }
  if (values.floor) {
    const plain = await launchServer({ mode: 'plain' });
    try {
      const offset = await plain.clockOffset();
      await wave({ server: plain, offset, runs: 20, gate: 'plain-warm-up' });
      for (const runs of runCounts) {
        rows.push([
          'plain pipe (floor)',
          ...(await wave({ server: plain, offset, runs, gate: `plain-${runs}` })),
        ]);
      }
    } finally {
      await plain.close();
    }
  }
} finally {
  await store.cleanup();
}

printTable({
  title: `concurrent-runs — ${storeKind}, ${process.version}, ${tokens} tokens/run at ${delayMs} ms`,
  columns: [
    'server',
    'runs',
    'window s',
    'delivery p50 ms',
    'delivery p99 ms',
    'delivery max ms',
    'emit lag p50 ms',
    'emit lag p99 ms',
    'tokens/s',
    'events/s',
    'server CPU %',
    'PostgreSQL CPU %',
    'peak RSS MiB',
    'loop busy %',
    'loop delay p99 ms',
    'client CPU %',
    'start s',
  ],
  rows,
  digits: [0, 0, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1],
  notes: [
    offsetNote,
    `Delivery: model emit → reader received. Emit lag: when the token was due in the ${delayMs} ms schedule → when ` +
      'the model could emit it (a busy event loop picks tokens up late; delivery latency cannot show that). ' +
      `An unsaturated server finishes the window in about ${((tokens * delayMs) / 1000).toFixed(1)} s at ` +
      `${1000 / delayMs} tokens/s per run. CPU % is of one core (the machine has 2). \`start s\`: time to start ` +
      'all runs until each is streaming (claimed, model called), before the window. `PostgreSQL CPU %`: the database backends serving ' +
      'Outrun (PostgreSQL store only).',
  ],
});

/**
 * One wave of `runs` concurrent runs on `server` (Outrun when `api` is given, else the plain pipe), gated on
 * `gate`; returns its table cells.
 */
async function wave(options: {
  server: ServerProcess;
  api?: BenchApi;
  offset: number;
  runs: number;
  gate: string;
}): Promise<Cell[]> {
  const { server, api, offset, runs, gate } = options;
  const chats = api ? await api.createChats(runs) : Array.from({ length: runs }, () => '');
  const latencies = new Sample();
  const lags = new Sample();
  let eventCount = 0;
  let atGate = 0;
  let allAtGate!: () => void;
  const ready = new Promise<void>((resolve) => (allAtGate = resolve));
  const streams: Promise<SseStreamResult>[] = [];
  const startBegan = performance.now();
  await forEachLimit(chats, 32, async (chatId) => {
    let first = true;
    let onFirst!: () => void;
    const firstEvent = new Promise<void>((resolve) => (onFirst = resolve));
    const text = clockScript({ tokens, delayMs, phaseMs: Math.random() * delayMs, gate });
    const stream = streamSse({
      url: api ? `${server.url}/v1/chats/${chatId}/runs` : `${server.url}/chat`,
      method: 'POST',
      headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify(
        api ? { input: { text }, model: CLOCK_MODEL_ID } : { text, model: CLOCK_MODEL_ID },
      ),
      timeoutMs: 300_000,
      onEvent(_id, data, receivedAt) {
        eventCount += 1;
        if (first) {
          first = false;
          onFirst();
        }
        // The clock model emits text-start, then waits at the gate: the run is claimed and streaming.
        if (data.includes('"type":"text-start"') && ++atGate === runs) allAtGate();
        const latency = deliveryLatency(data, receivedAt, offset);
        if (latency !== null) {
          latencies.add(latency);
          lags.add(emitTimeOf(data)! - dueTimeOf(data)!);
        }
      },
    });
    stream.catch(() => onFirst());
    streams.push(stream);
    await firstEvent;
  });
  await ready;
  const startSeconds = (performance.now() - startBegan) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 500));

  const databaseUrl = api ? store.env.DATABASE_URL : undefined;
  const eventsBefore = eventCount;
  const databaseBefore = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
  const before = await server.stats({ reset: true });
  const clientBefore = process.cpuUsage();
  await server.profile('start');
  const started = performance.now();
  await server.openGate(gate);
  const results = await Promise.all(streams);
  const elapsed = performance.now() - started;
  const client = process.cpuUsage(clientBefore);
  const after = await server.stats();
  await server.profile('stop', `concurrent-runs-${storeKind}-${gate}`);
  const databaseAfter = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;

  const incomplete = results.filter((result) => !result.done).length;
  if (incomplete > 0) throw new Error(`${incomplete} of ${runs} streams ended without [DONE]`);
  if (latencies.length !== runs * tokens)
    throw new Error(`expected ${runs * tokens} deliveries, got ${latencies.length}`);
  const summary = latencies.summary();
  const percentOfCore = (micros: number) => (micros / 1000 / elapsed) * 100;
  console.log(
    `${gate}: ${runs} runs, p50 ${summary.p50.toFixed(1)} ms, p99 ${summary.p99.toFixed(1)} ms, ` +
      `server CPU ${percentOfCore(after.cpuMicros - before.cpuMicros).toFixed(0)} %`,
  );
  const lag = lags.summary();
  return [
    runs,
    elapsed / 1000,
    summary.p50,
    summary.p99,
    summary.max,
    lag.p50,
    lag.p99,
    (runs * tokens) / (elapsed / 1000),
    (eventCount - eventsBefore) / (elapsed / 1000),
    percentOfCore(after.cpuMicros - before.cpuMicros),
    databaseBefore === null || databaseAfter === null ? null : percentOfCore(databaseAfter - databaseBefore),
    after.peakRss / 2 ** 20,
    after.loopUtilization * 100,
    after.loopDelayP99Ms,
    percentOfCore(client.user + client.system),
    startSeconds,
  ];
}
