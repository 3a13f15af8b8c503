import { sql, type Kysely } from 'kysely';

/**
 * Signing-secret rotation (`POST /v1/webhooks/:webhookId/rotate-secret`): the secret a rotation replaced keeps
 * signing deliveries beside the new one until `previous_secret_expires_at`, so a receiver can switch secrets
 * without refusing a delivery. Only one previous secret is kept.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table webhooks add column if not exists previous_secret text`.execute(db);
  await sql`alter table webhooks add column if not exists previous_secret_expires_at timestamptz`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table webhooks drop column if exists previous_secret_expires_at`.execute(db);
  await sql`alter table webhooks drop column if exists previous_secret`.execute(db);
}
