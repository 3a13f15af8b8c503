import { sql, type Kysely } from 'kysely';

/** Schedules (DESIGN §3, invariant 13): cron or one-shot starts of a chat's runs, fired by whichever instance claims them. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('schedules')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id'))
    .addColumn('chat_id', 'text', (c) => c.notNull().references('chats.id'))
    .addColumn('created_by', 'text', (c) => c.notNull().references('users.id'))
    .addColumn('cron', 'text')
    .addColumn('timezone', 'text', (c) => c.notNull().defaultTo('UTC'))
    .addColumn('at', 'timestamptz')
    .addColumn('input', 'jsonb', (c) => c.notNull())
    .addColumn('multitask', 'text', (c) =>
      c
        .notNull()
        .defaultTo('skip')
        .check(sql`multitask in ('skip', 'enqueue', 'interrupt')`),
    )
    .addColumn('enabled', 'boolean', (c) => c.notNull().defaultTo(true))
    // Null once a one-shot schedule fired (it is disabled then).
    .addColumn('next_run_at', 'timestamptz')
    .addColumn('last_fired_at', 'timestamptz')
    .addColumn('last_run_id', 'text')
    // What the last due time did: `fired`, `skipped` (the chat was busy) or `failed` (the run could not start).
    .addColumn('last_result', 'text')
    // The trigger of the runs it starts: `schedule`, or `continue` for a `schedule_followup` of a run.
    .addColumn('trigger', 'text', (c) =>
      c
        .notNull()
        .defaultTo('schedule')
        .check(sql`trigger in ('schedule', 'continue')`),
    )
    .addColumn('parent_run_id', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint('schedules_cron_or_at', sql`(cron is null) <> (at is null)`)
    .execute();
  // The runners' claim reads due enabled schedules in due order.
  await sql`create index schedules_due_idx on schedules (next_run_at) where enabled`.execute(db);
  await db.schema.createIndex('schedules_chat_id_idx').on('schedules').columns(['chat_id', 'id']).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('schedules').ifExists().execute();
}
