/**
 * Whether a database error is worth retrying: the connection dropped, the server is starting or shutting
 * down, or the transaction lost a serialization race. Constraint violations and bad SQL are not transient.
 */
export function isTransientDatabaseError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if ((error as { transient?: unknown }).transient === true) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return /connection|terminat|timeout/i.test(error.message);
  if (['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'ENOTCONN'].includes(code)) return true;
  if (isResultTypeChangeError(error)) return true;
  // SQLSTATE classes: 08 connection exception, 40 transaction rollback, 53 insufficient resources,
  // 57P operator intervention (admin shutdown, crash shutdown, cannot connect now).
  return /^(08|40|53|57P)/.test(code);
}

/**
 * What PostgreSQL answers when the result columns of a prepared statement changed under it: a migration
 * added or dropped a column of a table a `select *` or `returning *` reads (another instance migrated
 * during a rolling deploy). The statement did nothing; parsed afresh it works (see `nameStatements`).
 */
export function isResultTypeChangeError(error: unknown): boolean {
  return (
    error instanceof Error &&
    (error as { code?: unknown }).code === '0A000' &&
    /cached plan must not change result type/i.test(error.message)
  );
}

/** Socket errors that mean the database server cannot be reached or dropped the connection. */
const UNREACHABLE_SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTCONN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/**
 * What `pg` and `pg-pool` say when a connection cannot be made, is lost, or a query gets no answer in time
 * (these errors carry no code).
 */
const UNAVAILABLE_MESSAGE =
  /timeout exceeded when trying to connect|connection terminated|query read timeout|connection timeout|not queryable|server closed the connection/i;

/**
 * Whether an error means the database is unavailable rather than that the request was wrong: the server
 * refuses or drops connections, is shutting down or starting up, has no connection slots, does not
 * answer within the connection or statement timeout, or a prepared statement's table changed under it.
 * The HTTP layer answers these with 503 and `Retry-After`. Follows `cause` and `AggregateError.errors` (a
 * connect to several addresses fails with one).
 */
export function isDatabaseUnavailableError(error: unknown, depth = 0): boolean {
  if (!(error instanceof Error) || depth > 4) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (UNREACHABLE_SOCKET_CODES.has(code)) return true;
    // SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57P operator intervention
    // (admin shutdown, crash shutdown, cannot connect now), and 57014 a statement cancelled by its timeout.
    if (/^(08|53|57P)/.test(code) || code === '57014') return true;
    // A prepared statement whose table's columns a migration changed: retried, it is parsed afresh.
    if (isResultTypeChangeError(error)) return true;
  }
  if (UNAVAILABLE_MESSAGE.test(error.message)) return true;
  if (
    error instanceof AggregateError &&
    error.errors.some((inner) => isDatabaseUnavailableError(inner, depth + 1))
  )
    return true;
  return isDatabaseUnavailableError(error.cause, depth + 1);
}

export interface RetryOptions {
  /** Most tries in all. @default 5 */
  attempts?: number;
  /** Stop retrying once this much time has passed since the first try (whichever of the two comes first). */
  deadlineMs?: number;
  /** First retry delay; doubles each try. @default 25 */
  delayMs?: number;
  /** Longest delay between two tries. @default 1000 */
  maxDelayMs?: number;
  onRetry?: (error: unknown) => void;
}

/**
 * The one retry helper: runs `operation`, retrying it on transient database errors with exponential
 * backoff (capped, with a little jitter) until `attempts` or `deadlineMs` runs out. Other errors, and the
 * last transient one, are thrown.
 */
export async function retryTransient<T>(operation: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 5;
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      const delay = Math.min(options.maxDelayMs ?? 1000, (options.delayMs ?? 25) * 2 ** (attempt - 1));
      const outOfTime = options.deadlineMs !== undefined && Date.now() - started + delay > options.deadlineMs;
      if (attempt >= attempts || outOfTime || !isTransientDatabaseError(error)) throw error;
      options.onRetry?.(error);
      await new Promise((resolve) => setTimeout(resolve, delay * (0.8 + Math.random() * 0.2)));
    }
  }
}

/**
 * No pooled connection came free within the connect timeout: every connection of the pool stayed checked out
 * (the database answers slowly, or this process has more statements to run than connections). The database
 * may well be up; the HTTP layer still answers 503 with `Retry-After`, with a message that says so.
 */
export class PoolWaitTimeoutError extends Error {
  constructor(waitedMs: number, cause: unknown) {
    super(`no pooled database connection came free within ${waitedMs} ms`, { cause });
    this.name = 'PoolWaitTimeoutError';
  }
}

/** Whether `error`, or an error it was caused by, is a `PoolWaitTimeoutError`. */
export function isPoolWaitTimeout(error: unknown, depth = 0): boolean {
  if (error instanceof PoolWaitTimeoutError) return true;
  return error instanceof Error && depth < 4 && isPoolWaitTimeout(error.cause, depth + 1);
}

/** An error a fault-injection point throws to simulate a transient database failure. */
export class TransientDatabaseError extends Error {
  readonly transient = true;
  constructor(message = 'simulated transient database error') {
    super(message);
    this.name = 'TransientDatabaseError';
  }
}

/** PostgreSQL's `unique_violation` (SQLSTATE 23505): a row its unique index already holds. */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '23505';
}

/**
 * Why a statement declined on purpose through `outrun_fall_back(reason)` (migration 0010: SQLSTATE OR001,
 * nothing written), or undefined for any other error. A reason may carry a detail after a colon
 * (`agent:agent_…`).
 */
export function fallBackOf(error: unknown): { reason: string; detail: string | null } | undefined {
  if (!(error instanceof Error) || (error as { code?: unknown }).code !== 'OR001') return undefined;
  const match = /outrun_fall_back: (\w+)(?::(\S*))?/.exec(error.message);
  return { reason: match?.[1] ?? 'unknown', detail: match?.[2] || null };
}

/**
 * Logs a background pass's failure (a sweep, a schedule pass): at `warn` while the database is unavailable,
 * which the next pass retries and which an outage makes happen every pass; at `error` otherwise.
 */
export function logPassFailure(
  logger: {
    warn: (details: object, message: string) => void;
    error: (details: object, message: string) => void;
  },
  error: unknown,
  message: string,
): void {
  if (isDatabaseUnavailableError(error))
    logger.warn({ err: error }, `${message}; the database is unavailable`);
  else logger.error({ err: error }, message);
}
