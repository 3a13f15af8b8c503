import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { Webhook } from 'standardwebhooks';
import type { Metrics } from '../metrics.ts';
import { delayAfterPass, PassLoop, retryDelay } from '../pass-loop.ts';
import { assertOutboundUrl } from '../net/outbound-url.ts';
import { publicOnlyFetch } from '../net/public-fetch.ts';
import type { Database } from '../store/schema.ts';
import { DeliveryStatus } from '../protocol/webhook.ts';

/**
 * Delays before the 2nd, 3rd, … attempt of a delivery: about a day in total (≈ 22 h over nine attempts),
 * after which a delivery that never got a 2xx ends `failed`.
 */
export const DEFAULT_RETRY_SCHEDULE_MS: readonly number[] = [
  5_000,
  30_000,
  2 * 60_000,
  10 * 60_000,
  60 * 60_000,
  3 * 60 * 60_000,
  6 * 60 * 60_000,
  12 * 60 * 60_000,
];

/**
 * The longest the dispatcher sleeps. It wakes at the next due attempt it read and at once when nudged; this
 * bounds how late it finds deliveries another instance recorded and could not send (it went away).
 */
const DEFAULT_POLL_INTERVAL_MS = 10_000;
/** How long one POST may take, answer included. */
const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * How long a claim holds a delivery: a dispatcher that dies after claiming leaves the delivery due again
 * this long later, so another one retries it. Longer than the request timeout.
 */
const DEFAULT_CLAIM_LEASE_MS = 60_000;
/** Deliveries in flight at once, each claimed as a slot frees. */
const DEFAULT_BATCH_SIZE = 50;
/** Deliveries of one webhook in flight at once: a receiver that never answers holds this many slots at most. */
const DEFAULT_PER_WEBHOOK = 10;
/** Each delay is spread ±20% so receivers that failed together are not retried in lockstep. */
const DEFAULT_JITTER = 0.2;
/** How much of a failed answer's body is kept in `last_error`. */
const ERROR_BODY_CHARS = 500;
/** How long `stop()` waits for deliveries in flight; their claims expire and another dispatcher retries them. */
const STOP_WAIT_MS = 15_000;
/** How long a finished delivery is kept (`OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS`'s default, 30 days). */
const DEFAULT_DELIVERY_RETENTION_MS = 30 * 24 * 60 * 60_000;
/** How often each dispatcher deletes finished deliveries past their retention. */
const DEFAULT_PRUNE_INTERVAL_MS = 60 * 60_000;
/**
 * Deliveries deleted per statement, and statements per prune: 10,000 an hour per instance, far above what a
 * workspace records, so a backlog (a lower retention set on a long history) drains over a few hours.
 */
const PRUNE_BATCH = 1_000;
const PRUNE_BATCHES = 10;

export interface WebhookDispatcherOptions {
  db: Kysely<Database>;
  logger: Logger;
  metrics?: Metrics;
  /**
   * Deliver to private and loopback addresses. Checked before every attempt, and again on the address each
   * connection dials (`publicOnlyFetch`). @default false
   */
  allowPrivateUrls?: boolean;
  /**
   * How the check before each attempt resolves a host (a test stands in a DNS that answers the check one
   * address and the connection another). @default `dns.lookup`
   */
  resolve?: (hostname: string) => Promise<string[]>;
  /** The longest the dispatcher sleeps between passes. @default 10000 */
  pollIntervalMs?: number;
  /** Delay before each retry; a delivery gets `retrySchedule.length + 1` attempts. @default DEFAULT_RETRY_SCHEDULE_MS */
  retrySchedule?: readonly number[];
  /** Fraction each retry delay is spread by. @default 0.2 */
  jitter?: number;
  /** How long one POST may take. @default 10000, or half `claimLeaseMs` when that is shorter */
  timeoutMs?: number;
  /** @default 60000 */
  claimLeaseMs?: number;
  /** Deliveries in flight at once (and claimed per statement at most). @default 50 */
  batchSize?: number;
  /** Deliveries of one webhook in flight at once. @default 10 */
  perWebhook?: number;
  /** The clock. @default () => new Date() */
  now?: () => Date;
  /** @default Math.random */
  random?: () => number;
  /** @default `publicOnlyFetch()`, or `globalThis.fetch` with `allowPrivateUrls` */
  fetch?: typeof fetch;
  /** How long a finished (delivered or failed) delivery is kept. @default DEFAULT_DELIVERY_RETENTION_MS */
  deliveryRetentionMs?: number;
  /** How often a pass deletes finished deliveries past their retention. @default one hour */
  pruneIntervalMs?: number;
}

