import { RunStatus, type RunStatus as RunStatusValue } from '../protocol/run.ts';
import type { TransitionListener, TransitionResult } from '../runs/lifecycle.ts';
import { WebhookEvent } from '../protocol/webhook.ts';
import { recordWebhookDeliveries, subscribedWebhookIds } from './webhook-service.ts';

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
 * the status change it reports (invariant 14), so a crash can lose neither without the other. The
 * subscribed webhooks are read by the change's own statement (`lookup`); `onRecorded` hears of a change
 * that recorded at least one delivery.
 */
export function runWebhooksListener(onRecorded: (change: TransitionResult) => void): TransitionListener {
  return {
    lookup: ({ status, workspaceId }) => {
      const event = webhookEventOf(status);
      return event ? subscribedWebhookIds(workspaceId, event) : null;
    },
    async record(tx, change, webhookIds) {
      const event = webhookEventOf(change.run.status);
      if (!event || !Array.isArray(webhookIds)) return;
      const recorded = await recordWebhookDeliveries(tx, webhookIds as string[], {
        workspaceId: change.row.workspace_id,
        event,
        run: change.run,
      });
      if (recorded > 0) onRecorded(change);
    },
  };
}
