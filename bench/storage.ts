/**
 * Storage per finished run, as a multiple of its answer's text (DESIGN §7: at most 3×), before and after the
 * run's events are compacted into pages, in-process on PGlite or PostgreSQL.
 *
 *   npx tsx bench/storage.ts [--store pglite|postgres] [--quick] [--runs R]
 *
 * Two answers of 1,000 tokens each, one step, no tools: the scripted model (`s1t<i> `, short deltas) and the
 * prose model (real README text cut into ~3.5-character tokens, with a hosted provider's long text-part id).
 * For each, R runs (one chat each) are measured as the growth of `pg_total_relation_size` (heap, indexes,
 * TOAST) summed over every table of the schema, after a plain VACUUM, divided by the UTF-8 bytes of the
 * answers' text. Counted in the growth, beyond the events: the chat, both messages (the assistant message holds
 * the whole text again), the run row, its step row (the text once more) and the webhook-free rest.
 *
 * - `written`: the runs end while compaction is off, so their events stay as written: the group commit's plain
 *   pages (one per run and insert) and the few rows a status change writes (decision 0014; until 2026-12-05
 *   one `run_events` row per event).
 * - `pages`: those runs compacted; a warm-up batch of R runs, then R more runs with compaction on, measured
 *   the same way. Space compacted rows and plain pages left behind is reused by later ones (after a vacuum:
 *   autovacuum on PostgreSQL, the compactor's own on PGlite), so this is the steady state of a server that
 *   keeps taking runs: the events of runs in flight cost O(runs in flight), not O(history).
 *
 * Also: the time to compact one run, and the time to read a whole run (`log.read`, 1,000 events per read)
 * as written and from compressed pages.
 */
