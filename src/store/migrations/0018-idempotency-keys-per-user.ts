import { sql, type Kysely } from 'kysely';

/**
 * `Idempotency-Key`s belong to the caller: the workspace, the user and the key's text, so one user's key
 * never refuses another's request (`422 idempotency_key_reused`) nor tells whether anyone used it.
 *
 * A key kept from before (at most 24 hours old) goes to the owner of the chat its answer created or started
 * a run in: every route that takes a key acts on the caller's own chat, so that owner is the caller who sent
 * it, and a retry still gets its answer after the upgrade. A claim with no answer yet is deleted: its
 * request belonged to the process that stopped for the upgrade, and its key may be used again.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table idempotency_keys add column if not exists user_id text`.execute(db);
  await sql`
    update idempotency_keys k set user_id = c.owner_id
    from chats c
    where k.user_id is null
      and c.workspace_id = k.workspace_id
      and c.id = coalesce(
        k.response -> 'body' -> 'chat' ->> 'id',
        (select r.chat_id from runs r where r.id = k.response -> 'body' -> 'run' ->> 'id')
      )`.execute(db);
  await sql`delete from idempotency_keys where user_id is null`.execute(db);
  await sql`alter table idempotency_keys alter column user_id set not null`.execute(db);
  await sql`alter table idempotency_keys drop constraint if exists idempotency_keys_pk`.execute(db);
  await sql`alter table idempotency_keys
    add constraint idempotency_keys_pk primary key (workspace_id, user_id, key)`.execute(db);
}

/** Back to keys per workspace: of one key used by several users, the first use is kept. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table idempotency_keys drop constraint if exists idempotency_keys_pk`.execute(db);
  await sql`
    delete from idempotency_keys k
    where exists (
      select 1 from idempotency_keys other
      where other.workspace_id = k.workspace_id
        and other.key = k.key
        and (other.created_at, other.user_id) < (k.created_at, k.user_id)
    )`.execute(db);
  await sql`alter table idempotency_keys drop column if exists user_id`.execute(db);
  await sql`alter table idempotency_keys
    add constraint idempotency_keys_pk primary key (workspace_id, key)`.execute(db);
}
