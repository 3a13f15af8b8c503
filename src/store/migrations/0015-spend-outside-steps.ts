import { sql, type Kysely } from 'kysely';

/**
 * What a run spent outside its finished steps: a step that did not finish (cut by a stop, a budget or a
 * quota) and a context summary's model call. No `run_steps` row holds that spend (a budget's cut step is
 * redone when the run goes on), so without this row it counted in the run's totals but never against the
 * workspace's daily quota. One row per execution that spent any; the daily usage sums these with the
 * finished steps.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table if not exists spend_outside_steps (
    run_id text not null references runs (id),
    workspace_id text not null references workspaces (id),
    tokens integer not null,
    cost_usd double precision,
    recorded_at timestamptz not null default now()
  )`.execute(db);
  await sql`create index if not exists spend_outside_steps_workspace_idx
    on spend_outside_steps (workspace_id, recorded_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table if exists spend_outside_steps`.execute(db);
}