import { sql } from 'kysely';
import pino from 'pino';
import type { LanguageModel } from 'ai';
import { resolveModel } from '../src/agent/providers.ts';
import { createOutrun, type Outrun } from '../src/app.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { BenchApi, forEachLimit } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { createProseModel, proseAnswer, PROSE_MODEL_ID } from './support/prose-model.ts';
import { BENCH_ADMIN_KEY } from './support/server-process.ts';
import { Sample } from './support/stats.ts';
import { createBenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const args = parseBenchArgs({ withRuns: true });
delete process.env.REDIS_URL;
/**
 * Runs per answer and phase (R). Each table grows by whole 8 KiB pages, so a small R measures a table's
 * per-run cost to within a page ÷ R (164 B at 50, against 3.5–6.9 KB of text per run); a larger R is more exact.
 */
const RUNS = args.runs ?? (args.quick ? 20 : 50);
const TOKENS = 1000;
/** How often the event tables are vacuumed on PostgreSQL during phase 2, standing in for autovacuum. */
const AUTOVACUUM_EMULATION_MS = 1000;
/** Runs executing at once while a batch is produced. */
const CONCURRENCY = 4;

interface Answer {
  name: string;
  model: string | undefined;
  /** The user text that makes the model give answer `index`, and that answer's text. */
  run(index: number): { input: string; text: string };
}

const ANSWERS: Answer[] = [
  {
    name: 'scripted',
    model: undefined,
    run: () => ({
      input: JSON.stringify({ script: { steps: 1, tokens: TOKENS, tool: false } }),
      text: Array.from({ length: TOKENS }, (_, index) => `s1t${index} `).join(''),
    }),
  },
  {
    name: 'prose',
    model: PROSE_MODEL_ID,
    run: (index) => {
      const offset = index * 997;
      return {
        input: JSON.stringify({ prose: { tokens: TOKENS, offset } }),
        text: proseAnswer(TOKENS, offset).join(''),
      };
    },
  },
];

const proseModel = createProseModel();
const benchResolveModel = (modelId: string): LanguageModel =>
  modelId === PROSE_MODEL_ID ? proseModel : resolveModel({ modelId });

const store = await createBenchStore(args.store);
printHeader('storage', {
  store: store.description,
  runs: `${RUNS} runs of ${TOKENS} tokens per answer and phase, ${CONCURRENCY} at a time, one chat each`,
});
const database = await store.open();

async function launch(): Promise<{ outrun: Outrun; api: BenchApi }> {
  const outrun = await createOutrun({
    database,
    // No per-key request limit: a larger --runs polls past it (as the other benchmarks' servers, which set it to 0).
    config: {
      port: 0,
      host: '127.0.0.1',
      adminKey: BENCH_ADMIN_KEY,
      logLevel: 'silent',
      rateLimitPerMinute: 0,
    },
    logger: pino({ level: 'silent' }),
    resolveModel: benchResolveModel,
  });
  await outrun.start();
  return { outrun, api: new BenchApi(await outrun.listen()) };
}

const rows: Cell[][] = [];
const perTable: Cell[][] = [];
try {
  for (const answer of ANSWERS) {
    // Phase 1: every event stays a row (this instance's compactor takes nothing).
    let { outrun, api } = await launch();
    await outrun.compactor.close();
    const before = await relationSizes(database);
    const first = await produce(api, answer, 0);
    const withRows = await relationSizes(database);
    const readRows = await readTimes(outrun, first.runIds);
    const compactTime = new Sample();
    for (const runId of first.runIds) {
      const started = performance.now();
      const result = await outrun.log.compact(runId);
      if (!result.compacted) throw new Error(`run ${runId} was not compacted: ${result.reason}`);
      compactTime.add(performance.now() - started);
    }
    await outrun.close({ graceMs: 0 });

    // Phase 2: those runs compacted; a warm-up batch, then R more runs, with compaction on.
    ({ outrun, api } = await launch());
    const autovacuum = emulateAutovacuum(store.kind);
    const readPages = await readTimes(outrun, first.runIds);
    await waitUntilCompacted(outrun, (await produce(api, answer, 2 * RUNS)).runIds);
    const compacted = await relationSizes(database);
    const second = await produce(api, answer, RUNS);
    await waitUntilCompacted(outrun, second.runIds);
    clearInterval(autovacuum);
    const withPages = await relationSizes(database);
    const payload = await sql<{ bytes: string }>`
      select sum(pg_column_size(events))::bigint as bytes from run_event_pages
      where run_id in (${sql.join(second.runIds)})`.execute(database.db);
    await outrun.close({ graceMs: 0 });

    const rowsGrowth = growth(before, withRows);
    const pagesGrowth = growth(compacted, withPages);
    const rowsTotal = sum(rowsGrowth);
    const pagesTotal = sum(pagesGrowth);
    rows.push([
      answer.name,
      first.textBytes / RUNS,
      first.events / RUNS,
      rowsTotal / RUNS,
      rowsTotal / first.textBytes,
      pagesTotal / RUNS,
      pagesTotal / second.textBytes,
      Number(payload.rows[0]!.bytes) / second.textBytes,
      compactTime.summary().p50,
      readRows.summary().p50,
      readPages.summary().p50,
    ]);
    for (const table of new Set([...rowsGrowth.keys(), ...pagesGrowth.keys()])) {
      const rowsBytes = rowsGrowth.get(table) ?? 0;
      const pagesBytes = pagesGrowth.get(table) ?? 0;
      if (rowsBytes === 0 && pagesBytes === 0) continue;
      perTable.push([
        answer.name,
        table,
        rowsBytes / RUNS,
        rowsBytes / first.textBytes,
        pagesBytes / RUNS,
        pagesBytes / second.textBytes,
      ]);
    }
    console.log(
      `${answer.name}: ${(rowsTotal / first.textBytes).toFixed(2)}× → ${(pagesTotal / second.textBytes).toFixed(2)}×`,
    );
  }
} finally {
  await database.close();
  await store.cleanup();
}

printTable({
  title: `storage — ${args.store}, ${process.version}`,
  columns: [
    'answer',
    'text B/run',
    'events/run',
    'written B/run',
    'written ×text',
    'pages B/run',
    'pages ×text',
    'payload ×text',
    'compact ms p50',
    'read written ms p50',
    'read pages ms p50',
  ],
  rows,
  digits: [0, 0, 0, 0, 2, 0, 2, 2, 2, 2, 2],
  notes: [
    '`×text` is the growth of every table and index (pg_total_relation_size after VACUUM) ÷ the answers’ UTF-8 text bytes.',
    '`payload ×text` is the compressed pages alone (pg_column_size of run_event_pages.events) ÷ the text bytes.',
    '`read` is one whole run read with log.read (1,000 events per statement), as a resume from 0 does.',
  ],
});
printTable({
  title: `storage per table — ${args.store}`,
  columns: ['answer', 'table', 'written B/run', 'written ×text', 'pages B/run', 'pages ×text'],
  rows: perTable,
  digits: [0, 0, 0, 2, 0, 2],
});

/** Starts R runs of `answer` (`CONCURRENCY` at a time), each in its own chat, and waits until all ended. */
async function produce(
  api: BenchApi,
  answer: Answer,
  first: number,
): Promise<{ runIds: string[]; textBytes: number; events: number }> {
  const runIds: string[] = [];
  let textBytes = 0;
  await forEachLimit(
    Array.from({ length: RUNS }, (_, index) => first + index),
    CONCURRENCY,
    async (index) => {
      const { input, text } = answer.run(index);
      const run = await api.startRun(await api.createChat(), input, answer.model);
      const ended = await api.waitForRun(run.id);
      if (ended.status !== 'succeeded') throw new Error(`run ${run.id} ended ${ended.status}`);
      runIds.push(run.id);
      textBytes += Buffer.byteLength(text, 'utf8');
    },
  );
  const counted = await sql<{ n: string }>`
    select (select count(*) from run_events where run_id in (${sql.join(runIds)}))
         + (select coalesce(sum(last_seq - first_seq + 1), 0) from run_event_pages
             where run_id in (${sql.join(runIds)})) as n`.execute(database.db);
  return { runIds, textBytes, events: Number(counted.rows[0]!.n) };
}

async function waitUntilCompacted(outrun: Outrun, runIds: string[]): Promise<void> {
  for (;;) {
    await outrun.compactor.idle();
    const left = await outrun.db
      .selectFrom('runs')
      .select('id')
      .where('id', 'in', runIds)
      .where('events_compacted_at', 'is', null)
      .execute();
    if (left.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function readTimes(outrun: Outrun, runIds: string[]): Promise<Sample> {
  const sample = new Sample();
  for (const runId of runIds) {
    const started = performance.now();
    let after = 0;
    for (;;) {
      const events = await outrun.log.read({ runId, after, limit: 1000 });
      if (events.length === 0) break;
      after = events[events.length - 1]!.seq;
      if (events.length < 1000) break;
    }
    sample.add(performance.now() - started);
  }
  return sample;
}

/**
 * On PostgreSQL, autovacuum reclaims compacted rows and plain pages about once a minute (`autovacuum_naptime`);
 * the batches here take seconds, so this vacuums both tables every `AUTOVACUUM_EMULATION_MS` instead. (On PGlite the
 * compactor vacuums by itself.)
 */
function emulateAutovacuum(kind: string): NodeJS.Timeout | undefined {
  if (kind !== 'postgres') return undefined;
  // One at a time: vacuums stacked behind a lock would hold every pooled connection.
  let running = false;
  return setInterval(() => {
    if (running) return;
    running = true;
    sql`vacuum run_events, run_event_pages`
      .execute(database.db)
      .catch(() => {})
      .finally(() => (running = false));
  }, AUTOVACUUM_EMULATION_MS);
}

/**
 * Bytes of every table of the schema with its indexes and TOAST, after a VACUUM, and `run_event_pages`
 * rewritten (VACUUM FULL): compaction deletes a run's plain pages from the table its compressed pages go into
 * (decision 0014), so a plain VACUUM would leave the free space of the phase before in it, and the next phase's
 * pages would fill that space instead of growing the table (once even shrinking it). Rewritten, the table's
 * growth is the pages of the runs measured, as it was when only compressed pages ever went in.
 */
async function relationSizes(handle: DatabaseHandle): Promise<Map<string, number>> {
  // Without the server's statement timeout: with a larger --runs, the vacuum's truncation of run_events can
  // wait longer than that for its lock.
  await handle.db.connection().execute(async (connection) => {
    await sql`set statement_timeout = 0`.execute(connection);
    await sql`vacuum full run_event_pages`.execute(connection);
    await sql`vacuum`.execute(connection);
    await sql`reset statement_timeout`.execute(connection);
  });
  const result = await sql<{ name: string; bytes: string }>`
    select c.relname as name, pg_total_relation_size(c.oid)::bigint as bytes
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'r' and n.nspname = current_schema()`.execute(handle.db);
  return new Map(result.rows.map((row) => [row.name, Number(row.bytes)]));
}

function growth(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  return new Map([...after].map(([name, bytes]) => [name, bytes - (before.get(name) ?? 0)]));
}

function sum(values: Map<string, number>): number {
  return [...values.values()].reduce((total, value) => total + value, 0);
}
