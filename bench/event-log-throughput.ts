/**
 * Events per second through the event log (group commit), in-process on PGlite or PostgreSQL.
 *
 *   npx tsx bench/event-log-throughput.ts [--store pglite|postgres] [--quick]
 *
 * N writers (one run each) append small `text-delta` chunks. Two disciplines:
 * - `await`: each writer appends one event and awaits its flush before the next (a durable round trip per
 *   event and writer; batch size is at most N).
 * - `stream`: each writer appends one event per macrotask without waiting, as the run executor does with a
 *   fast model; it awaits the flush once at the end.
 * Reported: events/s, inserts/s and mean batch size (from the log's own batch-size metric), flush latency in
 * the `await` discipline, and storage per event and per run (table + primary key index + TOAST).
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pino from 'pino';
import { createOutrun, type Outrun } from '../src/app.ts';
import type { RunEventWriter } from '../src/stream/event-log.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { Sample } from './support/stats.ts';
import { createBenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const ADMIN_KEY = 'bench-admin-key-0123456789abcdef';

interface Scenario {
  discipline: 'await' | 'stream';
  writers: number;
  eventsPerWriter: number;
}

const args = parseBenchArgs();
// The log publishes on the in-process bus here; Redis would measure the network instead.
delete process.env.REDIS_URL;
const scenarios: Scenario[] = args.quick
  ? [
      { discipline: 'await', writers: 1, eventsPerWriter: 300 },
      { discipline: 'await', writers: 100, eventsPerWriter: 30 },
      { discipline: 'stream', writers: 10, eventsPerWriter: 1000 },
    ]
  : [
      { discipline: 'await', writers: 1, eventsPerWriter: 2000 },
      { discipline: 'await', writers: 10, eventsPerWriter: 1000 },
      { discipline: 'await', writers: 100, eventsPerWriter: 200 },
      { discipline: 'await', writers: 1000, eventsPerWriter: 40 },
      { discipline: 'stream', writers: 1, eventsPerWriter: 20_000 },
      { discipline: 'stream', writers: 10, eventsPerWriter: 5000 },
      { discipline: 'stream', writers: 100, eventsPerWriter: 1000 },
    ];

const store = await createBenchStore(args.store);
printHeader('event-log-throughput', { store: store.description });
const database = await store.open();
const outrun = await createOutrun({
  database,
  config: { adminKey: ADMIN_KEY, logLevel: 'silent' },
  logger: pino({ level: 'silent' }),
});
const { userId } = await outrun.auth.seedAdmin({ adminKey: ADMIN_KEY });
const caller = await outrun.auth.authenticate(ADMIN_KEY);

const rows: Cell[][] = [];
try {
  for (const scenario of scenarios) {
    await sql`truncate run_events, run_event_pages`.execute(outrun.db);
    const writers = await openWriters(outrun, scenario.writers, userId, caller.workspaceId);
    const before = await batchStats(outrun);
    const flushLatency = new Sample();
    const started = performance.now();
    await Promise.all(
      writers.map((writer) =>
        scenario.discipline === 'await'
          ? appendAwaiting(writer, scenario.eventsPerWriter, flushLatency)
          : appendStreaming(writer, scenario.eventsPerWriter),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const after = await batchStats(outrun);
    const events = scenario.writers * scenario.eventsPerWriter;
    const inserts = after.count - before.count;
    const storage = await storageStats(outrun, scenario.writers);
    const flush = flushLatency.summary();
    rows.push([
      scenario.discipline,
      scenario.writers,
      events,
      events / seconds,
      inserts / seconds,
      (after.sum - before.sum) / inserts,
      scenario.discipline === 'await' ? flush.p50 : null,
      scenario.discipline === 'await' ? flush.p99 : null,
      storage.chunkBytes,
      storage.bytesPerEvent,
      storage.bytesPerRun / 1024,
    ]);
    console.log(
      `${scenario.discipline} × ${scenario.writers}: ${Math.round(events / seconds)} events/s, ` +
        `mean batch ${((after.sum - before.sum) / inserts).toFixed(1)}`,
    );
  }
} finally {
  await outrun.close({ graceMs: 0 });
  await database.close();
  await store.cleanup();
}

printTable({
  title: `event-log-throughput — ${args.store}, ${process.version}`,
  columns: [
    'discipline',
    'writers',
    'events',
    'events/s',
    'inserts/s',
    'mean batch',
    'flush p50 ms',
    'flush p99 ms',
    'page B/event',
    'stored B/event',
    'KiB/run',
  ],
  rows,
  digits: [0, 0, 0, 0, 0, 1, 2, 2, 0, 0, 1],
  notes: [
    '`page B/event` is pg_column_size(events) of the plain pages the group commit wrote ÷ the events they hold; ' +
      '`stored B/event` is pg_total_relation_size of run_events and run_event_pages (heap, primary-key index, TOAST) ' +
      'per event; `KiB/run` is that per run of the scenario (events/writers events each).',
  ],
});

/** Begins and claims one run per writer (each in its own chat) and opens its event writer after seq 1. */
async function openWriters(outrun: Outrun, count: number, userId: string, workspaceId: string) {
  const writers: RunEventWriter[] = [];
  for (let index = 0; index < count; index++) {
    const chat = await outrun.chats.create({ userId, workspaceId, role: 'admin' }, { title: 'bench' });
    const { run } = await outrun.runs.begin({
      workspaceId,
      chatId: chat.id,
      userId,
      parts: [{ type: 'text', text: 'bench' }],
      model: 'scripted',
      trigger: 'api',
    });
    const claimed = await outrun.lifecycle.claim({
      runId: run.id,
      owner: 'bench',
      leaseExpiresAt: new Date(Date.now() + 3_600_000),
    });
    if (!claimed) throw new Error('could not claim the benchmark run');
    const nextSeq = claimed.events.at(-1)!.seq + 1;
    writers.push(outrun.log.openWriter({ runId: run.id, epoch: claimed.row.epoch, nextSeq }));
  }
  return writers;
}

