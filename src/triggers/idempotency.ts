import { createHash } from 'node:crypto';
import type { ExpressionBuilder, Kysely, Transaction } from 'kysely';
import { ConflictError, IdempotencyKeyReusedError, InvalidRequestError } from '../errors.ts';
import type { Database } from '../store/schema.ts';

/** How long a key answers with its first response; older keys are ignored and deleted. */
const KEY_TTL_MS = 24 * 60 * 60_000;
/**
 * A claim this old with no response belongs to a request that died; the key may be taken again. A run start
 * answers in the transaction that begins its run, so its claim is left unanswered only when no run began.
 */
const ABANDONED_CLAIM_MS = 60_000;
/** How long a second request with a key in progress waits for the first one's answer before a 409. */
const IN_PROGRESS_WAIT_MS = 10_000;
/** First and longest pause between looks at a key in progress. */
const POLL_MIN_MS = 20;
const POLL_MAX_MS = 250;
/** Expired keys are swept at most this often per instance. */
const SWEEP_INTERVAL_MS = 60_000;
const MAX_KEY_LENGTH = 255;
/** Printable ASCII, space to tilde. */
const KEY_PATTERN = /^[\x20-\x7e]+$/;

/** What a handler answers: a status and a JSON body, and optionally its own way of sending (a stream). */
export interface IdempotentResponse {
  status: number;
  /** The JSON body stored for replays (and sent, unless `send` is given). */
  body: unknown;
  /** Sends the first response differently from its replay (the run's event stream); called after storing. */
  send?: () => Promise<unknown>;
}

export interface IdempotentRequest {
  workspaceId: string;
  /** The caller: keys are scoped to the user, so another user's key of the same name is another key. */
  userId: string;
  /** The `Idempotency-Key` header; absent, the handler just runs. */
  key: string | undefined;
  method: string;
  /** The path with its ids, without the query string. */
  path: string;
  body: unknown;
}

/** The stored answer of a key: what a replay answers. */
export interface StoredResponse {
  status: number;
  body: unknown;
}

/**
 * The hold of the request that claimed a key, handed to its handler. A handler that creates something in a
 * transaction stores its answer there (`answerIn`), so what it created and the key's answer commit together:
 * a request that dies after that commit has answered, and a retry gets that answer, never a second creation.
 */
export interface IdempotencyClaim {
  /**
   * Stores `response` as the key's answer in `tx`. The handler then returns the same response; its
   * transaction commits before the handler returns, or the handler fails (and the key is released). Throws
   * `idempotency_key_in_progress` (409) when the claim is no longer this request's: it was held so long that
   * another request took it as abandoned.
   */
  answerIn(tx: Transaction<Database>, response: StoredResponse): Promise<void>;
}

export interface IdempotencyKeysOptions {
  db: Kysely<Database>;
  /** @default () => new Date() */
  now?: () => Date;
  /** @default 10000 */
  inProgressWaitMs?: number;
}

/**
 * `Idempotency-Key` handling for requests that create something. A key belongs to its caller: the workspace,
 * the user and the key's text. The key is claimed by inserting its row (the insert is the gate; `ON CONFLICT
 * DO NOTHING` picks one winner among concurrent requests); the winner runs the handler and stores its
 * response, in the handler's own transaction when it has one (`IdempotencyClaim`), every other request with
 * the key waits for that response and answers it. A different request under the same key is a 422; a handler
 * that fails releases the key.
 */
export class IdempotencyKeys {
  readonly #db: Kysely<Database>;
  readonly #now: () => Date;
  readonly #waitMs: number;
  #lastSweep = 0;

  constructor(options: IdempotencyKeysOptions) {
    this.#db = options.db;
    this.#now = options.now ?? (() => new Date());
    this.#waitMs = options.inProgressWaitMs ?? IN_PROGRESS_WAIT_MS;
  }

  /**
   * Runs `handler` once per key: the first request's response is returned to every request with the same
   * key and request within 24 h (`replayed: true`, no `send`). `handler` gets the claim (null without a key).
   */
  async run(
    request: IdempotentRequest,
    handler: (claim: IdempotencyClaim | null) => Promise<IdempotentResponse>,
  ): Promise<IdempotentResponse & { replayed: boolean }> {
    if (request.key === undefined) return { ...(await handler(null)), replayed: false };
    const requested: RequestedKey = {
      workspaceId: request.workspaceId,
      userId: request.userId,
      key: validateKey(request.key),
      hash: requestHash(request),
    };
    await this.#sweep();

    const deadline = Date.now() + this.#waitMs;
    let pause = POLL_MIN_MS;
    let claimedAt: Date | null;
    for (;;) {
      claimedAt = await this.#claim(requested);
      if (claimedAt) break;
      const row = await this.#db
        .selectFrom('idempotency_keys')
        .select(['request_hash', 'response'])
        .where('workspace_id', '=', requested.workspaceId)
        .where('user_id', '=', requested.userId)
        .where('key', '=', requested.key)
        .executeTakeFirst();
      // Gone between the insert and the read (released or expired): try to claim it again.
      if (!row) continue;
      if (row.request_hash !== requested.hash) throw new IdempotencyKeyReusedError();
      if (row.response) return { status: row.response.status, body: row.response.body, replayed: true };
      if (Date.now() >= deadline) throw inProgress();
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, POLL_MAX_MS);
    }

