import { sql, type Kysely } from 'kysely';

/**
 * `OUTRUN_EVENT_RETENTION_DAYS` (DESIGN §7): a finished run's events are deleted that many days after it
 * finished; the run, its steps and its messages stay. `events_deleted_at` records the deletion, so a read of
 * the run's stream answers `410 events_expired` instead of an empty replay. The partial index holds only
 * runs whose events are compacted and not yet deleted (an entry is made when compaction marks the run, off
 * the run's own path), ordered by when they finished: the retention pass reads the oldest first.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table runs add column if not exists events_deleted_at timestamptz`.execute(db);
  await sql`create index if not exists runs_events_retained_idx on runs (finished_at)
    where events_compacted_at is not null and events_deleted_at is null`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists runs_events_retained_idx`.execute(db);
  await sql`alter table runs drop column if exists events_deleted_at`.execute(db);
}
