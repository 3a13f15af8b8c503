import { randomBytes } from 'node:crypto';
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import type { Caller } from '../auth/auth-service.ts';
import { InvalidRequestError, NotFoundError } from '../errors.ts';
import { newId } from '../ids.ts';
import { assertOutboundUrl, OutboundUrlError } from '../net/outbound-url.ts';
import type { Page } from '../protocol/wire.ts';
import type { WebhookEvent } from '../protocol/webhook.ts';
import {
  DeliveryStatus,
  WEBHOOK_EVENTS,
  type CreatedWebhook,
  type CreateWebhookOptions,
  type WebhookDeliveryObject,
  type WebhookObject,
  type WebhookPayload,
} from '../protocol/webhook.ts';
import type { Database, WebhookDeliveryRow, WebhookRow } from '../store/schema.ts';

const toWebhookObject = (row: WebhookRow): WebhookObject => ({
  id: row.id,
  url: row.url,
  events: row.events as WebhookEvent[],
  enabled: row.enabled,
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
}

/** Webhooks of a workspace and their deliveries. Every query is scoped to the caller's workspace. */
export class WebhookService {
  readonly #db: Kysely<Database>;
  readonly #allowPrivateUrls: boolean;

  constructor(options: WebhookServiceOptions) {
    this.#db = options.db;
    this.#allowPrivateUrls = options.allowPrivateUrls ?? false;
  }

  /** Registers a webhook; its signing secret is returned this once. */
  async create(caller: Caller, options: CreateWebhookOptions): Promise<CreatedWebhook> {
    const url = await assertOutboundUrl(options.url, { allowPrivate: this.#allowPrivateUrls }).catch(
      (error: unknown) => {
        if (!(error instanceof OutboundUrlError)) throw error;
        throw new InvalidRequestError(`url: ${error.message}`, { field: 'url', problem: error.problem });
      },
    );
    const secret = generateWebhookSecret();
    const events = [...new Set(options.events ?? WEBHOOK_EVENTS)];
    const row = await this.#db
      .insertInto('webhooks')
      .values({
        id: newId('webhook'),
        workspace_id: caller.workspaceId,
        url: url.toString(),
        secret,
        events: JSON.stringify(events),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { webhook: toWebhookObject(row), secret };
  }

  /** The workspace's webhooks, newest first, without their secrets. */
  async list(caller: Caller, options: { limit: number; cursor?: string }): Promise<Page<WebhookObject>> {
    let query = this.#db.selectFrom('webhooks').selectAll().where('workspace_id', '=', caller.workspaceId);
    if (options.cursor) query = query.where('id', '<', options.cursor);
    const rows = await query
      .orderBy('id', 'desc')
      .limit(options.limit + 1)
      .execute();
    return pageOf(rows.map(toWebhookObject), options.limit);
  }

  async get(caller: Caller, webhookId: string): Promise<WebhookObject> {
    const row = await this.#db
      .selectFrom('webhooks')
      .selectAll()
      .where('id', '=', webhookId)
      .where('workspace_id', '=', caller.workspaceId)
      .executeTakeFirst();
    if (!row) throw new NotFoundError('webhook', webhookId);
    return toWebhookObject(row);
  }

  /** Deletes a webhook; its pending deliveries end `failed`, its delivery history stays listable by id. */
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
