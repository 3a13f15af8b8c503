/**
 * Time from the model emitting a chunk to a reader receiving it over real SSE on loopback, with 1, 10 and
 * 100 readers of one run.
 *
 *   npx tsx bench/delivery-latency.ts [--store pglite|postgres] [--quick]
 *
 * The server (Outrun on the chosen store) runs in a child process; the readers run in this process, each on
 * its own connection to `GET /v1/runs/:id/stream`. The run uses the clock model (bench/support/clock-model.ts):
 * each text delta carries the server's `performance.timeOrigin + performance.now()` at the moment the model
 * hands it to the AI SDK, and a reader subtracts it from its own clock at the moment the bytes arrive,
 * corrected by the clock offset between the two processes (measured over IPC, typically well under 0.1 ms).
 * Tokens start only once every reader is connected and caught up. The same measurement against the plain
 * `streamText` → SSE pipe (no persistence) gives the floor.
 */
import {
  deliveryLatency,
  CLOCK_MODEL_ID,
  clockScript,
  dueTimeOf,
  emitTimeOf,
} from './support/clock-model.ts';
import { BenchApi } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { launchServer, type ServerProcess } from './support/server-process.ts';
import { firstEventLatch, streamSse } from './support/sse-client.ts';
import { Sample, type Summary } from './support/stats.ts';
import { createBenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const args = parseBenchArgs();
const readerCounts = [1, 10, 100];
const tokens = args.quick ? 100 : 500;
const delayMs = 10;

const store = await createBenchStore(args.store);
printHeader('delivery-latency', {
  store: store.description,
  run: `${tokens} text deltas, one every ${delayMs} ms (clock model), readers in the benchmark process, server in a child process`,
});

const rows: Cell[][] = [];
let offsetNote = '';
try {
  const server = await launchServer({ mode: 'outrun', store });
  try {
    const api = new BenchApi(server.url);
    const offset = await server.clockOffset();
    offsetNote = `Server clock offset (measured, subtracted): ${offset.toFixed(3)} ms.`;
    await warmUp(server, api);
    for (const readers of readerCounts) {
      const result = await measureOutrun(server, api, readers, offset);
      rows.push([`Outrun (${args.store})`, readers, ...row(result)]);
      console.log(
        `${readers} reader(s): p50 ${result.latency.p50.toFixed(2)} ms, p99 ${result.latency.p99.toFixed(2)} ms`,
      );
    }
  } finally {
    await server.close();
  }

  const plain = await launchServer({ mode: 'plain' });
  try {
    const offset = await plain.clockOffset();
    rows.push(['plain pipe (floor)', 1, ...row(await measurePlain(plain, offset))]);
  } finally {
    await plain.close();
  }
} finally {
  await store.cleanup();
}

printTable({
  title: `delivery-latency — ${args.store}, ${process.version}`,
  columns: [
    'server',
    'readers',
    'deliveries',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'max ms',
    'emit lag p99 ms',
    'server CPU %',
  ],
  rows,
  digits: [0, 0, 0, 2, 2, 2, 2, 2, 0],
  notes: [
    offsetNote,
    'Latency: model emit → reader received. Emit lag: how late the model emitted a token against its schedule ' +
      '(the server event loop was busy).',
  ],
});

interface Measurement {
  latency: Summary;
  /** How late the model emitted each token against its schedule (server event-loop busy). */
  lag: Summary;
  cpuPercent: number;
}

function row(measurement: Measurement): Cell[] {
  const { latency, lag } = measurement;
  return [latency.count, latency.p50, latency.p90, latency.p99, latency.max, lag.p99, measurement.cpuPercent];
}

/** Records the delivery latency and the emit lag of `data`, if it is a clock delta. */
function record(data: string, receivedAt: number, offset: number, latencies: Sample, lags: Sample): void {
  const latency = deliveryLatency(data, receivedAt, offset);
  if (latency === null) return;
  latencies.add(latency);
  lags.add(emitTimeOf(data)! - dueTimeOf(data)!);
}

/** Warms the server up (JIT, connection pool, first-use paths) with a short unmeasured run. */
async function warmUp(server: ServerProcess, api: BenchApi): Promise<void> {
  const chatId = await api.createChat();
  const run = await api.startRun(chatId, clockScript({ tokens: 200, delayMs: 0 }), CLOCK_MODEL_ID);
  await streamSse({ url: `${server.url}/v1/runs/${run.id}/stream`, headers: api.authorization() });
}

/** One run with `readers` readers: the latency of every delivery and the server's CPU % meanwhile. */
async function measureOutrun(
  server: ServerProcess,
  api: BenchApi,
  readers: number,
  offset: number,
): Promise<Measurement> {
  const gate = `delivery-${readers}`;
  const chatId = await api.createChat();
  const run = await api.startRun(chatId, clockScript({ tokens, delayMs, gate }), CLOCK_MODEL_ID);
  const latencies = new Sample();
  const lags = new Sample();
  const latch = firstEventLatch(readers);
  const streams = Array.from({ length: readers }, () => {
    const caughtUp = latch.reader();
    return streamSse({
      url: `${server.url}/v1/runs/${run.id}/stream`,
      headers: api.authorization(),
      onEvent(_id, data, receivedAt) {
        caughtUp();
        record(data, receivedAt, offset, latencies, lags);
      },
    });
  });
  await latch.ready;
  await new Promise((resolve) => setTimeout(resolve, 200));
  const before = await server.stats({ reset: true });
  await server.profile('start');
  const started = performance.now();
  await server.openGate(gate);
  const results = await Promise.all(streams);
  const elapsed = performance.now() - started;
  const after = await server.stats();
  await server.profile('stop', `delivery-latency-${args.store}-${readers}`);
  for (const result of results) {
    if (!result.done) throw new Error(`a reader of run ${run.id} ended without [DONE]`);
  }
  if (latencies.length !== tokens * readers) {
    throw new Error(`expected ${tokens * readers} deliveries, got ${latencies.length}`);
  }
  return {
    latency: latencies.summary(),
    lag: lags.summary(),
    cpuPercent: ((after.cpuMicros - before.cpuMicros) / 1000 / elapsed) * 100,
  };
}

/** The plain pipe: one request streams the answer to its only reader. */
async function measurePlain(server: ServerProcess, offset: number): Promise<Measurement> {
  await streamSse({
    url: `${server.url}/chat`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: clockScript({ tokens: 200, delayMs: 0 }), model: CLOCK_MODEL_ID }),
  });
  const latencies = new Sample();
  const lags = new Sample();
  const before = await server.stats({ reset: true });
  const started = performance.now();
  const result = await streamSse({
    url: `${server.url}/chat`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: clockScript({ tokens, delayMs, gate: 'plain' }), model: CLOCK_MODEL_ID }),
    onOpen() {
      setTimeout(() => void server.openGate('plain'), 200);
    },
    onEvent(_id, data, receivedAt) {
      record(data, receivedAt, offset, latencies, lags);
    },
  });
  const elapsed = performance.now() - started;
  const after = await server.stats();
  if (!result.done || latencies.length !== tokens) throw new Error('the plain pipe stream was incomplete');
  return {
    latency: latencies.summary(),
    lag: lags.summary(),
    cpuPercent: ((after.cpuMicros - before.cpuMicros) / 1000 / elapsed) * 100,
  };
}
