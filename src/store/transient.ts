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

/** An error a fault-injection point throws to simulate a transient database failure. */
export class TransientDatabaseError extends Error {
  readonly transient = true;
  constructor(message = 'simulated transient database error') {
    super(message);
    this.name = 'TransientDatabaseError';
  }
}
