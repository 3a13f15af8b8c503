/**
 * The group commit's batches under cpu-per-token's paced scenario (100 runs of 100 tokens, 20 ms apart, all at
 * once) for a coalescing window of COALESCE ms: inserts and events from the server's
 * `outrun_event_append_batch_size` histogram, the server's CPU and PostgreSQL's per 1,000 tokens. Two rounds on
 * one server (the first warms it up).
 *
 *   DATABASE_URL=postgres://…/postgres COALESCE=2 npx tsx bench/passes/2026-12-05b-amd-epyc/coalesce-batches.ts
 */
import { BenchApi, forEachLimit } from '../../support/api.ts';
import { BENCH_ADMIN_KEY, launchServer } from '../../support/server-process.ts';
import { streamSse } from '../../support/sse-client.ts';
import { createBenchStore, postgresBackendCpuMicros } from '../../support/store.ts';

const RUNS = 100;
const TOKENS = 100;
const store = await createBenchStore('postgres');
const server = await launchServer({
  mode: 'outrun',
  store,
  env: { OUTRUN_EVENT_COALESCE_MS: process.env.COALESCE ?? '2' },
});
const batches = async () => {
  const lines = (await (await fetch(`${server.url}/metrics`)).text()).split('\n');
  const value = (name: string) => Number(lines.find((line) => line.startsWith(name))?.split(' ')[1]);
  return {
    events: value('outrun_event_append_batch_size_sum'),
    inserts: value('outrun_event_append_batch_size_count'),
  };
};
try {
  const api = new BenchApi(server.url);
  const body = JSON.stringify({
    input: { text: JSON.stringify({ script: { steps: 1, tokens: TOKENS, delayMs: 20, tool: false } }) },
  });
  for (const round of [1, 2]) {
    const chats = await api.createChats(RUNS);
    const before = { batches: await batches(), cpu: await server.stats() };
    const backends = (await postgresBackendCpuMicros(store.env.DATABASE_URL!)) ?? 0;
    await forEachLimit(
      chats.map((_, index) => index),
      RUNS,
      async (index) => {
        const result = await streamSse({
          url: `${server.url}/v1/chats/${chats[index]}/runs`,
          method: 'POST',
          headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
          body,
        });
        if (!result.done) throw new Error('a run did not finish');
      },
    );
    const after = { batches: await batches(), cpu: await server.stats() };
    const postgres = ((await postgresBackendCpuMicros(store.env.DATABASE_URL!)) ?? 0) - backends;
    const inserts = after.batches.inserts - before.batches.inserts;
    const events = after.batches.events - before.batches.events;
    const perThousand = (micros: number) => (micros / 1000 / (RUNS * TOKENS)) * 1000;
    console.log(
      `coalesce ${process.env.COALESCE ?? '2'} ms, round ${round}: ${inserts} inserts, ${events} events, ` +
        `${(events / inserts).toFixed(1)} per insert; server ${perThousand(after.cpu.cpuMicros - before.cpu.cpuMicros).toFixed(1)} ` +
        `ms per 1k tokens, PostgreSQL ${perThousand(postgres).toFixed(1)}`,
    );
  }
} finally {
  await server.close();
  await store.cleanup();
}
