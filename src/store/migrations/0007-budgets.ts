import { sql, type Kysely } from 'kysely';

/** Each finished step records what it cost, so a run's spend survives resumes (invariant 11). */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table run_steps add column if not exists cost_usd double precision`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table run_steps drop column if exists cost_usd`.execute(db);
}