interface ClaimedDelivery {
  id: string;
  webhook_id: string;
  attempts: number;
  payload: string;
  /** The webhook's URL and secret; null when it was deleted or disabled since. */
  url: string | null;
  secret: string | null;
  /** The secret a rotation replaced, while it still signs beside `secret`; else null. */
  previous_secret: string | null;
  /** The `next_attempt_at` this claim wrote: the fence of its attempt's update. */
  leaseUntil: Date;
}

export type AttemptResult = 'delivered' | 'retry' | 'failed';

/**
 * Sends the webhook outbox. Any number of dispatchers (one per instance) share the table: each claims due
 * deliveries with `FOR UPDATE SKIP LOCKED`, pushing their `next_attempt_at` out by a lease in the same
 * statement, so a delivery is sent by one dispatcher at a time and a dead dispatcher's claims come due again.
 * Delivery is at least once: a receiver deduplicates by the `webhook-id` header (the delivery id).
 *
 * Between passes a dispatcher sleeps until the earliest due attempt in the table (a retry's time, an expired
 * claim), at most `pollIntervalMs`; `nudge()` after a commit that recorded deliveries wakes it at once.
 *
 * Up to `batchSize` deliveries are in flight at once, at most `perWebhook` of them to one webhook, and a pass
 * does not wait for their answers: when one is recorded its slot is claimed again. So a receiver that never
 * answers holds a few slots for its timeout, not the batch, and every other webhook's deliveries go on past
 * it, however many of its own are due.
 */
export class WebhookDispatcher {
  readonly #db: Kysely<Database>;
  readonly #logger: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #allowPrivate: boolean;
  readonly #resolve: ((hostname: string) => Promise<string[]>) | undefined;
  readonly #pollIntervalMs: number;
  readonly #schedule: readonly number[];
  readonly #jitter: number;
  readonly #timeoutMs: number;
  readonly #claimLeaseMs: number;
  readonly #batchSize: number;
  readonly #perWebhook: number;
  readonly #now: () => Date;
  readonly #random: () => number;
  readonly #fetch: typeof fetch;
  readonly #retentionMs: number;
  readonly #pruneIntervalMs: number;
  /** When this dispatcher last deleted expired deliveries (0: not yet, so its first pass does). */
  #lastPrune = 0;
  readonly #loop = new PassLoop(() => this.#runPass());
  /** The deliveries being sent, each until its attempt is recorded. */
  readonly #sending = new Set<Promise<void>>();
  /** How many deliveries of each webhook are being sent. */
  readonly #sendingTo = new Map<string, number>();
  /** The last pass found every slot taken: the next attempt recorded frees one and asks for another pass. */
  #waitingForSlot = false;
  /**
   * Webhooks at their `perWebhook` limit whose due deliveries the last pass left unclaimed: the next attempt
   * recorded to one of them makes room and asks for another pass. An attempt to any other webhook does not.
   */
  readonly #waitingForWebhook = new Set<string>();
  /** Webhooks with more deliveries due than room for them: claimed on their own, as room frees. */
  readonly #backlogged = new Set<string>();

  constructor(options: WebhookDispatcherOptions) {
    this.#db = options.db;
    this.#logger = options.logger;
    this.#metrics = options.metrics;
    this.#allowPrivate = options.allowPrivateUrls ?? false;
    this.#resolve = options.resolve;
    this.#pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.#schedule = options.retrySchedule ?? DEFAULT_RETRY_SCHEDULE_MS;
    this.#jitter = options.jitter ?? DEFAULT_JITTER;
    this.#claimLeaseMs = options.claimLeaseMs ?? DEFAULT_CLAIM_LEASE_MS;
    // An attempt ends well within its claim, so it is recorded before another dispatcher may take the delivery.
    this.#timeoutMs = options.timeoutMs ?? Math.min(DEFAULT_TIMEOUT_MS, Math.floor(this.#claimLeaseMs / 2));
    this.#batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
    this.#perWebhook = options.perWebhook ?? DEFAULT_PER_WEBHOOK;
    this.#now = options.now ?? (() => new Date());
    this.#random = options.random ?? Math.random;
    this.#fetch = options.fetch ?? (this.#allowPrivate ? globalThis.fetch : publicOnlyFetch());
    this.#retentionMs = options.deliveryRetentionMs ?? DEFAULT_DELIVERY_RETENTION_MS;
    this.#pruneIntervalMs = options.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
  }

