import { sql, type Kysely } from 'kysely';

/**
 * `OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS`: a finished delivery (delivered or failed) is deleted that many
 * days after it was recorded; a pending one never is. The partial index holds only finished deliveries, by
 * when they were recorded, so each instance's hourly pass reads the oldest first without reading the table.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index if not exists webhook_deliveries_finished_idx on webhook_deliveries (created_at)
    where status <> 'pending'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists webhook_deliveries_finished_idx`.execute(db);
}
