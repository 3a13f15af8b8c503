import { sql, type Kysely } from 'kysely';

/**
 * A finished run's events, compacted into compressed pages (docs/decisions/0006-event-pages.md). A run's
 * events are either all rows of `run_events` or all pages of `run_event_pages`; `runs.events_compacted_at`
 * says which, and its partial index lets the sweeper find finished runs still to compact.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('run_event_pages')
    .ifNotExists()
    .addColumn('run_id', 'text', (c) => c.notNull())
    // The page holds the events `first_seq` through `last_seq`, every one of them.
    .addColumn('first_seq', 'integer', (c) => c.notNull())
    .addColumn('last_seq', 'integer', (c) => c.notNull())
    // A format byte, then the events' chunk texts compressed (src/stream/event-pages.ts).
    .addColumn('events', 'bytea', (c) => c.notNull())
    .addPrimaryKeyConstraint('run_event_pages_pk', ['run_id', 'first_seq'])
    .execute();
  // The bytes are already compressed: stored out of line when large, never compressed again.
  await sql`alter table run_event_pages alter column events set storage external`.execute(db);

  await sql`alter table runs add column if not exists events_compacted_at timestamptz`.execute(db);
  await sql`create index if not exists runs_events_uncompacted_idx on runs (finished_at)
    where events_compacted_at is null and status in ('succeeded', 'failed', 'aborted')`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists runs_events_uncompacted_idx`.execute(db);
  await sql`alter table runs drop column if exists events_compacted_at`.execute(db);
  await db.schema.dropTable('run_event_pages').ifExists().execute();
}
