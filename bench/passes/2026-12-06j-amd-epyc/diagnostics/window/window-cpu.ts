/**
 * Scratch diagnostic (2026-12-06 j): what the group commit's coalescing window (OUTRUN_EVENT_COALESCE_MS)
 * saves in CPU at modest paced concurrency, and how many events each insert holds, window on against off.
 *
 *   [SCENARIOS=5x1000,20x500,50x200] DATABASE_URL=… npx tsx bench/passes/2026-12-06j-amd-epyc/diagnostics/window/window-cpu.ts WINDOWS ROUNDS
 *
 * WINDOWS is a comma list of window values in ms (e.g. 2,0); every round launches one server per value, afresh,
 * the round's first value taking turns. Each server: a warm-up, then each scenario; per scenario the server's
 * CPU, its PostgreSQL backends' CPU and the inserts the group commit made (outrun_event_append_batch_size).
 */
import { BenchApi, forEachLimit } from '../../../../support/api.ts';
import { BENCH_ADMIN_KEY, launchServer, type ServerProcess } from '../../../../support/server-process.ts';
import { streamSse } from '../../../../support/sse-client.ts';
import { createBenchStore, postgresBackendCpuMicros } from '../../../../support/store.ts';

const windows = (process.argv[2] ?? '2,0').split(',');
const rounds = Number(process.argv[3] ?? '3');
// SCENARIOS=RUNSxTOKENS,… (paced at 20 ms a token) replaces the default three.
const scenarios = (process.env.SCENARIOS ?? '5x1000,20x500,50x200').split(',').map((spec) => {
  const [runs, tokens] = spec.split('x').map(Number) as [number, number];
  return { label: `${runs} paced x ${tokens}`, runs, tokens, delayMs: 20 };
});
const warmUps = [
  { label: 'warm-up lone', runs: 10, tokens: 1000, delayMs: 0, concurrency: 1 },
  { label: 'warm-up paced', runs: 20, tokens: 100, delayMs: 20 },
];

const store = await createBenchStore('postgres');
const databaseUrl = store.env.DATABASE_URL!;

async function appendStats(server: ServerProcess): Promise<{ inserts: number; events: number }> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    inserts: read('outrun_event_append_batch_size_count'),
    events: read('outrun_event_append_batch_size_sum'),
  };
}

async function scenario(
  server: ServerProcess,
  api: BenchApi,
  s: { runs: number; tokens: number; delayMs: number; concurrency?: number },
) {
  const chats = await api.createChats(s.runs);
  const text = JSON.stringify({ script: { steps: 1, tokens: s.tokens, delayMs: s.delayMs, tool: false } });
  const db0 = await postgresBackendCpuMicros(databaseUrl);
  const cpu0 = (await server.stats()).cpuMicros;
  const app0 = await appendStats(server);
  const started = performance.now();
  await forEachLimit(
    chats.map((_, i) => i),
    s.concurrency ?? s.runs,
    async (i) => {
      const result = await streamSse({
        url: `${server.url}/v1/chats/${chats[i]}/runs`,
        method: 'POST',
        headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ input: { text } }),
      });
      if (!result.done) throw new Error('stream ended without [DONE]');
    },
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu1 = (await server.stats()).cpuMicros;
  const app1 = await appendStats(server);
  const db1 = await postgresBackendCpuMicros(databaseUrl);
  const tokens = s.runs * s.tokens;
  return {
    serverPerK: (cpu1 - cpu0) / 1000 / (tokens / 1000),
    dbPerK: (db1! - db0!) / 1000 / (tokens / 1000),
    inserts: app1.inserts - app0.inserts,
    eventsPerInsert: (app1.events - app0.events) / (app1.inserts - app0.inserts),
    seconds,
  };
}

try {
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < windows.length; i++) {
      const window = windows[(i + round) % windows.length]!;
      // W or W/T: the window W ms, applied only while the last insert held fewer than T events (the scratch
      // patch's SCRATCH_COALESCE_BELOW; Infinity = always, as before it).
      const [ms, below = 'Infinity'] = window.split('/');
      const server = await launchServer({
        mode: 'outrun',
        store,
        env: { OUTRUN_EVENT_COALESCE_MS: ms!, SCRATCH_COALESCE_BELOW: below },
      });
      try {
        const api = new BenchApi(server.url);
        for (const warmUp of warmUps) await scenario(server, api, warmUp);
        for (const s of scenarios) {
          const r = await scenario(server, api, s);
          const steal = (await import('node:fs'))
            .readFileSync('/proc/stat', 'utf8')
            .split('\n')[0]!
            .split(/\s+/)[8];
          console.log(
            `round ${round + 1} window ${window} ms, ${s.label}: server ${r.serverPerK.toFixed(1)} + PG ${r.dbPerK.toFixed(1)} ms/1k tok, ` +
              `${r.inserts} inserts, ${r.eventsPerInsert.toFixed(2)} events/insert, ${r.seconds.toFixed(1)} s, steal ${steal}`,
          );
        }
      } finally {
        await server.close();
      }
    }
  }
} finally {
  await store.cleanup();
}