    const held: HeldKey = { ...requested, claimedAt };
    let answered = false;
    const claim: IdempotencyClaim = {
      answerIn: async (tx, response) => {
        const stored = await this.#answer(tx, held, response);
        if (!stored) throw inProgress();
        answered = true;
      },
    };
    let response: IdempotentResponse;
    try {
      response = await handler(claim);
    } catch (error) {
      await this.#release(held);
      throw error;
    }
    if (response.status >= 400) {
      await this.#release(held);
      return { ...response, replayed: false };
    }
    // A handler that answered in its transaction has its answer stored already (committed with it).
    if (!answered) await this.#answer(this.#db, held, { status: response.status, body: response.body });
    return { ...response, replayed: false };
  }

  /**
   * Inserts the claim; its time when this request holds the key, else null. Expired and abandoned claims are
   * cleared first.
   */
  async #claim(requested: RequestedKey): Promise<Date | null> {
    const now = this.#now();
    await this.#db
      .deleteFrom('idempotency_keys')
      .where('workspace_id', '=', requested.workspaceId)
      .where('user_id', '=', requested.userId)
      .where('key', '=', requested.key)
      .where((eb) =>
        eb.or([
          eb('created_at', '<', new Date(now.getTime() - KEY_TTL_MS)),
          eb.and([
            eb('response', 'is', null),
            eb('created_at', '<', new Date(now.getTime() - ABANDONED_CLAIM_MS)),
          ]),
        ]),
      )
      .execute();
    const inserted = await this.#db
      .insertInto('idempotency_keys')
      .values({
        workspace_id: requested.workspaceId,
        user_id: requested.userId,
        key: requested.key,
        request_hash: requested.hash,
        response: null,
        created_at: now,
      })
      .onConflict((oc) => oc.columns(['workspace_id', 'user_id', 'key']).doNothing())
      .returning('key')
      .executeTakeFirst();
    return inserted ? now : null;
  }

  /** Stores the answer on this request's claim (in `db`, or the handler's transaction); false when it lost it. */
  async #answer(db: Kysely<Database>, held: HeldKey, response: StoredResponse): Promise<boolean> {
    const stored = await db
      .updateTable('idempotency_keys')
      .set({ response: JSON.stringify({ status: response.status, body: response.body }) })
      .where(unansweredClaim(held))
      .returning('key')
      .executeTakeFirst();
    return stored !== undefined;
  }

  /** Lets the key go when this request's claim is still unanswered (nothing was created). */
  async #release(held: HeldKey): Promise<void> {
    await this.#db.deleteFrom('idempotency_keys').where(unansweredClaim(held)).execute();
  }

  /** Deletes keys past their 24 hours, at most once a minute per instance. */
  async #sweep(): Promise<void> {
    const now = this.#now().getTime();
    if (now - this.#lastSweep < SWEEP_INTERVAL_MS) return;
    this.#lastSweep = now;
    await this.#db
      .deleteFrom('idempotency_keys')
      .where('created_at', '<', new Date(now - KEY_TTL_MS))
      .execute();
  }
}

/** A caller's key, with the hash of the request that comes with it. */
interface RequestedKey {
  workspaceId: string;
  userId: string;
  key: string;
  hash: string;
}

/** A key this request holds: its claim, inserted at `claimedAt`. */
interface HeldKey extends RequestedKey {
  claimedAt: Date;
}

/**
 * This request's claim, still unanswered: its time tells it from a claim another request made after taking
 * this one as abandoned.
 */
function unansweredClaim(held: HeldKey) {
  return (eb: ExpressionBuilder<Database, 'idempotency_keys'>) =>
    eb.and([
      eb('workspace_id', '=', held.workspaceId),
      eb('user_id', '=', held.userId),
      eb('key', '=', held.key),
      eb('request_hash', '=', held.hash),
      eb('created_at', '=', held.claimedAt),
      eb('response', 'is', null),
    ]);
}

function inProgress(): ConflictError {
  return new ConflictError(
    'idempotency_key_in_progress',
    'A request with this Idempotency-Key is still being handled; retry in a moment.',
  );
}

function validateKey(key: string): string {
  if (key.length === 0 || key.length > MAX_KEY_LENGTH || !KEY_PATTERN.test(key)) {
    const message = `Idempotency-Key must be 1 to ${MAX_KEY_LENGTH} printable ASCII characters.`;
    throw new InvalidRequestError(message, { issues: [{ path: ['Idempotency-Key'], message }] });
  }
  return key;
}

/** SHA-256 over the method, path, caller and the body with its object keys sorted. */
export function requestHash(request: Omit<IdempotentRequest, 'key' | 'workspaceId'>): string {
  const canonical = JSON.stringify([
    request.method.toUpperCase(),
    request.path,
    request.userId,
    canonicalize(request.body ?? null),
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

function canonicalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonicalize);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((name) => [name, canonicalize((value as Record<string, unknown>)[name])]),
    );
  }
  return value;
}
