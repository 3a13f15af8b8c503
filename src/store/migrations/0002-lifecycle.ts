import { sql, type Kysely } from 'kysely';

/**
 * The v2 run lifecycle: statuses `queued` and `waiting`, the fencing `epoch` apart from the execution count
 * `attempt`, and the columns agents, triggers and budgets fill in.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table runs drop constraint if exists runs_status_check`.execute(db);
  await sql`alter table runs add constraint runs_status_check
    check (status in ('queued', 'pending', 'running', 'waiting', 'succeeded', 'failed', 'aborted'))`.execute(
    db,
  );
  await db.schema
    .alterTable('runs')
    .addColumn('epoch', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('agent_id', 'text')
    .addColumn('parent_run_id', 'text')
    .addColumn('schedule_id', 'text')
    .addColumn('waiting', 'jsonb')
    .addColumn('cost_usd', 'double precision')
    .addColumn('config', 'jsonb')
    .addColumn('metadata', 'jsonb')
    .addColumn('queued_at', 'timestamptz')
    .execute();
  // Until now the attempt was the fencing token: carry it over so no live owner is fenced out by the upgrade.
  await sql`update runs set epoch = attempt`.execute(db);

  // The gate of invariant 3 now counts `waiting` as active.
  await sql`drop index if exists runs_one_active_per_chat`.execute(db);
  await sql`create unique index runs_one_active_per_chat on runs (chat_id)
    where status in ('pending', 'running', 'waiting')`.execute(db);
  await sql`drop index if exists runs_active_lease_idx`.execute(db);
  await sql`create index runs_active_lease_idx on runs (lease_expires_at)
    where status in ('pending', 'running', 'waiting')`.execute(db);
  // Promotion takes the oldest queued run of a chat.
  await sql`create index runs_queued_idx on runs (chat_id, id) where status = 'queued'`.execute(db);

  await sql`alter table messages drop constraint if exists messages_status_check`.execute(db);
  await sql`alter table messages add constraint messages_status_check
    check (status in ('completed', 'streaming', 'queued', 'error', 'aborted'))`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists runs_queued_idx`.execute(db);
  for (const column of [
    'epoch',
    'agent_id',
    'parent_run_id',
    'schedule_id',
    'waiting',
    'cost_usd',
    'config',
    'metadata',
    'queued_at',
  ]) {
    await db.schema.alterTable('runs').dropColumn(column).execute();
  }
}
