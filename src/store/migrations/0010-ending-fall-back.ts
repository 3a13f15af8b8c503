import { sql, type Kysely } from 'kysely';

/**
 * `outrun_fall_back(reason)` raises SQLSTATE OR001 with the reason in its message. An owner's ending in one
 * statement (docs/decisions/0011-one-statement-ending.md) calls it to fail on purpose, writing nothing, when it
 * cannot be sure of its ending; the server then ends the run in a transaction.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create or replace function outrun_fall_back(reason text) returns boolean language plpgsql as $$
    begin
      raise exception 'outrun_fall_back: %', reason using errcode = 'OR001';
    end
  $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function if exists outrun_fall_back(text)`.execute(db);
}
