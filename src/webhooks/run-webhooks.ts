import type { Transaction } from 'kysely';
import { RunStatus, type RunStatus as RunStatusValue } from '../protocol/run.ts';
import type { TransitionResult } from '../runs/lifecycle.ts';
import type { Database } from '../store/schema.ts';
import { recordWebhookEvent, WebhookEvent } from './webhook-service.ts';

/** The webhook event a run status reports, if any. */
export function webhookEventOf(status: RunStatusValue): WebhookEvent | null {
  switch (status) {
    case RunStatus.succeeded:
      return WebhookEvent.runSucceeded;
    case RunStatus.failed:
      return WebhookEvent.runFailed;
    case RunStatus.aborted:
      return WebhookEvent.runAborted;
    case RunStatus.waiting:
      return WebhookEvent.runWaiting;
    default:
      return null;
  }
}

/**
 * The lifecycle listener that fills the webhooks outbox: a delivery is recorded in the same transaction as
 * the status change it reports (invariant 14), so a crash can lose neither without the other. Returns how
 * many deliveries it recorded (0 when the status has no event or no webhook is subscribed to it).
 */
export async function recordRunWebhooks(
  tx: Transaction<Database>,
  change: TransitionResult,
): Promise<number> {
  const event = webhookEventOf(change.run.status);
  if (!event) return 0;
  return recordWebhookEvent(tx, { workspaceId: change.row.workspace_id, event, run: change.run });
}
