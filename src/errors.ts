/**
 * Errors Outrun shows to callers. Each has a stable snake_case `code` and the HTTP status it maps to;
 * `details` are merged into the error body next to `code` and `message`. The HTTP layer maps these in
 * one place (`src/http/error-mapper.ts`); anything else becomes a 500 `internal_error` with no stack.
 */
export class OutrunError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Record<string, unknown>;

  constructor(options: { code: string; status: number; message: string; details?: Record<string, unknown> }) {
    super(options.message);
    this.name = new.target.name;
    this.code = options.code;
    this.status = options.status;
    this.details = options.details ?? {};
  }
}

export class InvalidRequestError extends OutrunError {
  constructor(message: string, details?: Record<string, unknown>, code = 'invalid_request') {
    super({ code, status: 400, message, details });
  }
}

export class UnauthorizedError extends OutrunError {
  constructor(message = 'A valid API key is required: send `Authorization: Bearer <key>`.') {
    super({ code: 'unauthorized', status: 401, message });
  }
}

export class ForbiddenError extends OutrunError {
  constructor(message = 'This route needs an admin API key.') {
    super({ code: 'forbidden', status: 403, message });
  }
}

export class NotFoundError extends OutrunError {
  constructor(
    resource:
      | 'chat'
      | 'run'
      | 'workspace'
      | 'agent'
      | 'route'
      | 'webhook'
      | 'delivery'
      | 'approval'
      | 'user'
      | 'api_key'
      | 'schedule',
    id?: string,
  ) {
    super({
      code: `${resource}_not_found`,
      status: 404,
      message: id ? `No ${resource} with id ${id}.` : `No such ${resource}.`,
    });
  }
}

export class RunAlreadyActiveError extends OutrunError {
  constructor(runId: string) {
    super({
      code: 'run_already_active',
      status: 409,
      message: 'A run is already active on this chat; follow it or stop it first.',
      details: { runId },
    });
  }
}

export class ConflictError extends OutrunError {
  constructor(code: string, message: string, details?: Record<string, unknown>) {
    super({ code, status: 409, message, details });
  }
}

/** A finished run whose events `OUTRUN_EVENT_RETENTION_DAYS` deleted: its stream can no longer be replayed. */
export class EventsExpiredError extends OutrunError {
  constructor(runId: string, deletedAt: string) {
    super({
      code: 'events_expired',
      status: 410,
      message:
        `The events of run ${runId} were deleted when their retention ran out (OUTRUN_EVENT_RETENTION_DAYS); ` +
        "the run, its steps and its chat's messages remain.",
      details: { runId, deletedAt },
    });
  }
}

/** A model id the server cannot serve: unknown provider, or a provider without its API key. */
export class ModelUnavailableError extends OutrunError {
  constructor(message: string, details?: Record<string, unknown>) {
    super({ code: 'model_unavailable', status: 400, message, details });
  }
}

/**
 * A dependency the request needs, the database above all, is unreachable or not answering in time. The
 * caller may retry after `retryAfterSeconds`; the HTTP layer sends it as `Retry-After`.
 */
export class ServiceUnavailableError extends OutrunError {
  readonly retryAfterSeconds: number;

  constructor(
    message = 'The database is not available right now; retry shortly.',
    options: { retryAfterSeconds?: number; cause?: unknown } = {},
  ) {
    super({ code: 'service_unavailable', status: 503, message });
    this.retryAfterSeconds = options.retryAfterSeconds ?? DEFAULT_RETRY_AFTER_SECONDS;
    if (options.cause !== undefined) this.cause = options.cause;
  }
}

/** How long a caller is told to wait before retrying a `503 service_unavailable`. */
export const DEFAULT_RETRY_AFTER_SECONDS = 2;
/** An `Idempotency-Key` sent again with a different request than the one it first came with. */
export class IdempotencyKeyReusedError extends OutrunError {
  constructor() {
    super({
      code: 'idempotency_key_reused',
      status: 422,
      message: 'This Idempotency-Key was already used with a different request; use a new key.',
    });
  }
}

/** Too many requests from one API key or user in the current window (`OUTRUN_RATE_LIMIT_PER_MINUTE`). */
export class RateLimitedError extends OutrunError {
  readonly retryAfterSeconds: number;

  /** `limited`: what was limited, a sentence. @default requests of one key */
  constructor(options: { retryAfterSeconds: number; limit: number; limited?: string }) {
    const limited = options.limited ?? `Too many requests: at most ${options.limit} a minute per key.`;
    super({
      code: 'rate_limited',
      status: 429,
      message: `${limited} Retry after ${options.retryAfterSeconds} s.`,
      details: { retryAfterSeconds: options.retryAfterSeconds, limit: options.limit },
    });
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** The workspace quotas a start can exceed (DESIGN §3 `workspaces.quota`). */
export type QuotaName = 'tokensPerDay' | 'costUsdPerDay' | 'runsPerMinute';

/** A start, or a run's next model call, beyond one of the workspace's quotas. Nothing was written. */
export class QuotaExceededError extends OutrunError {
  readonly retryAfterSeconds: number;
  readonly quota: QuotaName;

  constructor(options: { quota: QuotaName; limit: number; used: number; retryAfterSeconds: number }) {
    super({
      code: 'quota_exceeded',
      status: 429,
      message: `The workspace quota ${options.quota} (${options.limit}) is used up; retry after ${options.retryAfterSeconds} s.`,
      details: {
        quota: options.quota,
        limit: options.limit,
        used: options.used,
        retryAfterSeconds: options.retryAfterSeconds,
      },
    });
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.quota = options.quota;
  }
}
