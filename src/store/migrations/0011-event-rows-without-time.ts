import { sql, type Kysely } from 'kysely';

/**
 * `run_events.created_at` goes: nothing ever read it, every event row paid 8 bytes and a `now()` for it, and
 * a run's time is on its row (`runs.started_at`, `finished_at`) and its steps'. In PostgreSQL dropping a column
 * only marks it dropped; rows written afterwards are narrower.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table run_events drop column if exists created_at`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table run_events add column if not exists created_at timestamptz not null default now()`.execute(
    db,
  );
}
