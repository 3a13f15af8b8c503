// How an Outrun server's CPU per 1k tokens moves over its first 100 streams of 1,000 tokens (one at a time, in
// batches of 20), twice on one database with a new server: whether it warms up, and whether a fuller database
// costs more. Run from the repository root: npx tsx bench/passes/2026-12-05e-amd-epyc/warm-up.ts
import { BenchApi, forEachLimit } from '../../support/api.ts';
import { BENCH_ADMIN_KEY, launchServer } from '../../support/server-process.ts';
import { streamSse } from '../../support/sse-client.ts';
import { createBenchStore, postgresBackendCpuMicros } from '../../support/store.ts';
const store = await createBenchStore('postgres');
const text = JSON.stringify({ script: { steps: 1, tokens: 1000, delayMs: 0, tool: false } });
try {
  for (let server = 0; server < 2; server++) {
    const outrun = await launchServer({ mode: 'outrun', store });
    const api = new BenchApi(outrun.url);
    for (let batch = 0; batch < 5; batch++) {
      const chats = await api.createChats(20);
      const db0 = await postgresBackendCpuMicros(store.env.DATABASE_URL!);
      const before = await outrun.stats();
      await forEachLimit(chats, 1, async (chat) => {
        const r = await streamSse({
          url: `${outrun.url}/v1/chats/${chat}/runs`,
          method: 'POST',
          headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ input: { text } }),
        });
        if (!r.done) throw new Error('no done');
      });
      const after = await outrun.stats();
      const db1 = await postgresBackendCpuMicros(store.env.DATABASE_URL!);
      console.log(
        `server ${server} batch ${batch}: ${((after.cpuMicros - before.cpuMicros) / 1000 / 20).toFixed(1)} ms per 1k tokens + PG ${((db1! - db0!) / 1000 / 20).toFixed(1)}`,
      );
    }
    await outrun.close();
  }
} finally {
  await store.cleanup();
}
