/** Webhooks as the API shows them (DESIGN §4 "Triggers"), shared by the server and its clients. */

/** The run events a webhook can subscribe to. */
export const WebhookEvent = {
  /** A run settled `succeeded`. */
  runSucceeded: 'run.succeeded',
  /** A run settled `failed`. */
  runFailed: 'run.failed',
  /** A run settled `aborted` (stopped, expired, out of budget or attempts). */
  runAborted: 'run.aborted',
  /** A run started waiting for a person (an approval or a budget extension). */
  runWaiting: 'run.waiting',
} as const;
export type WebhookEvent = (typeof WebhookEvent)[keyof typeof WebhookEvent];
/** Every webhook event, in the order a webhook created without `events` lists them. */
export const WEBHOOK_EVENTS = Object.values(WebhookEvent) as [WebhookEvent, ...WebhookEvent[]];

/** A delivery's state: `pending` until a 2xx answer (`delivered`) or the retry schedule runs out (`failed`). */
export const DeliveryStatus = {
  /** Not answered with a 2xx yet; retried with backoff. */
  pending: 'pending',
  /** The receiver answered with a 2xx. */
  delivered: 'delivered',
  /** The retry schedule ran out, or the webhook was deleted or disabled first. */
  failed: 'failed',
} as const;
export type DeliveryStatus = (typeof DeliveryStatus)[keyof typeof DeliveryStatus];

/** A webhook as the API shows it; its signing secret is shown only once, when it is created or rotated. */
export interface WebhookObject {
  id: string;
  url: string;
  events: WebhookEvent[];
  /** A disabled webhook records no deliveries; disabling it ends its pending ones `failed`. */
  enabled: boolean;
  /**
   * Until when the secret the last rotation replaced still signs deliveries beside the current one; null when
   * no previous secret signs.
   */
  previousSecretExpiresAt: string | null;
  createdAt: string;
}

/** One delivery of an event to a webhook, with its attempts so far. */
export interface WebhookDeliveryObject {
  id: string;
  webhookId: string;
  runId: string | null;
  event: string;
  status: DeliveryStatus;
  attempts: number;
  /** When the next attempt is due; null once the delivery is `delivered` or `failed`. */
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: string;
  deliveredAt: string | null;
  /** The body sent (a `WebhookPayload`). */
  payload: unknown;
}

/** The body every delivery carries (Standard Webhooks: `type`, `timestamp`, `data`). */
export interface WebhookPayload {
  type: WebhookEvent;
  timestamp: string;
  data: { run: unknown };
}

/** `POST /v1/webhooks`. */
export interface CreateWebhookOptions {
  /** An http(s) URL; private and loopback addresses only with `OUTRUN_ALLOW_PRIVATE_URLS=true`. */
  url: string;
  /** The events to deliver. @default every event (`WEBHOOK_EVENTS`) */
  events?: WebhookEvent[];
}

/** A new webhook and its Standard Webhooks signing secret (`whsec_…`), which is shown only this once. */
export interface CreatedWebhook {
  webhook: WebhookObject;
  secret: string;
}

/** `PATCH /v1/webhooks/:webhookId`: at least one field; each given one replaces the stored one. */
export interface UpdateWebhookOptions {
  /** Checked as on create; pending deliveries go to the new URL from their next attempt. */
  url?: string;
  /** The events to deliver from now on (deliveries already recorded still go out). */
  events?: WebhookEvent[];
  /** `false` stops deliveries: nothing new is recorded and pending deliveries end `failed`. */
  enabled?: boolean;
}

/**
 * `POST /v1/webhooks/:webhookId/rotate-secret`: the webhook and its new signing secret, shown only this once.
 * The replaced secret signs beside it until `webhook.previousSecretExpiresAt`.
 */
export interface RotatedWebhookSecret {
  webhook: WebhookObject;
  secret: string;
}
