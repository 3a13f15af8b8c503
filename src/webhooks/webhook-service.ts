import { randomBytes } from 'node:crypto';
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import type { Caller } from '../auth/auth-service.ts';
import { ConflictError, InvalidRequestError, NotFoundError } from '../errors.ts';
import { newId } from '../ids.ts';
import { assertOutboundUrl, OutboundUrlError } from '../net/outbound-url.ts';
import type { Page } from '../protocol/wire.ts';
import type { WebhookEvent } from '../protocol/webhook.ts';
import {
  DeliveryStatus,
  WEBHOOK_EVENTS,
  type CreatedWebhook,
  type CreateWebhookOptions,
  type RotatedWebhookSecret,
  type UpdateWebhookOptions,
  type WebhookDeliveryObject,
  type WebhookObject,
  type WebhookPayload,
} from '../protocol/webhook.ts';
import type { Database, WebhookDeliveryRow, WebhookRow } from '../store/schema.ts';

/** How long the secret a rotation replaces keeps signing deliveries beside the new one. */
export const PREVIOUS_SECRET_SIGNS_MS = 24 * 60 * 60_000;

/** The last error of a pending delivery that disabling its webhook ended `failed`. */
const DISABLED_ERROR = 'The webhook was disabled.';

const toWebhookObject = (row: WebhookRow, now: Date): WebhookObject => ({
  id: row.id,
  url: row.url,
  events: row.events as WebhookEvent[],
  enabled: row.enabled,
  previousSecretExpiresAt:
    row.previous_secret !== null &&
    row.previous_secret_expires_at !== null &&
    row.previous_secret_expires_at > now
      ? row.previous_secret_expires_at.toISOString()
      : null,
  createdAt: row.created_at.toISOString(),
});

const toDeliveryObject = (row: WebhookDeliveryRow): WebhookDeliveryObject => ({
  id: row.id,
  webhookId: row.webhook_id,
  runId: row.run_id,
  event: row.event,
  status: row.status,
  attempts: row.attempts,
  nextAttemptAt: row.status === DeliveryStatus.pending ? row.next_attempt_at.toISOString() : null,
  lastStatusCode: row.last_status_code,
  lastError: row.last_error,
  createdAt: row.created_at.toISOString(),
  deliveredAt: row.delivered_at?.toISOString() ?? null,
  payload: typeof row.payload === 'string' ? (JSON.parse(row.payload) as unknown) : row.payload,
});

/** Bytes of randomness in a signing secret (Standard Webhooks asks for 24 to 64). */
const SECRET_BYTES = 24;

