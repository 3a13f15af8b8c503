/**
 * Scratch diagnostic (2026-12-07 h, from 2026-12-06 j's per-run-statements.ts): which statements make up the
 * PostgreSQL time of RUNS paced runs (TOKENS tokens each, default 100, 20 ms apart, all at once), Outrun against
 * the durable floor. Needs a PostgreSQL with pg_stat_statements loaded (track = all, track_planning = on) as
 * DATABASE_URL's server; the extension created in its `postgres` database.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5440/postgres npx tsx …/paced-statements.ts [RUNS]
 *
 * Per target: a server launched afresh, its chats created, two waves of 100 paced runs to warm up, the
 * statistics reset, then RUNS paced runs at once (each started and read in one request), 1.5 s for compaction;
 * then every statement's calls, execution and planning time per run.
 */
import pg from 'pg';
import { BenchApi, forEachLimit } from '../../../../support/api.ts';
import { BENCH_ADMIN_KEY, launchServer, type ServerProcess } from '../../../../support/server-process.ts';
import { streamSse } from '../../../../support/sse-client.ts';
import { createBenchStore, POSTGRES_ADMIN_URL } from '../../../../support/store.ts';

const runs = Number(process.argv[2] ?? '300');
const TOKENS = Number(process.env.TOKENS ?? 100);
const text = JSON.stringify({ script: { steps: 1, tokens: TOKENS, delayMs: 20, tool: false } });

async function admin<T extends pg.QueryResultRow>(query: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await client.connect();
  try {
    return (await client.query<T>(query)).rows;
  } finally {
    await client.end();
  }
}

async function pacedRuns(
  server: ServerProcess,
  target: 'outrun' | 'durable',
  chats: string[],
  count: number,
) {
  await forEachLimit(
    Array.from({ length: count }, (_, i) => i),
    count,
    async (i) => {
      const result = await streamSse(
        target === 'outrun'
          ? {
              url: `${server.url}/v1/chats/${chats[i]}/runs`,
              method: 'POST',
              headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
              body: JSON.stringify({ input: { text } }),
            }
          : {
              url: `${server.url}/chat`,
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ text }),
            },
      );
      if (!result.done) throw new Error('stream ended without [DONE]');
    },
  );
}

for (const target of ['outrun', 'durable'] as const) {
  const store = await createBenchStore('postgres');
  const database = store.env.DATABASE_URL!.split('/').pop()!;
  try {
    const server = await launchServer({ mode: target, store });
    try {
      const api = new BenchApi(server.url);
      const chats = target === 'outrun' ? await api.createChats(100 + runs) : [];
      await pacedRuns(server, target, chats, 100);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await pacedRuns(server, target, chats.slice(0, 100), 100);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      // The chats were created before: only the runs' statements are counted.
      await admin('select pg_stat_statements_reset()');
      await pacedRuns(server, target, chats.slice(100), runs);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const rows = await admin<{
        calls: string;
        exec: number;
        plan: number;
        query: string;
      }>(`
        select s.calls, s.total_exec_time as exec, s.total_plan_time as plan, s.query
        from pg_stat_statements s join pg_database d on d.oid = s.dbid
        where d.datname = '${database}'
        order by s.total_exec_time + s.total_plan_time desc`);
      const total = rows.reduce((sum, row) => sum + row.exec + row.plan, 0);
      console.log(
        `\n## ${target}: ${runs} paced runs, ${(total / runs).toFixed(3)} ms of statement time per run (exec + plan)`,
      );
      console.log('| calls/run | exec ms/run | plan ms/run | statement |');
      console.log('| --: | --: | --: | --- |');
      for (const row of rows) {
        const perRun = (x: number) => (x / runs).toFixed(3);
        if ((row.exec + row.plan) / runs < 0.002) continue;
        console.log(
          `| ${(Number(row.calls) / runs).toFixed(2)} | ${perRun(row.exec)} | ${perRun(row.plan)} | ${row.query.replace(/\s+/g, ' ').slice(0, 160).replace(/\|/g, '\\|')} |`,
        );
      }
    } finally {
      await server.close();
    }
  } finally {
    await store.cleanup();
  }
}
