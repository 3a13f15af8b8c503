import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import { ConflictError, IdempotencyKeyReusedError, InvalidRequestError } from '../errors.ts';
import type { Database } from '../store/schema.ts';

/** How long a key answers with its first response; older keys are ignored and deleted. */
const KEY_TTL_MS = 24 * 60 * 60_000;
/** A claim this old with no response belongs to a request that died; the key may be taken again. */
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
  /** The caller: the same key and body from another user is a different request. */
  userId: string;
  /** The `Idempotency-Key` header; absent, the handler just runs. */
  key: string | undefined;
  method: string;
  /** The path with its ids, without the query string. */
  path: string;
  body: unknown;
}

export interface IdempotencyKeysOptions {
  db: Kysely<Database>;
  /** @default () => new Date() */
  now?: () => Date;
  /** @default 10000 */
  inProgressWaitMs?: number;
}

/**
 * `Idempotency-Key` handling for requests that create something. The key is claimed by inserting its row
 * (the insert is the gate; `ON CONFLICT DO NOTHING` picks one winner among concurrent requests); the winner
 * runs the handler and stores its response, every other request with the key waits for that response and
 * answers it. A different request under the same key is a 422; a handler that fails releases the key.
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
   * key and request within 24 h (`replayed: true`, no `send`).
   */
  async run(
    request: IdempotentRequest,
    handler: () => Promise<IdempotentResponse>,
  ): Promise<IdempotentResponse & { replayed: boolean }> {
    if (request.key === undefined) return { ...(await handler()), replayed: false };
    const key = validateKey(request.key);
    const hash = requestHash(request);
    await this.#sweep();

    const deadline = Date.now() + this.#waitMs;
    let pause = POLL_MIN_MS;
    for (;;) {
      if (await this.#claim(request.workspaceId, key, hash)) break;
      const row = await this.#db
        .selectFrom('idempotency_keys')
        .select(['request_hash', 'response'])
        .where('workspace_id', '=', request.workspaceId)
        .where('key', '=', key)
        .executeTakeFirst();
      // Gone between the insert and the read (released or expired): try to claim it again.
      if (!row) continue;
      if (row.request_hash !== hash) throw new IdempotencyKeyReusedError();
      if (row.response) return { status: row.response.status, body: row.response.body, replayed: true };
      if (Date.now() >= deadline) {
        throw new ConflictError(
          'idempotency_key_in_progress',
          'A request with this Idempotency-Key is still being handled; retry in a moment.',
        );
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, POLL_MAX_MS);
    }

    let response: IdempotentResponse;
    try {
      response = await handler();
    } catch (error) {
      await this.#release(request.workspaceId, key);
      throw error;
    }
    if (response.status >= 400) {
      await this.#release(request.workspaceId, key);
      return { ...response, replayed: false };
    }
    await this.#db
      .updateTable('idempotency_keys')
      .set({ response: JSON.stringify({ status: response.status, body: response.body }) })
      .where('workspace_id', '=', request.workspaceId)
      .where('key', '=', key)
      .where('request_hash', '=', hash)
      .execute();
    return { ...response, replayed: false };
  }

  /** Inserts the claim; true when this request holds the key. Expired and abandoned claims are cleared first. */
  async #claim(workspaceId: string, key: string, hash: string): Promise<boolean> {
    const now = this.#now();
    await this.#db
      .deleteFrom('idempotency_keys')
      .where('workspace_id', '=', workspaceId)
      .where('key', '=', key)
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
      .values({ workspace_id: workspaceId, key, request_hash: hash, response: null, created_at: now })
      .onConflict((oc) => oc.columns(['workspace_id', 'key']).doNothing())
      .returning('key')
      .executeTakeFirst();
    return inserted !== undefined;
  }

  async #release(workspaceId: string, key: string): Promise<void> {
    await this.#db
      .deleteFrom('idempotency_keys')
      .where('workspace_id', '=', workspaceId)
      .where('key', '=', key)
      .where('response', 'is', null)
      .execute();
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
