import pg from 'pg';
import { redactUrl } from '../bus/redis-reachable.ts';

/** What a connection failure means, by the system or PostgreSQL error code, and what to do about it. */
export const CONNECTION_ERROR_HINTS: Record<string, string> = {
  ECONNREFUSED: 'Is PostgreSQL running and is the URL right?',
  ENOTFOUND: 'The host name does not resolve: check the host part of the URL.',
  EAI_AGAIN: 'The host name could not be resolved (DNS): check the host part of the URL and the network.',
  ETIMEDOUT: 'Nothing answered in time: check the host, the port and any firewall in between.',
  EHOSTUNREACH: 'The host is unreachable: check the host part of the URL and the network.',
  ECONNRESET:
    'The server closed the connection: check the port and whether it needs TLS (`?sslmode=require`).',
  '28P01': 'Authentication failed: check the user name and password in the URL.',
  '28000': 'The server refused this user: check the user name in the URL and the server’s pg_hba.conf.',
  '3D000': 'The database does not exist: create it (`createdb <name>`) or fix its name in the URL.',
};

/** Thrown at start-up when the database named by `DATABASE_URL` cannot be opened; the message says why. */
export class DatabaseUnreachableError extends Error {
  readonly code = 'database_unreachable';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatabaseUnreachableError';
  }
}

/** The first system or PostgreSQL error code on `error`, its cause chain or its aggregated errors. */
export function errorCode(error: unknown, depth = 0): string | undefined {
  if (!error || typeof error !== 'object' || depth > 5) return undefined;
  const record = error as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof record.code === 'string' && record.code) return record.code;
  if (Array.isArray(record.errors)) {
    for (const inner of record.errors) {
      const code = errorCode(inner, depth + 1);
      if (code) return code;
    }
  }
  if (/timeout/i.test(String((error as Error).message))) return 'ETIMEDOUT';
  return errorCode(record.cause, depth + 1);
}

/** A start-up message for a failed connection to `databaseUrl`, naming `DATABASE_URL` and the fix. */
export function describeDatabaseError(databaseUrl: string, error: unknown): DatabaseUnreachableError {
  const code = errorCode(error);
  const hint = (code && CONNECTION_ERROR_HINTS[code]) ?? 'Is PostgreSQL running and is the URL right?';
  const detail = code ?? ((error as Error)?.message || 'unknown error');
  return new DatabaseUnreachableError(
    `DATABASE_URL: could not connect to ${redactUrl(databaseUrl)} (${detail}). ${hint}`,
    { cause: error },
  );
}

/**
 * Resolves once the PostgreSQL server of `databaseUrl` accepts a connection and answers `select 1`; rejects
 * with a `DatabaseUnreachableError` naming `DATABASE_URL` and the likely fix otherwise, within `timeoutMs`.
 * Start-up calls it first, so a wrong URL fails in seconds with a message that says what to change.
 */
export async function assertDatabaseReachable(
  databaseUrl: string,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const client = new pg.Client({
    connectionString: databaseUrl,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
  } catch (error) {
    throw describeDatabaseError(databaseUrl, error);
  } finally {
    await client.end().catch(() => {});
  }
}
