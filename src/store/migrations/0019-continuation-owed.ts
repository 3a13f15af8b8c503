import { sql, type Kysely } from 'kysely';

/**
 * When a run's ending made a follow-up owed (its step budget ran out under `onExceeded: "continue"`); null
 * once the follow-up began or its start was refused. Set in the ending's own transaction and cleared in the
 * follow-up's begin transaction, so a process that dies between the two leaves the debt on record and the
 * sweeper starts the follow-up (exactly once: the clear is the claim).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table runs add column if not exists continuation_owed_at timestamptz`.execute(db);
  await sql`create index if not exists runs_continuation_owed_idx on runs (continuation_owed_at)
    where continuation_owed_at is not null`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists runs_continuation_owed_idx`.execute(db);
  await sql`alter table runs drop column if exists continuation_owed_at`.execute(db);
}
