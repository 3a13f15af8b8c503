import { sql, type Kysely } from 'kysely';

/**
 * Workspace quotas and stored context compactions (DESIGN §3). The `workspaces.quota` and
 * `run_steps.cost_usd` columns are added only if missing, since other migrations may add them too.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table workspaces add column if not exists quota jsonb`.execute(db);
  await sql`alter table run_steps add column if not exists cost_usd double precision`.execute(db);
  // Daily usage sums the steps a workspace finished since midnight UTC.
  await sql`create index if not exists run_steps_finished_at_idx on run_steps (finished_at)`.execute(db);
  // Runs per minute counts a workspace's runs created in the last minute.
  await sql`create index if not exists runs_workspace_created_at_idx on runs (workspace_id, created_at)`.execute(
    db,
  );

  await db.schema
    .createTable('compactions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('chat_id', 'text', (c) => c.notNull().references('chats.id'))
    .addColumn('run_id', 'text', (c) => c.references('runs.id'))
    // The last message the summary covers: a later run reuses it for the history up to and including it.
    .addColumn('upto_message_id', 'text', (c) => c.notNull())
    .addColumn('summary', 'text', (c) => c.notNull())
    .addColumn('tokens_before', 'integer', (c) => c.notNull())
    .addColumn('tokens_after', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex('compactions_chat_id_idx')
    .on('compactions')
    .columns(['chat_id', 'id'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('compactions').ifExists().execute();
  await sql`drop index if exists runs_workspace_created_at_idx`.execute(db);
  await sql`drop index if exists run_steps_finished_at_idx`.execute(db);
}
