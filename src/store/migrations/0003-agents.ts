import { sql, type Kysely } from 'kysely';

/** Agents (DESIGN §3): a workspace's named configurations of instructions, model, tools and limits; chats may name one. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('agents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('instructions', 'text')
    // Null: the server's default model (`OUTRUN_MODEL`) at the time a run starts.
    .addColumn('model', 'text')
    .addColumn('model_options', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('tools', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('mcp_servers', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('budget', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('multitask', 'text', (c) =>
      c
        .notNull()
        .defaultTo('reject')
        .check(sql`multitask in ('reject', 'interrupt', 'enqueue')`),
    )
    .addColumn('context', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('autostart', 'jsonb')
    .addColumn('continuation', 'jsonb')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('archived_at', 'timestamptz')
    .execute();
  // Agent ids sort by creation time, so the list pages by id within a workspace.
  await db.schema
    .createIndex('agents_workspace_id_idx')
    .on('agents')
    .columns(['workspace_id', 'id'])
    .execute();

  await db.schema
    .alterTable('chats')
    .addColumn('agent_id', 'text', (c) => c.references('agents.id'))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('chats').dropColumn('agent_id').execute();
  await db.schema.dropTable('agents').ifExists().execute();
}
