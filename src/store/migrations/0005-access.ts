import { sql, type Kysely } from 'kysely';

/**
 * Access and tenancy (DESIGN §3, §4): the instance `owner` role, soft-deleted users, workspace quotas, named
 * and seeded API keys, and the server secrets that sign scoped tokens.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table users drop constraint if exists users_role_check`.execute(db);
  await sql`alter table users add constraint users_role_check check (role in ('owner', 'admin', 'member'))`.execute(
    db,
  );
  await db.schema.alterTable('users').addColumn('deleted_at', 'timestamptz').execute();
  // A removed user's email can be given to a new user of the same workspace.
  await sql`alter table users drop constraint if exists users_workspace_email_unique`.execute(db);
  await sql`create unique index users_workspace_email_unique on users (workspace_id, email) where deleted_at is null`.execute(
    db,
  );

  await db.schema.alterTable('workspaces').addColumn('quota', 'jsonb').execute();

  await db.schema
    .alterTable('api_keys')
    .addColumn('name', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
  // The key registered from `OUTRUN_ADMIN_KEY` (or generated at first start): replaced when the variable changes.
  await db.schema
    .alterTable('api_keys')
    .addColumn('seeded', 'boolean', (c) => c.notNull().defaultTo(false))
    .execute();
  await db.schema.createIndex('api_keys_user_id_idx').on('api_keys').columns(['user_id', 'id']).execute();

  // The seeded administrator of earlier versions becomes the instance owner, and its keys the seeded ones.
  await sql`update users set role = 'owner' where email = 'admin@localhost' and role = 'admin'
    and id = (select min(id) from users where email = 'admin@localhost' and role = 'admin')`.execute(db);
  await sql`update api_keys set seeded = true, name = 'OUTRUN_ADMIN_KEY'
    where user_id in (select id from users where role = 'owner')`.execute(db);

  await db.schema
    .createTable('server_secrets')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('server_secrets').ifExists().execute();
  await db.schema.dropIndex('api_keys_user_id_idx').ifExists().execute();
  await db.schema.alterTable('api_keys').dropColumn('seeded').execute();
  await db.schema.alterTable('api_keys').dropColumn('name').execute();
  await db.schema.alterTable('workspaces').dropColumn('quota').execute();
  await sql`drop index if exists users_workspace_email_unique`.execute(db);
  await sql`update users set role = 'admin' where role = 'owner'`.execute(db);
  await db.schema.alterTable('users').dropColumn('deleted_at').execute();
  await sql`alter table users drop constraint if exists users_role_check`.execute(db);
  await sql`alter table users add constraint users_role_check check (role in ('admin', 'member'))`.execute(
    db,
  );
  await sql`alter table users add constraint users_workspace_email_unique unique (workspace_id, email)`.execute(
    db,
  );
}
