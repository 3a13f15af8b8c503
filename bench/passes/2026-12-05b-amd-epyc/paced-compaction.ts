/**
 * What compacting a paced run costs: RUNS runs of 1,000 tokens DELAY ms apart (one event per run and insert,
 * so about one plain page per token), ten at a time, with compaction off; then `log.compactMany` in batches of
 * ten, the server's CPU (this process) and PostgreSQL's (the database's backends) counted around each batch.
 *
 *   DATABASE_URL=postgres://…/postgres RUNS=40 DELAY=4 npx tsx bench/passes/2026-12-05b-amd-epyc/paced-compaction.ts
 */
import { sql } from 'kysely';
import pino from 'pino';
import { createOutrun } from '../../../src/app.ts';
import { BenchApi, forEachLimit } from '../../support/api.ts';
import { BENCH_ADMIN_KEY } from '../../support/server-process.ts';
import { streamSse } from '../../support/sse-client.ts';
import { createBenchStore, postgresBackendCpuMicros } from '../../support/store.ts';

const RUNS = Number(process.env.RUNS ?? 40);
const DELAY = Number(process.env.DELAY ?? 4);
const BATCH = 10;

const store = await createBenchStore('postgres');
const database = await store.open();
const outrun = await createOutrun({
  database,
  config: {
    port: 0,
    host: '127.0.0.1',
    adminKey: BENCH_ADMIN_KEY,
    logLevel: 'silent',
    rateLimitPerMinute: 0,
  },
  logger: pino({ level: 'silent' }),
});
try {
  await outrun.start();
  await outrun.compactor.close();
  const api = new BenchApi(await outrun.listen());
  const chats = await api.createChats(RUNS);
  const body = JSON.stringify({
    input: { text: JSON.stringify({ script: { steps: 1, tokens: 1000, delayMs: DELAY, tool: false } }) },
  });
  await forEachLimit(
    chats.map((_, index) => index),
    10,
    async (index) => {
      const result = await streamSse({
        url: `${api.url}/v1/chats/${chats[index]}/runs`,
        method: 'POST',
        headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
        body,
      });
      if (!result.done) throw new Error('a run did not finish');
    },
  );
  const runs = await sql<{ id: string; pages: number }>`
    select r.id, (select count(*) from run_event_pages p where p.run_id = r.id)::int as pages
      from runs r order by r.id`.execute(database.db);
  const pages = runs.rows.reduce((sum, run) => sum + run.pages, 0) / runs.rows.length;
  const perBatch: string[] = [];
  let server = 0;
  let postgres = 0;
  for (let start = 0; start < runs.rows.length; start += BATCH) {
    const batch = runs.rows.slice(start, start + BATCH).map((run) => run.id);
    const cpu = process.cpuUsage();
    const backends = await postgresBackendCpuMicros(store.env.DATABASE_URL!);
    await outrun.log.compactMany(batch);
    const used = process.cpuUsage(cpu);
    postgres += ((await postgresBackendCpuMicros(store.env.DATABASE_URL!)) ?? 0) - (backends ?? 0);
    server += used.user + used.system;
    perBatch.push(((used.user + used.system) / 1000 / batch.length).toFixed(2));
  }
  console.log(
    `${runs.rows.length} runs, ${pages.toFixed(0)} plain pages each; batches of ${BATCH}: server ms/run ` +
      `${perBatch.join(' ')}; mean ${(server / 1000 / runs.rows.length).toFixed(2)}, PostgreSQL ` +
      `${(postgres / 1000 / runs.rows.length).toFixed(2)} ms/run`,
  );
} finally {
  await outrun.close({ graceMs: 0 });
  await database.close();
  await store.cleanup();
}
