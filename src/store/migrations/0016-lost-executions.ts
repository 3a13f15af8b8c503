import { sql, type Kysely } from 'kysely';

/**
 * How many of a run's executions were lost (their process died, so their lease ran out), apart from
 * `attempt`, which counts every execution: a resume after a wait for a person, or a hand-back on shutdown,
 * begins one too. `OUTRUN_MAX_ATTEMPTS` bounds the lost ones, so a run answered many times keeps its
 * tolerance of crashes (invariant 8).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table runs add column if not exists lost_executions integer not null default 0`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table runs drop column if exists lost_executions`.execute(db);
}
