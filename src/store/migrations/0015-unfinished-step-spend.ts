import { sql, type Kysely } from 'kysely';

/**
 * What a run spent on a step that did not finish: cut by a stop, a budget or a quota. Such a step has no
 * `run_steps` row (a budget's is redone when the run goes on), so without this row its tokens and cost
 * counted in the run's totals but never against the workspace's daily quota. One row per execution that
 * ended with a step under way; the daily usage sums these with the finished steps.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table if not exists unfinished_step_spend (
    run_id text not null references runs (id),
    workspace_id text not null references workspaces (id),
    tokens integer not null,
    cost_usd double precision,
    recorded_at timestamptz not null default now()
  )`.execute(db);
  await sql`create index if not exists unfinished_step_spend_workspace_idx
    on unfinished_step_spend (workspace_id, recorded_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table if exists unfinished_step_spend`.execute(db);
}