  /** Starts looking for due deliveries. */
  start(): void {
    this.#loop.start();
  }

  /** Stops looking and waits (bounded) for the pass and the deliveries in flight. */
  async stop(): Promise<void> {
    this.#loop.stop();
    const inFlight = [this.#loop.inFlight, ...this.#sending].filter(Boolean);
    if (inFlight.length === 0) return;
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(inFlight),
      new Promise((resolve) => (timeout = setTimeout(resolve, STOP_WAIT_MS))),
    ]);
    clearTimeout(timeout);
  }

  /** Looks for due deliveries now (call after committing a transaction that recorded some). */
  nudge(): void {
    this.#loop.nudge();
  }

  /**
   * Claims as many due deliveries as there are free slots and starts sending them, without waiting for their
   * answers. Returns how many it claimed. A pass of `start()`'s loop calls it; a test may too (`settled()`
   * then waits for the attempts).
   *
   * A webhook with more deliveries due than it has room for (`#backlogged`) is claimed on its own, as many as
   * it has room for; every other webhook's in one claim that leaves it out. Only the claim that finds such a
   * backlog can take more of it than fits, and gives those back.
   */
  async claimDue(): Promise<number> {
    let free = this.#batchSize - this.#sending.size;
    if (free <= 0) return 0;
    const full = [...this.#sendingTo].filter(([, count]) => count >= this.#perWebhook).map(([id]) => id);
    // Their deliveries may be due: an attempt recorded to one of them from now on makes room (noted before the
    // claim awaits, so an attempt recorded meanwhile is not missed).
    for (const webhookId of full) this.#waitingForWebhook.add(webhookId);
    // So are a backlogged webhook's, whatever room it has now.
    for (const webhookId of this.#backlogged) this.#waitingForWebhook.add(webhookId);
    let claimedCount = 0;
    for (const webhookId of [...this.#backlogged]) {
      const room = Math.min(free, this.#perWebhook - (this.#sendingTo.get(webhookId) ?? 0));
      if (room <= 0) continue;
      const claimed = await this.#claim(room, { only: webhookId });
      for (const delivery of claimed) this.#send(delivery, this.#sendingTo.get(webhookId) ?? 0);
      claimedCount += claimed.length;
      free -= claimed.length;
      if (claimed.length < room) this.#backlogged.delete(webhookId);
    }
    if (free <= 0) return claimedCount;
    const claimed = await this.#claim(free, { skip: [...new Set([...full, ...this.#backlogged])] });
    // The claim that finds a backlog may take more of it than its webhook has room for: those go back, due.
    const over: ClaimedDelivery[] = [];
    for (const delivery of claimed) {
      const sendingTo = this.#sendingTo.get(delivery.webhook_id) ?? 0;
      if (sendingTo >= this.#perWebhook) over.push(delivery);
      else this.#send(delivery, sendingTo);
    }
    if (over.length > 0) {
      for (const delivery of over) {
        this.#backlogged.add(delivery.webhook_id);
        this.#waitingForWebhook.add(delivery.webhook_id);
      }
      await this.#unclaim(over);
    }
    return claimedCount + claimed.length;
  }

  #send(delivery: ClaimedDelivery, sendingTo: number): void {
    this.#sendingTo.set(delivery.webhook_id, sendingTo + 1);
    const sent = () => {
      this.#sending.delete(sending);
      const left = (this.#sendingTo.get(delivery.webhook_id) ?? 1) - 1;
      if (left > 0) this.#sendingTo.set(delivery.webhook_id, left);
      else this.#sendingTo.delete(delivery.webhook_id);
    };
    const sending: Promise<void> = this.#deliver(delivery).then(
      (result) => {
        sent();
        // The room it frees is claimed again if a pass waits for it; a retry may be due before the loop's
        // next wake-up.
        const freesRoom = this.#waitingForSlot || this.#waitingForWebhook.has(delivery.webhook_id);
        if (freesRoom || result === 'retry') this.#loop.nudge();
      },
      (error: unknown) => {
        sent();
        // The attempt could not be recorded (the database is down): its claim runs out and it is retried.
        this.#logger.warn({ err: error, deliveryId: delivery.id }, 'recording a webhook attempt failed');
      },
    );
    this.#sending.add(sending);
  }

  /** Gives claimed deliveries back, due now, for the next claim (of any dispatcher) to take. */
  async #unclaim(deliveries: ClaimedDelivery[]): Promise<void> {
    await this.#db
      .updateTable('webhook_deliveries')
      .set({ next_attempt_at: this.#now() })
      .where(
        'id',
        'in',
        deliveries.map((delivery) => delivery.id),
      )
      .where('status', '=', DeliveryStatus.pending)
      .where('next_attempt_at', '=', deliveries[0]!.leaseUntil)
      .execute();
  }

  /** Resolves once every delivery in flight has its attempt recorded. */
  async settled(): Promise<void> {
    await Promise.all([...this.#sending]);
  }

  /** Claims what is due, sends it and waits until every attempt in flight is recorded. Returns how many it claimed. */
  async dispatchDue(): Promise<number> {
    const claimed = await this.claimDue();
    await this.settled();
    return claimed;
  }

  /**
   * Deletes finished deliveries (delivered or failed) recorded more than the retention ago, oldest first, by
   * the database's clock; a pending delivery is owed to its receiver and never deleted. Instances pruning at
   * once skip each other's rows. Returns how many it deleted.
   */
  async pruneDeliveries(): Promise<number> {
    let deleted = 0;
    for (let batch = 0; batch < PRUNE_BATCHES; batch++) {
      // The same predicate as the partial index `webhook_deliveries_finished_idx`.
      const result = await sql`
        delete from webhook_deliveries where id in (
          select id from webhook_deliveries
          where status <> 'pending'
            and created_at < now() - make_interval(secs => ${this.#retentionMs / 1000})
          order by created_at
          limit ${PRUNE_BATCH}
          for update skip locked
        )`.execute(this.#db);
      const rows = Number(result.numAffectedRows ?? 0n);
      deleted += rows;
      if (rows < PRUNE_BATCH) break;
    }
    if (deleted > 0) {
      this.#logger.info({ deliveries: deleted }, 'deleted webhook deliveries past their retention');
    }
    return deleted;
  }

  /** Prunes once `pruneIntervalMs` has passed since the last prune; a failure waits for the next interval. */
  async #pruneWhenDue(passBegan: Date): Promise<void> {
    if (passBegan.getTime() - this.#lastPrune < this.#pruneIntervalMs) return;
    this.#lastPrune = passBegan.getTime();
    try {
      await this.pruneDeliveries();
    } catch (error) {
      this.#logger.warn({ err: error }, 'deleting webhook deliveries past their retention failed');
    }
  }

  /** Claims what is due into the free slots; returns how long to sleep before the next pass. */
  async #runPass(): Promise<number> {
    try {
      const passBegan = this.#now();
      // A claim that fills every free slot means more may be due: claim again, until one comes back short
      // or no slot is free. Then a recorded delivery asks for the next pass.
      this.#waitingForSlot = false;
      this.#waitingForWebhook.clear();
      for (;;) {
        const free = this.#batchSize - this.#sending.size;
        if (free === 0) {
          this.#waitingForSlot = true;
          return this.#pollIntervalMs;
        }
        if (!this.#loop.running || (await this.claimDue()) < free) break;
      }
      // After the claim: what is due goes out first.
      await this.#pruneWhenDue(passBegan);
      const next = await this.#nextDue();
      return delayAfterPass({ next, passBegan, now: this.#now(), maxMs: this.#pollIntervalMs });
    } catch (error) {
      this.#logger.warn({ err: error }, 'webhook dispatch pass failed; retrying soon');
      return retryDelay(this.#pollIntervalMs);
    }
  }

  /** The earliest time a pending delivery is due: a retry, a first attempt, or a claim's lease running out. */
  async #nextDue(): Promise<Date | null> {
    const { next } = await this.#db
      .selectFrom('webhook_deliveries')
      .select((eb) => eb.fn.min('next_attempt_at').as('next'))
      .where('status', '=', DeliveryStatus.pending)
      .executeTakeFirstOrThrow();
    return next === null ? null : new Date(next);
  }

  /** Claims up to `limit` due deliveries, of webhook `only` or of any but those in `skip`, for a lease. */
  async #claim(limit: number, which: { only?: string; skip?: string[] }): Promise<ClaimedDelivery[]> {
    const { only, skip = [] } = which;
    const now = this.#now();
    const leaseUntil = new Date(now.getTime() + this.#claimLeaseMs);
    const result = await sql<Omit<ClaimedDelivery, 'leaseUntil'>>`
      with due as (
        select id, webhook_id from webhook_deliveries
        where status = 'pending' and next_attempt_at <= ${now}
          ${only !== undefined ? sql`and webhook_id = ${only}` : sql``}
          ${skip.length > 0 ? sql`and webhook_id <> all(${skip}::text[])` : sql``}
        order by next_attempt_at
        limit ${limit}
        for update skip locked
      )
      update webhook_deliveries d
      set next_attempt_at = ${leaseUntil}
      from due left join webhooks w on w.id = due.webhook_id and w.enabled
      where d.id = due.id
      returning d.id, d.webhook_id, d.attempts, d.payload::text as payload, w.url, w.secret,
        case when w.previous_secret_expires_at > ${now} then w.previous_secret end as previous_secret`.execute(
      this.#db,
    );
    return result.rows.map((row) => ({ ...row, leaseUntil }));
  }

  async #deliver(delivery: ClaimedDelivery): Promise<AttemptResult> {
    if (!delivery.url || !delivery.secret) {
      return this.#record(delivery, {
        attempted: false,
        statusCode: null,
        error: 'The webhook was deleted or disabled.',
      });
    }
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      await assertOutboundUrl(delivery.url, { allowPrivate: this.#allowPrivate, resolve: this.#resolve });
      const timestamp = this.#now();
      // After a rotation, a signature by each secret (space-separated, as Standard Webhooks allows): a
      // receiver verifying with either one accepts.
      const signature = [delivery.secret, delivery.previous_secret]
        .filter((secret) => secret !== null)
        .map((secret) => new Webhook(secret).sign(delivery.id, timestamp, delivery.payload))
        .join(' ');
      const response = await this.#fetch(delivery.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'Outrun-Webhooks/1',
          'webhook-id': delivery.id,
          'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
          'webhook-signature': signature,
        },
        body: delivery.payload,
        // A redirect is an answer, not a place to send the payload again.
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      statusCode = response.status;
      if (response.status < 200 || response.status >= 300) {
        error = `HTTP ${response.status}${await readSnippet(response)}`;
      } else {
        await response.body?.cancel();
      }
    } catch (caught) {
      error = describeError(caught);
    }
    return this.#record(delivery, { attempted: true, statusCode, error });
  }

  async #record(
    delivery: ClaimedDelivery,
    attempt: { attempted: boolean; statusCode: number | null; error: string | null },
  ): Promise<AttemptResult> {
    const now = this.#now();
    const attempts = attempt.attempted ? delivery.attempts + 1 : delivery.attempts;
    const delay = this.#schedule[attempts - 1];
    const result: AttemptResult =
      attempt.error === null ? 'delivered' : !attempt.attempted || delay === undefined ? 'failed' : 'retry';
    // The update is fenced on this claim's lease: if the claim expired and another dispatcher took the
    // delivery meanwhile, this stale attempt changes nothing.
    await this.#db
      .updateTable('webhook_deliveries')
      .set({
        status: result === 'retry' ? DeliveryStatus.pending : result,
        attempts,
        next_attempt_at: result === 'retry' ? new Date(now.getTime() + this.#withJitter(delay!)) : now,
        last_status_code: attempt.statusCode,
        last_error: attempt.error,
        delivered_at: result === 'delivered' ? now : null,
      })
      .where('id', '=', delivery.id)
      .where('status', '=', DeliveryStatus.pending)
      .where('next_attempt_at', '=', delivery.leaseUntil)
      .execute();
    this.#metrics?.webhookDeliveries.inc({ result });
    if (result !== 'delivered') {
      this.#logger.info(
        { deliveryId: delivery.id, attempts, statusCode: attempt.statusCode, error: attempt.error, result },
        'webhook delivery attempt failed',
      );
    }
    return result;
  }

  #withJitter(delayMs: number): number {
    return Math.max(0, Math.round(delayMs * (1 + this.#jitter * (this.#random() * 2 - 1))));
  }
}

/** The start of a failed answer's body, for `last_error`; never more than a few hundred characters read. */
async function readSnippet(response: Response): Promise<string> {
  try {
    const reader = response.body?.getReader();
    if (!reader) return '';
    let text = '';
    const decoder = new TextDecoder();
    while (text.length < ERROR_BODY_CHARS) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    await reader.cancel().catch(() => {});
    const trimmed = text.trim().slice(0, ERROR_BODY_CHARS);
    return trimmed ? `: ${trimmed}` : '';
  } catch {
    return '';
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    if (error.name === 'TimeoutError') return 'The request timed out.';
    const cause = (error as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    return `${error.message}${detail}`.slice(0, ERROR_BODY_CHARS);
  }
  return String(error).slice(0, ERROR_BODY_CHARS);
}
