/**
 * What one run costs the database, counted rather than timed: the statements (round trips) a one-token run
 * makes, start to compaction, read from `pg_stat_statements`. Counts are deterministic, so this is the
 * figure to compare across machines and commits.
 *
 *   npx tsx bench/round-trips.ts [--runs 200] [--tokens 1] [--delay-ms 0] [--concurrency 1] [--idle-s 1.5]
 *     [--queued] [--quick]
 *
 * With `--concurrency N`, N runs go at once (a paced wave: `--runs 100 --tokens 100 --delay-ms 20
 * --concurrency 100`, the scene of cpu-per-token's "100 paced streams"), so the group commit's batches are
 * shared between runs as under load. The warm-up before the counted runs is as wide (at least 5 runs), so
 * it opens the connections the counted runs use; `--idle-s` is how long the server then sits idle (the
 * pool closes connections idle for longer than `POOL_IDLE_TIMEOUT_MS`, and a new one prepares and plans
 * every statement afresh).
 *
 * With `--queued`, each run is started with `multitask: "enqueue"` while another run of its chat is active
 * (three tokens 100 ms apart), so it goes the queued way: created `queued`, promoted by that run's ending,
 * claimed through the queue. The counts are then per pair of runs, the queued one and the one before it.
 *
 * It starts a PostgreSQL server of its own (the newest under /usr/lib/postgresql, on a free loopback port,
 * `pg_stat_statements` preloaded, deleted afterwards), runs an Outrun server on it, and starts one-token runs
 * one after another (`--concurrency` at once), each read over SSE until `[DONE]`, then waits 1.5 s so that
 * their compaction is in.
 * Only top-level statements count (`pg_stat_statements.track = top`): the foreign-key checks PostgreSQL
 * runs inside a statement are not round trips.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startOwnPostgres } from '../test/support/own-postgres.ts';
import { BenchApi, forEachLimit } from './support/api.ts';
import { printHeader } from './support/environment.ts';
import { BENCH_ADMIN_KEY, launchServer } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
import { printTable } from './support/table.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string' },
    tokens: { type: 'string', default: '1' },
    'delay-ms': { type: 'string', default: '0' },
    concurrency: { type: 'string', default: '1' },
    'idle-s': { type: 'string', default: '1.5' },
    queued: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    // Accepted so `bench/all.ts --store …` can run every benchmark alike; this one brings its own server.
    store: { type: 'string' },
  },
});
const runs = Number(values.runs ?? (values.quick ? 50 : 200));
const tokens = Number(values.tokens);
const delayMs = Number(values['delay-ms']);
if (!Number.isInteger(runs) || runs <= 0) throw new Error('--runs: a positive integer');
if (!Number.isInteger(tokens) || tokens <= 0) throw new Error('--tokens: a positive integer');
const concurrency = Number(values.concurrency);
if (!(delayMs >= 0)) throw new Error('--delay-ms: 0 or more');
if (!Number.isInteger(concurrency) || concurrency <= 0) throw new Error('--concurrency: a positive integer');
const idleMs = Number(values['idle-s']) * 1000;
if (!(idleMs >= 0)) throw new Error('--idle-s: 0 or more');

const own = await startOwnPostgres({
  settings: ['shared_preload_libraries=pg_stat_statements', 'pg_stat_statements.track_planning=on'],
});
const admin = new pg.Client({ connectionString: own.url });
try {
  await admin.connect();
  await admin.query('create extension pg_stat_statements');
  // The bench store helpers create their database on the server DATABASE_URL names: this one.
  process.env.DATABASE_URL = own.url;
  const { createBenchStore, postgresBackendCpuMicros } = await import('./support/store.ts');
  const store = await createBenchStore('postgres');
  printHeader('round-trips', {
    store: `${store.description} (a server of its own)`,
    runs,
    tokens,
    'ms between tokens': delayMs,
    'runs at once': concurrency,
    'idle between warm-up and count (s)': idleMs / 1000,
    queued: values.queued ? 'yes: each run queued behind a 300 ms one (counts per pair)' : 'no',
  });
  const server = await launchServer({ mode: 'outrun', store });
  try {
    const api = new BenchApi(server.url);
    const text = JSON.stringify({ script: { steps: 1, tokens, delayMs, tool: false } });
    const headers = { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' };
    const blocker = JSON.stringify({ script: { steps: 1, tokens: 3, delayMs: 100, tool: false } });
    const startAll = (chats: string[]) =>
      forEachLimit(chats, concurrency, async (chatId) => {
        const url = `${server.url}/v1/chats/${chatId}/runs`;
        if (!values.queued) {
          const result = await streamSse({
            url,
            method: 'POST',
            headers,
            body: JSON.stringify({ input: { text } }),
          });
          if (!result.done) throw new Error('a run ended without [DONE]');
          return;
        }
        // The active run, then this one queued behind it; read until the queued one has ended.
        let queued: Promise<string> | null = null;
        const active = await streamSse({
          url,
          method: 'POST',
          headers,
          body: JSON.stringify({ input: { text: blocker } }),
          onEvent: () => {
            queued ??= fetch(url, {
              method: 'POST',
              headers: { ...headers, accept: 'application/json' },
              body: JSON.stringify({ input: { text }, multitask: 'enqueue' }),
            }).then(async (response) => {
              const body = (await response.json()) as { run: { id: string; status: string } };
              if (body.run?.status !== 'queued')
                throw new Error(`expected a queued run: ${JSON.stringify(body)}`);
              return body.run.id;
            });
          },
        });
        if (!active.done || !queued) throw new Error('the active run ended without [DONE]');
        const result = await streamSse({ url: `${server.url}/v1/runs/${await queued}/stream`, headers });
        if (!result.done) throw new Error('the queued run ended without [DONE]');
      });
    await startAll(await api.createChats(Math.max(5, concurrency)));
    await new Promise((resolve) => setTimeout(resolve, idleMs));
    // Counted from here: the runs alone (their chats exist already).
    const chats = await api.createChats(runs);
    await admin.query('select pg_stat_statements_reset()');
    const cpuBefore = await postgresBackendCpuMicros(store.env.DATABASE_URL!);
    await startAll(chats);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const cpuAfter = await postgresBackendCpuMicros(store.env.DATABASE_URL!);
    const database = new URL(store.env.DATABASE_URL!).pathname.slice(1);
    const { rows } = await admin.query<{
      calls: string;
      plans: string;
      plan: number;
      exec: number;
      query: string;
    }>(
      `select calls, plans, total_plan_time as plan, total_exec_time as exec,
              regexp_replace(query, '\\s+', ' ', 'g') as query
       from pg_stat_statements s join pg_database d on d.oid = s.dbid
       where d.datname = $1 order by calls desc, query`,
      [database],
    );
    const perRun = (value: number) => value / runs;
    // One line per statement shape: lists of parameters (`in ($1, $2)`, `values (…), (…)`) of any length as one.
    const shapes = new Map<string, { texts: number; calls: number; plans: number; time: number }>();
    for (const row of rows) {
      const shape = row.query.replace(/\(\$\d+(, \$\d+)*\)/g, '(…)').replace(/\(…\)(, \(…\))+/g, '(…), …');
      const entry = shapes.get(shape) ?? { texts: 0, calls: 0, plans: 0, time: 0 };
      entry.texts += 1;
      entry.calls += Number(row.calls);
      entry.plans += Number(row.plans);
      entry.time += row.plan + row.exec;
      shapes.set(shape, entry);
    }
    const total = rows.reduce((sum, row) => sum + Number(row.calls), 0);
    const commits = rows
      .filter((row) => /^commit$/i.test(row.query.trim()))
      .reduce((sum, row) => sum + Number(row.calls), 0);
    const writes = rows
      .filter((row) => /^(with|insert|update|delete)\b/i.test(row.query.trim()))
      .filter((row) => !/^with\b/i.test(row.query.trim()) || /\b(insert|update|delete)\b/i.test(row.query));
    printTable({
      title: `round-trips — statements per run of ${tokens} token${tokens === 1 ? '' : 's'}, ${process.version}`,
      columns: ['statement', 'texts', 'per run', 'plannings per run', 'plan + exec µs per run'],
      rows: [...shapes]
        .sort((a, b) => b[1].calls - a[1].calls)
        .map(([shape, entry]) => [
          shape.length > 110 ? `${shape.slice(0, 107)}…` : shape,
          entry.texts,
          perRun(entry.calls),
          perRun(entry.plans),
          perRun(entry.time * 1000),
        ]),
      digits: [0, 0, 2, 2, 0],
      notes: [
        'Texts: the statement texts PostgreSQL saw of that shape; a list of parameters makes one per length, ' +
          'each prepared on every connection that runs it.',
      ],
    });
    printTable({
      title: `round-trips — totals per run of ${tokens} token${tokens === 1 ? '' : 's'}`,
      columns: [
        'round trips',
        'explicit commits',
        'writing statements',
        'plan + exec ms',
        'of it planning ms',
        'plannings',
        'PostgreSQL CPU ms',
      ],
      rows: [
        [
          perRun(total),
          perRun(commits),
          perRun(writes.reduce((sum, row) => sum + Number(row.calls), 0)),
          perRun(rows.reduce((sum, row) => sum + row.plan + row.exec, 0)),
          perRun(rows.reduce((sum, row) => sum + row.plan, 0)),
          perRun(rows.reduce((sum, row) => sum + Number(row.plans), 0)),
          cpuBefore === null || cpuAfter === null ? null : perRun((cpuAfter - cpuBefore) / 1000),
        ],
      ],
      digits: [1, 2, 2, 2, 2, 2, 2],
      notes: [
        'Round trips: every top-level statement, `begin` and `commit` included; a statement outside a ' +
          'transaction commits by itself. Compaction runs in batches, so its statements count in fractions. ' +
          'Plan + exec: what `pg_stat_statements` counts (not parsing); PostgreSQL CPU: user + system time of ' +
          "the database's backends, from /proc (10 ms ticks). Plannings: how often PostgreSQL planned a " +
          'statement; a prepared statement is planned for its first five executions on a connection, then ' +
          'generically once if that plan costs no more (decision 0009), so this falls as connections warm.',
      ],
    });
  } finally {
    await server.close();
    await store.cleanup();
  }
} finally {
  await admin.end().catch(() => {});
  await own.destroy();
}
