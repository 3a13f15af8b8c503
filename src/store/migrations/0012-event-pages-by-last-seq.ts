import { sql, type Kysely } from 'kysely';

/**
 * `run_event_pages` is keyed by `(run_id, last_seq)` instead of `(run_id, first_seq)`: the group commit writes
 * a page per run and insert (docs/decisions/0014-group-commit-writes-pages.md), so a running run can have
 * thousands of pages. A read of the events after `after` bounds `last_seq` on both sides (no page holds more
 * than 1,000 events) and scans only the pages it returns, and a run's last sequence number is the key's last
 * entry; keyed by `first_seq`, both visited every earlier page of the run.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table run_event_pages drop constraint if exists run_event_pages_pk,
    add constraint run_event_pages_pk primary key (run_id, last_seq)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table run_event_pages drop constraint if exists run_event_pages_pk,
    add constraint run_event_pages_pk primary key (run_id, first_seq)`.execute(db);
}
