import pg from 'pg';
import type { Logger } from 'pino';

/**
 * The single-instance lock: a session advisory lock, in the two-key form so that it never meets a bigint key
 * (Kysely's migration lock is one). The first key spells "OUTR".
 */
const LOCK_KEYS = [0x4f555452, 1] as const;

/** How long a start waits for the lock: a killed holder's backend may take a moment to notice and exit. */
const DEFAULT_WAIT_MS = 5_000;
const RETRY_MS = 250;
/** After the lock's connection is lost: the first try to take it again, and the longest wait between tries. */
const RETAKE_FIRST_MS = 1_000;
const RETAKE_MAX_MS = 30_000;

/**
 * Server-side TCP keepalives of the lock's session (seconds): a holder that vanished without closing its
 * connection (a host gone, a partition) lets go within about idle + interval × count, not the two hours of the
 * usual system default.
 */
const KEEPALIVE = { idle: 10, interval: 5, count: 3 };

/** Another Outrun server holds the database's single-instance lock. */
export class DatabaseInUseError extends Error {
  constructor(holder: string) {
    super(
      `DATABASE_URL: another Outrun server runs on this database without REDIS_URL (${holder}). ` +
        'Without Redis one server runs the runs of a database: stop the other, or set REDIS_URL on every ' +
        'instance to run several.',
    );
    this.name = 'DatabaseInUseError';
  }
}

export interface InstanceLock {
  /** Lets the lock go and closes its connection. */
  release(): Promise<void>;
}

/**
 * Takes the database's single-instance lock, for a server that runs without Redis and so believes itself
 * alone: at start it resumes every active run, whatever its lease (the PGlite data directory lock is the same
 * guard for embedded mode). Held by a connection of its own for the process's life; PostgreSQL lets it go
 * when that connection ends, a kill -9 included. Throws `DatabaseInUseError` naming the holder when another
 * server keeps it for `waitMs`.
 *
 * If the lock's connection is lost (a database restart), the lock is taken again once the database answers;
 * meanwhile the server goes on (its runs are fenced by their leases as ever) and logs that it is unguarded.
 */
export async function acquireInstanceLock(options: {
  connectionString: string;
  connectTimeoutMs: number;
  logger?: Logger;
  waitMs?: number;
}): Promise<InstanceLock> {
  let client = await lockedClient(options, options.waitMs ?? DEFAULT_WAIT_MS);
  let released = false;
  let retry: NodeJS.Timeout | undefined;
  // Tries again after 1 s, then twice as long each time up to 30 s: a database down for long is not hammered.
  const retake = (delayMs = RETAKE_FIRST_MS) => {
    retry = setTimeout(() => {
      lockedClient(options, 0).then(
        (taken) => {
          if (released) return void taken.end().catch(() => {});
          client = taken;
          watch(taken);
          options.logger?.info('took the single-instance lock again');
        },
        (error: unknown) => {
          const level = error instanceof DatabaseInUseError ? 'error' : 'warn';
          options.logger?.[level]({ err: error }, 'the single-instance lock is not held; trying again');
          if (!released) retake(Math.min(delayMs * 2, RETAKE_MAX_MS));
        },
      );
    }, delayMs);
    retry.unref();
  };
  const watch = (watched: pg.Client) => {
    let lost = false;
    const onLost = () => {
      if (lost || released) return;
      lost = true;
      options.logger?.warn('lost the connection holding the single-instance lock; taking it again');
      watched.end().catch(() => {});
      retake();
    };
    watched.on('error', onLost);
    watched.on('end', onLost);
  };
  watch(client);
  return {
    async release() {
      released = true;
      clearTimeout(retry);
      await client.end().catch(() => {});
    },
  };
}

/** A connection holding the lock, trying for `waitMs`; throws `DatabaseInUseError` when it stays held. */
async function lockedClient(
  options: { connectionString: string; connectTimeoutMs: number },
  waitMs: number,
): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: options.connectionString,
    connectionTimeoutMillis: options.connectTimeoutMs,
    keepAlive: true,
    application_name: 'outrun single-instance lock',
  });
  client.on('error', () => {});
  try {
    await client.connect();
    // Ignored on a Unix socket, where they do not apply.
    await client.query(
      `set tcp_keepalives_idle = ${KEEPALIVE.idle}; set tcp_keepalives_interval = ${KEEPALIVE.interval}; ` +
        `set tcp_keepalives_count = ${KEEPALIVE.count}`,
    );
    const deadline = Date.now() + waitMs;
    for (;;) {
      const { rows } = await client.query<{ locked: boolean }>(
        'select pg_try_advisory_lock($1, $2) as locked',
        [...LOCK_KEYS],
      );
      if (rows[0]?.locked) return client;
      if (Date.now() + RETRY_MS > deadline) throw new DatabaseInUseError(await describeHolder(client));
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  } catch (error) {
    await client.end().catch(() => {});
    throw error;
  }
}

/** Who holds the lock, as PostgreSQL sees it. */
async function describeHolder(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{
    pid: number;
    client_addr: string | null;
    backend_start: Date | null;
  }>(
    `select a.pid, a.client_addr::text as client_addr, a.backend_start
       from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.classid = $1 and l.objid = $2 and l.objsubid = 2 and l.granted
        and l.database = (select oid from pg_database where datname = current_database())`,
    [...LOCK_KEYS],
  );
  const holder = rows[0];
  if (!holder) return 'its session just ended; try again';
  // Another role's session shows its address and start only to a role that may read all statistics.
  if (!holder.backend_start) return `its session is PostgreSQL backend ${holder.pid}`;
  const from = holder.client_addr ? `from ${holder.client_addr}` : 'over a local socket';
  return `its session is PostgreSQL backend ${holder.pid}, ${from}, since ${holder.backend_start.toISOString()}`;
}
