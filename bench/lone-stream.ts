/**
 * One run alone at a model's pace: what each token costs when nothing shares its work. Every token is then an
 * insert and a commit of its own, and the process sleeps between tokens, so each token also pays for waking
 * it up: server CPU, PostgreSQL CPU and the server's wake-ups, per token.
 *
 *   npx tsx bench/lone-stream.ts [--store pglite|postgres] [--quick]
 *
 * An Outrun server in a child process (the harness's own sampling off: `BENCH_SERVER_SAMPLING=off`), one
 * 200-token run first (warm-up), then one run of 2,000 tokens (500 with `--quick`) at 50 tokens/s read over
 * SSE from its start. Wake-ups are the server's voluntary context switches, every thread's.
 */
import { BenchApi } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { voluntarySwitches } from './support/host-cpu.ts';
import { BENCH_ADMIN_KEY, launchServer } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
import { createBenchStore, postgresBackendCpuMicros } from './support/store.ts';
import { printTable } from './support/table.ts';

const args = parseBenchArgs();
const tokens = args.quick ? 500 : 2_000;
const delayMs = 20;

const store = await createBenchStore(args.store);
printHeader('lone-stream', {
  store: store.description,
  run: `${tokens} tokens at ${1000 / delayMs} tokens/s, alone, after a 200-token warm-up run`,
});
const databaseUrl = store.kind === 'postgres' ? store.env.DATABASE_URL : undefined;
let result: { seconds: number; serverMicros: number; databaseMicros: number | null; wakeUps: number | null };
try {
  const server = await launchServer({ mode: 'outrun', store, env: { BENCH_SERVER_SAMPLING: 'off' } });
  try {
    const api = new BenchApi(server.url);
    const stream = async (count: number) => {
      const chatId = await api.createChat();
      const script = { script: { steps: 1, tokens: count, delayMs, tool: false } };
      const read = await streamSse({
        url: `${server.url}/v1/chats/${chatId}/runs`,
        method: 'POST',
        headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ input: { text: JSON.stringify(script) } }),
      });
      if (!read.done) throw new Error('the run stream ended without [DONE]');
    };
    await stream(200);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const cpuBefore = (await server.stats()).cpuMicros;
    const databaseBefore = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
    const wakeUpsBefore = voluntarySwitches(server.pid);
    const started = performance.now();
    await stream(tokens);
    const seconds = (performance.now() - started) / 1000;
    const cpuAfter = (await server.stats()).cpuMicros;
    const databaseAfter = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
    const wakeUpsAfter = voluntarySwitches(server.pid);
    result = {
      seconds,
      serverMicros: cpuAfter - cpuBefore,
      databaseMicros:
        databaseBefore !== null && databaseAfter !== null ? databaseAfter - databaseBefore : null,
      wakeUps: wakeUpsBefore !== null && wakeUpsAfter !== null ? wakeUpsAfter - wakeUpsBefore : null,
    };
  } finally {
    await server.close();
  }
} finally {
  await store.cleanup();
}

const perToken = (value: number | null) => (value === null ? null : value / tokens);
printTable({
  title: `lone-stream — ${store.kind}, ${process.version}`,
  columns: ['tokens', 'seconds', 'server µs/token', 'PostgreSQL µs/token', 'server wake-ups/token'],
  rows: [
    [
      tokens,
      result.seconds,
      perToken(result.serverMicros),
      perToken(result.databaseMicros),
      perToken(result.wakeUps),
    ],
  ],
  digits: [0, 1, 0, 0, 2],
  notes: [
    'CPU time (user + system) of the server process and of the PostgreSQL backends serving it (/proc, 10 ms ticks) from the run’s start to its reader’s `[DONE]`, and the server’s voluntary context switches, each per token.',
  ],
});
