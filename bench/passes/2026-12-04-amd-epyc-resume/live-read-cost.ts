/**
 * What a resume's read of a run IN PROGRESS costs PostgreSQL, apart from any server's event loop: one Outrun
 * server runs a paced run (the scripted model, 5 ms a token, as `resume-latency.ts`'s live table) with one
 * reader; this process, on a connection of its own, times the resume's read (`readEvents`' statement, 50 events
 * behind the live edge, prepared) and the ownership read, then the same reads of the run once finished, and
 * EXPLAIN (ANALYZE, BUFFERS) of one live read.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npx tsx bench/passes/2026-12-04-amd-epyc-resume/live-read-cost.ts
 */
import pg from 'pg';
import { BenchApi } from '../../support/api.ts';
import { launchServer } from '../../support/server-process.ts';
import { streamSse } from '../../support/sse-client.ts';
import { Sample } from '../../support/stats.ts';
import { createBenchStore } from '../../support/store.ts';

const READ = `(select seq, chunk::text as data, null::integer as last_seq, null::bytea as events
   from run_events where run_id = $1 and seq > $2 and seq <= $3 order by seq limit $4)
 union all
 (select first_seq, null, last_seq, events from run_event_pages where run_id = $1 and last_seq > $2 and first_seq <= $3)`;

const store = await createBenchStore('postgres');
const server = await launchServer({ mode: 'outrun', store, env: store.env });
const client = new pg.Client({ connectionString: store.env.DATABASE_URL });
await client.connect();
try {
  const api = new BenchApi(server.url);
  const run = await api.startRun(
    await api.createChat(),
    JSON.stringify({ script: { steps: 1, tokens: 4000, delayMs: 5, tool: false } }),
  );
  let last = 0;
  const reader = streamSse({
    url: `${server.url}/v1/runs/${run.id}/stream`,
    headers: api.authorization(),
    onEvent: (id) => void (last = id),
  });
  while (last < 300) await new Promise((resolve) => setTimeout(resolve, 20));

  const time = async (sample: Sample, name: string, after: number) => {
    const started = performance.now();
    const result = await client.query({ name, text: READ, values: [run.id, after, after + 100, 100] });
    sample.add(performance.now() - started);
    return result.rowCount ?? 0;
  };
  const live = new Sample();
  let rows = 0;
  for (let i = 0; i < 200; i++) {
    rows += await time(live, 'read', Math.max(0, last - 50));
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const plan = await client.query(
    `explain (analyze, buffers) ${READ.replaceAll('$1', `'${run.id}'`)
      .replaceAll('$2', String(last - 50))
      .replaceAll('$3', String(last + 50))
      .replace('$4', '100')}`,
  );
  await fetch(`${server.url}/v1/runs/${run.id}/stop`, { method: 'POST', headers: api.authorization() });
  await reader;
  const finished = new Sample();
  for (let i = 0; i < 200; i++) await time(finished, 'read', 250);
  const summary = (sample: Sample) => {
    const s = sample.summary();
    return `p50 ${s.p50.toFixed(3)} ms, p99 ${s.p99.toFixed(3)} ms`;
  };
  console.log(`live run, 50 behind its edge (${(rows / 200).toFixed(0)} rows a read): ${summary(live)}`);
  console.log(`the same run once stopped (rows or pages, 100 events): ${summary(finished)}`);
  console.log(plan.rows.map((row) => row['QUERY PLAN']).join('\n'));
} finally {
  await client.end();
  await server.close();
  await store.cleanup();
}