/** A text delta as the AI SDK's UI message stream writes it for a provider text id. */
function deltaChunk(id: string, index: number) {
  return { type: 'text-delta', id, delta: `s1t${index} ` };
}

async function appendAwaiting(writer: RunEventWriter, events: number, latency: Sample): Promise<void> {
  const id = `text-${randomUUID()}`;
  for (let index = 0; index < events; index++) {
    const started = performance.now();
    writer.append(deltaChunk(id, index));
    await writer.flush();
    latency.add(performance.now() - started);
  }
}

async function appendStreaming(writer: RunEventWriter, events: number): Promise<void> {
  const id = `text-${randomUUID()}`;
  for (let index = 0; index < events; index++) {
    writer.append(deltaChunk(id, index));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  await writer.flush();
}

async function batchStats(outrun: Outrun): Promise<{ count: number; sum: number }> {
  const metric = await outrun.metrics.appendBatchSize.get();
  const value = (name: string) => metric.values.find((entry) => entry.metricName === name)?.value ?? 0;
  return {
    count: value('outrun_event_append_batch_size_count'),
    sum: value('outrun_event_append_batch_size_sum'),
  };
}

async function storageStats(outrun: Outrun, runs: number) {
  const { rows } = await sql<{ total: string; events: string; chunk: string }>`
    select pg_total_relation_size('run_events') + pg_total_relation_size('run_event_pages') as total,
           (select count(*) from run_events)
             + (select coalesce(sum(last_seq - first_seq + 1), 0) from run_event_pages) as events,
           (select sum(pg_column_size(events))::float8 / sum(last_seq - first_seq + 1) from run_event_pages) as chunk
  `.execute(outrun.db);
  const row = rows[0]!;
  const total = Number(row.total);
  return {
    bytesPerEvent: total / Number(row.events),
    bytesPerRun: total / runs,
    chunkBytes: Number(row.chunk),
  };
}
