/**
 * Fan-out cost: the server CPU one more reader of a run adds per token. One paced run (clock model) is read
 * by 1 reader, then another by 100 readers; the difference in server CPU over the streaming window, divided by
 * 99 × tokens, is the extra CPU per reader-token. The same measurement against a bare `node:http` server that
 * builds each SSE frame once and writes it to every reader (bench/support/bare-fan-out-server.ts) gives the floor.
 *
 *   npx tsx bench/fan-out.ts [--store pglite|postgres] [--quick]
 *
 * Servers run in a child process; readers in this process, each on its own connection. Tokens start only
 * once every reader is connected and caught up (the clock model's gate). Each reader count is measured
 * `repeats` times, alternating, and the median CPU is used.
 */
import { BenchApi } from './support/api.ts';
import { CLOCK_MODEL_ID, clockScript } from './support/clock-model.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { launchServer, type ServerProcess } from './support/server-process.ts';
import { firstEventLatch, streamSse } from './support/sse-client.ts';
import { median } from './support/stats.ts';
import { createBenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const args = parseBenchArgs();
const FEW = 1;
const MANY = 100;
const tokens = args.quick ? 200 : 500;
const delayMs = 10;
const repeats = args.quick ? 3 : 5;

const store = await createBenchStore(args.store);
printHeader('fan-out', {
  store: store.description,
  run: `${tokens} text deltas, one every ${delayMs} ms (clock model); ${FEW} vs ${MANY} readers, ${repeats} times each, median`,
});

interface FanOutResult {
  few: number;
  many: number;
  /** Extra server CPU per reader and token, in µs. */
  perReaderToken: number;
}

let outrun: FanOutResult;
let floor: FanOutResult;
try {
  const server = await launchServer({ mode: 'outrun', store });
  try {
    const api = new BenchApi(server.url);
    let round = 0;
    const measureOutrun = async (readers: number) => {
      const gate = `fan-out-${readers}-${round++}`;
      const run = await api.startRun(
        await api.createChat(),
        clockScript({ tokens, delayMs, gate }),
        CLOCK_MODEL_ID,
      );
      return measure(server, readers, `${server.url}/v1/runs/${run.id}/stream`, api.authorization(), () =>
        server.openGate(gate).then(() => undefined),
      );
    };
    await measureOutrun(10);
    outrun = await compare(measureOutrun, 'Outrun');
  } finally {
    await server.close();
  }

  const bare = await launchServer({ mode: 'bare-fan-out' });
  try {
    let round = 0;
    const measureBare = async (readers: number) => {
      const name = `fan-out-${round++}`;
      return measure(bare, readers, `${bare.url}/fan-out/${name}`, {}, async () => {
        const response = await fetch(
          `${bare.url}/fan-out/${name}/start?tokens=${tokens}&delayMs=${delayMs}`,
          {
            method: 'POST',
          },
        );
        await response.arrayBuffer();
      });
    };
    await measureBare(10);
    floor = await compare(measureBare, 'bare SSE');
  } finally {
    await bare.close();
  }
} finally {
  await store.cleanup();
}

const rows: Cell[][] = [
  [
    `Outrun (${args.store})`,
    outrun.few,
    outrun.many,
    outrun.perReaderToken,
    outrun.perReaderToken / floor.perReaderToken,
  ],
  ['bare node:http SSE (floor)', floor.few, floor.many, floor.perReaderToken, 1],
];
printTable({
  title: `fan-out — ${args.store}, ${process.version}, ${tokens} tokens, ${FEW} vs ${MANY} readers`,
  columns: [
    'server',
    `CPU ms, ${FEW} reader`,
    `CPU ms, ${MANY} readers`,
    'extra µs per reader-token',
    'ratio to floor',
  ],
  rows,
  digits: [0, 1, 1, 2, 2],
  notes: [
    'Server CPU (user + system) from the gate opening to the last `[DONE]`, median of the repeats. Extra per ' +
      `reader-token = (CPU with ${MANY} readers − CPU with ${FEW}) ÷ (${MANY - FEW} × ${tokens}). Target: ratio ≤ 2.`,
  ],
});

async function compare(
  measureOnce: (readers: number) => Promise<number>,
  label: string,
): Promise<FanOutResult> {
  const few: number[] = [];
  const many: number[] = [];
  for (let index = 0; index < repeats; index++) {
    few.push(await measureOnce(FEW));
    many.push(await measureOnce(MANY));
  }
  const fewMs = median(few);
  const manyMs = median(many);
  const perReaderToken = ((manyMs - fewMs) * 1000) / ((MANY - FEW) * tokens);
  console.log(
    `${label}: ${fewMs.toFixed(1)} ms CPU with ${FEW} reader, ${manyMs.toFixed(1)} ms with ${MANY}: ` +
      `${perReaderToken.toFixed(2)} µs per extra reader-token (${many.map((value) => value.toFixed(0)).join(', ')})`,
  );
  return { few: fewMs, many: manyMs, perReaderToken };
}

/** Connects `readers` readers to `url`, waits until each has an event, starts the tokens; server CPU ms meanwhile. */
async function measure(
  server: ServerProcess,
  readers: number,
  url: string,
  headers: Record<string, string>,
  start: () => Promise<void>,
): Promise<number> {
  const latch = firstEventLatch(readers);
  const streams = Array.from({ length: readers }, () => streamSse({ url, headers, onEvent: latch.reader() }));
  await latch.ready;
  await new Promise((resolve) => setTimeout(resolve, 200));
  const before = await server.stats();
  await server.profile('start');
  await start();
  const results = await Promise.all(streams);
  const after = await server.stats();
  await server.profile('stop', `fan-out-${args.store}-${readers}-${Date.now()}`);
  for (const result of results) {
    if (!result.done) throw new Error(`a reader of ${url} ended without [DONE]`);
    if (result.lastId < tokens) throw new Error(`a reader of ${url} got only up to ${result.lastId}`);
  }
  return (after.cpuMicros - before.cpuMicros) / 1000;
}