/** A new Standard Webhooks signing secret: `whsec_` and the base64 of 24 random bytes. */
export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(SECRET_BYTES).toString('base64')}`;
}

function pageOf<T extends { id: string }>(items: T[], limit: number): Page<T> {
  const page = items.slice(0, limit);
  return { items: page, nextCursor: items.length > limit ? page[page.length - 1]!.id : null };
}

export interface WebhookServiceOptions {
  db: Kysely<Database>;
  /** Webhook URLs may point at private and loopback addresses. @default false */
  allowPrivateUrls?: boolean;
  /** Called after a commit that made a delivery due at once (a retry): the dispatcher's `nudge`. */
  onDeliveriesDue?: () => void;
  /** The clock: when a rotated-out secret stops signing. @default () => new Date() */
  now?: () => Date;
}

/** Webhooks of a workspace and their deliveries. Every query is scoped to the caller's workspace. */
export class WebhookService {
  readonly #db: Kysely<Database>;
  readonly #allowPrivateUrls: boolean;
  readonly #onDeliveriesDue: () => void;
  readonly #now: () => Date;

  constructor(options: WebhookServiceOptions) {
    this.#db = options.db;
    this.#allowPrivateUrls = options.allowPrivateUrls ?? false;
    this.#onDeliveriesDue = options.onDeliveriesDue ?? (() => {});
    this.#now = options.now ?? (() => new Date());
  }

  /** The URL as it is stored, or a 400 naming `url` when it may not be delivered to. */
  async #checkUrl(url: string): Promise<string> {
    const checked = await assertOutboundUrl(url, { allowPrivate: this.#allowPrivateUrls }).catch(
      (error: unknown) => {
        if (!(error instanceof OutboundUrlError)) throw error;
        throw new InvalidRequestError(`url: ${error.message}`, { field: 'url', problem: error.problem });
      },
    );
    return checked.toString();
  }

  /** Registers a webhook; its signing secret is returned this once. */
  async create(caller: Caller, options: CreateWebhookOptions): Promise<CreatedWebhook> {
    const url = await this.#checkUrl(options.url);
    const secret = generateWebhookSecret();
    const events = [...new Set(options.events ?? WEBHOOK_EVENTS)];
    const row = await this.#db
      .insertInto('webhooks')
      .values({
        id: newId('webhook'),
        workspace_id: caller.workspaceId,
        url,
        secret,
        events: JSON.stringify(events),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { webhook: toWebhookObject(row, this.#now()), secret };
  }

  /**
   * Changes a webhook's URL, events or `enabled`. Disabling it ends its pending deliveries `failed` in the same
   * transaction (as deleting does): a disabled webhook records no new deliveries, so none of its events wait
   * for it to be enabled again; each finished delivery can be sent again with `retryDelivery` once it is.
   */
  async update(caller: Caller, webhookId: string, options: UpdateWebhookOptions): Promise<WebhookObject> {
    const changes: { url?: string; events?: string; enabled?: boolean } = {};
    if (options.url !== undefined) changes.url = await this.#checkUrl(options.url);
    if (options.events !== undefined) changes.events = JSON.stringify([...new Set(options.events)]);
    if (options.enabled !== undefined) changes.enabled = options.enabled;
    if (Object.keys(changes).length === 0) {
      throw new InvalidRequestError('Send at least one of url, events and enabled.');
    }
    return this.#db.transaction().execute(async (tx) => {
      const row = await tx
        .updateTable('webhooks')
        .set(changes)
        .where('id', '=', webhookId)
        .where('workspace_id', '=', caller.workspaceId)
        .returningAll()
        .executeTakeFirst();
      if (!row) throw new NotFoundError('webhook', webhookId);
      if (!row.enabled) {
        await tx
          .updateTable('webhook_deliveries')
          .set({ status: DeliveryStatus.failed, last_error: DISABLED_ERROR })
          .where('webhook_id', '=', webhookId)
          .where('status', '=', DeliveryStatus.pending)
          .execute();
      }
      return toWebhookObject(row, this.#now());
    });
  }

  /**
   * Gives a webhook a new signing secret, returned this once. The one it replaces keeps signing beside it for
   * `PREVIOUS_SECRET_SIGNS_MS`, so a receiver verifying with either accepts; a rotation within that window
   * drops the older one (only one previous secret is kept).
   */
  async rotateSecret(caller: Caller, webhookId: string): Promise<RotatedWebhookSecret> {
    const secret = generateWebhookSecret();
    const expiresAt = new Date(this.#now().getTime() + PREVIOUS_SECRET_SIGNS_MS);
    const row = await this.#db
      .updateTable('webhooks')
      // The right-hand `secret` is the row's value before this update.
      .set((eb) => ({ previous_secret: eb.ref('secret'), previous_secret_expires_at: expiresAt, secret }))
      .where('id', '=', webhookId)
      .where('workspace_id', '=', caller.workspaceId)
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new NotFoundError('webhook', webhookId);
    return { webhook: toWebhookObject(row, this.#now()), secret };
  }

  /**
   * Sends a finished (`delivered` or `failed`) delivery again: it becomes `pending`, due now, with a fresh
   * retry schedule, and keeps its id, which receivers deduplicate on. A pending delivery is a 409
   * `delivery_pending`; one of a disabled webhook a 409 `webhook_disabled`.
   */
  async retryDelivery(caller: Caller, webhookId: string, deliveryId: string): Promise<WebhookDeliveryObject> {
    await this.get(caller, webhookId);
    const row = await this.#db
      .updateTable('webhook_deliveries')
      .set({
        status: DeliveryStatus.pending,
        attempts: 0,
        next_attempt_at: sql<Date>`now()`,
        last_status_code: null,
        last_error: null,
        delivered_at: null,
      })
      .where('id', '=', deliveryId)
      .where('webhook_id', '=', webhookId)
      .where('workspace_id', '=', caller.workspaceId)
      .where('status', '<>', DeliveryStatus.pending)
      .where((eb) =>
        eb.exists(
          eb.selectFrom('webhooks').select('id').where('id', '=', webhookId).where('enabled', '=', true),
        ),
      )
      .returningAll()
      .executeTakeFirst();
    if (row) {
      this.#onDeliveriesDue();
      return toDeliveryObject(row);
    }
    // Nothing changed: say why.
    const delivery = await this.#db
      .selectFrom('webhook_deliveries')
      .select(['status', 'next_attempt_at'])
      .where('id', '=', deliveryId)
      .where('webhook_id', '=', webhookId)
      .where('workspace_id', '=', caller.workspaceId)
      .executeTakeFirst();
    if (!delivery) throw new NotFoundError('delivery', deliveryId);
    if (!(await this.get(caller, webhookId)).enabled) {
      throw new ConflictError(
        'webhook_disabled',
        'The webhook is disabled: enable it, then retry the delivery.',
      );
    }
    throw new ConflictError(
      'delivery_pending',
      'This delivery is still pending: it is sent on its retry schedule; retry it once it is delivered or failed.',
      { nextAttemptAt: delivery.next_attempt_at.toISOString() },
    );
  }

  /** The workspace's webhooks, newest first, without their secrets. */
  async list(caller: Caller, options: { limit: number; cursor?: string }): Promise<Page<WebhookObject>> {
    let query = this.#db.selectFrom('webhooks').selectAll().where('workspace_id', '=', caller.workspaceId);
    if (options.cursor) query = query.where('id', '<', options.cursor);
    const rows = await query
      .orderBy('id', 'desc')
      .limit(options.limit + 1)
      .execute();
    const now = this.#now();
    return pageOf(
      rows.map((row) => toWebhookObject(row, now)),
      options.limit,
    );
  }

  async get(caller: Caller, webhookId: string): Promise<WebhookObject> {
    const row = await this.#db
      .selectFrom('webhooks')
      .selectAll()
      .where('id', '=', webhookId)
      .where('workspace_id', '=', caller.workspaceId)
      .executeTakeFirst();
    if (!row) throw new NotFoundError('webhook', webhookId);
    return toWebhookObject(row, this.#now());
  }

  /**
   * Deletes a webhook; its pending deliveries end `failed`. Its deliveries are kept until their retention ends
   * (the dispatcher prunes them) but no longer listed: the webhook they belong to answers 404.
   */
  async delete(caller: Caller, webhookId: string): Promise<void> {
    await this.#db.transaction().execute(async (tx) => {
      const deleted = await tx
        .deleteFrom('webhooks')
        .where('id', '=', webhookId)
        .where('workspace_id', '=', caller.workspaceId)
        .executeTakeFirst();
      if (deleted.numDeletedRows === 0n) throw new NotFoundError('webhook', webhookId);
      await tx
        .updateTable('webhook_deliveries')
        .set({ status: DeliveryStatus.failed, last_error: 'The webhook was deleted.' })
        .where('webhook_id', '=', webhookId)
        .where('status', '=', DeliveryStatus.pending)
        .execute();
    });
  }

  /** A webhook's deliveries, newest first. */
  async deliveries(
    caller: Caller,
    webhookId: string,
    options: { limit: number; cursor?: string },
  ): Promise<Page<WebhookDeliveryObject>> {
    await this.get(caller, webhookId);
    let query = this.#db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('webhook_id', '=', webhookId)
      .where('workspace_id', '=', caller.workspaceId);
    if (options.cursor) query = query.where('id', '<', options.cursor);
    const rows = await query
      .orderBy('id', 'desc')
      .limit(options.limit + 1)
      .execute();
    return pageOf(rows.map(toDeliveryObject), options.limit);
  }
}

/** What a delivery reports: the event, its run, its time. */
export interface WebhookDeliveryOptions {
  workspaceId: string;
  event: WebhookEvent;
  /** The run object as the API shows it (JSON-serializable); its `id` becomes the delivery's `run_id`. */
  run: unknown;
  /** The event's time. @default now */
  timestamp?: Date;
}

/**
 * The ids of the workspace's enabled webhooks that subscribe to `event`, in id order, as a `text[]`
 * expression: a status change reads it in the statement that appends its events (`Lifecycle`).
 */
export function subscribedWebhookIds(workspaceId: string, event: WebhookEvent): RawBuilder<string[] | null> {
  return sql<
    string[] | null
  >`(select array_agg(id order by id) from webhooks where workspace_id = ${workspaceId}
    and enabled = true and events @> ${JSON.stringify([event])}::jsonb)`;
}

/**
 * The outbox: records one `pending` delivery of `event` for each of `webhookIds` (the webhooks subscribed to
 * it, `subscribedWebhookIds`), inside the caller's transaction, so the delivery commits (or rolls back) with
 * the status change it reports. Returns the number of deliveries recorded. The dispatcher sends them after
 * commit.
 */
export async function recordWebhookDeliveries(
  tx: Transaction<Database> | Kysely<Database>,
  webhookIds: readonly string[],
  options: WebhookDeliveryOptions,
): Promise<number> {
  if (webhookIds.length === 0) return 0;
  const payload: WebhookPayload = {
    type: options.event,
    timestamp: (options.timestamp ?? new Date()).toISOString(),
    data: { run: options.run },
  };
  const text = JSON.stringify(payload);
  const runId = (options.run as { id?: unknown } | null)?.id;
  await tx
    .insertInto('webhook_deliveries')
    .values(
      webhookIds.map((webhookId) => ({
        id: newId('delivery'),
        webhook_id: webhookId,
        workspace_id: options.workspaceId,
        run_id: typeof runId === 'string' ? runId : null,
        event: options.event,
        payload: text,
        status: DeliveryStatus.pending,
      })),
    )
    .execute();
  return webhookIds.length;
}
