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
  // SQLSTATE classes: 08 connection exception, 40 transaction rollback, 53 insufficient resources,
  // 57P operator intervention (admin shutdown, crash shutdown, cannot connect now).
  return /^(08|40|53|57P)/.test(code);
}

/**
 * Runs `operation`, retrying it on transient database errors with exponential backoff. Other errors, and
 * the last transient one, are thrown.
 */
export async function retryTransient<T>(
  operation: () => Promise<T>,
  options: { attempts?: number; delayMs?: number; onRetry?: () => void } = {},
): Promise<T> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if (attempt >= attempts || !isTransientDatabaseError(error)) throw error;
      options.onRetry?.();
      await new Promise((resolve) => setTimeout(resolve, (options.delayMs ?? 25) * 2 ** (attempt - 1)));
    }
  }
}

/** An error a fault-injection point throws to simulate a transient database failure. */
export class TransientDatabaseError extends Error {
  readonly transient = true;
  constructor(message = 'simulated transient database error') {
    super(message);
    this.name = 'TransientDatabaseError';
  }
}
