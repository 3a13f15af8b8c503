import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../../src/store/schema.ts';
import {
  recordWebhookDeliveries,
  subscribedWebhookIds,
  type WebhookDeliveryOptions,
} from '../../src/webhooks/webhook-service.ts';

/**
 * Records a delivery of `options.event` for every webhook subscribed to it, outside any status change: the
 * look-up a status change makes inside its own statement (`runWebhooksListener`), here a statement of its
 * own, so that tests can fill the outbox and drive the dispatcher directly. Returns how many it recorded.
 */
export async function recordWebhookEvent(
  db: Transaction<Database> | Kysely<Database>,
  options: WebhookDeliveryOptions,
): Promise<number> {
  const { rows } = await sql<{
    ids: string[];
  }>`select ${subscribedWebhookIds(options.workspaceId, options.event)} as ids`.execute(db);
  return recordWebhookDeliveries(db, rows[0]?.ids ?? [], options);
}
