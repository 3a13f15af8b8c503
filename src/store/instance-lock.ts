import pg from 'pg';
import type { Logger } from 'pino';

/**
 * The instance lock: a session advisory lock, in the two-key form so that it never meets a bigint key
 * (Kysely's migration lock is one). The first key spells "OUTR".
 */
const LOCK_KEYS = [0x4f555452, 1] as const;

/** How long a start waits for the lock: a killed holder's backend may take a moment to notice and exit. */
const DEFAULT_WAIT_MS = 5_000;
const RETRY_MS = 250;
/** After the lock's connection is lost: the longest wait between tries to take it again (the first is at once). */
const RETAKE_MAX_MS = 30_000;

/**
 * Server-side TCP keepalives of the lock's session (seconds): a holder that vanished without closing its
 * connection (a host gone, a partition) lets go within about idle + interval × count, not the two hours of the
 * usual system default.
 */
const KEEPALIVE = { idle: 10, interval: 5, count: 3 };

/**
 * How a server holds the lock. Without Redis a server believes itself alone (it resumes every active run at
 * start, whatever its lease): it holds the lock `exclusive`. With Redis, servers and workers share the
 * database: each holds it `shared`, so a server without Redis is refused while any of them runs, and the other
 * way round.
 */
export type InstanceLockMode = 'exclusive' | 'shared';

/** The instance lock is held in a mode this server cannot share. */
export class DatabaseInUseError extends Error {
  constructor(mode: InstanceLockMode, holder: string) {
    super(
      mode === 'exclusive'
        ? `DATABASE_URL: another Outrun server runs on this database (${holder}). Without REDIS_URL one server ` +
            'runs the runs of a database: stop the other, or set REDIS_URL on every instance to run several.'
        : `DATABASE_URL: an Outrun server runs on this database without REDIS_URL (${holder}), as if alone: ` +
            'stop it, or set REDIS_URL on it too.',
    );
    this.name = 'DatabaseInUseError';
  }
}

export interface InstanceLock {
  /** Lets the lock go and closes its connection. */
  release(): Promise<void>;
}

/**
 * Takes the database's instance lock in `mode`: the guard that keeps a server without Redis, which believes
 * itself alone, off a database another server uses (the PGlite data directory lock is the same guard for
 * embedded mode). Held by a connection of its own for the process's life; PostgreSQL lets it go when that
 * connection ends, a kill -9 included. Throws `DatabaseInUseError` naming the holder when it stays held in a
 * mode this one cannot share for `waitMs`.
 *
 * If the lock's connection is lost (a database restart), the lock is taken again at once, then with backoff
 * while the database does not answer. If meanwhile a server that cannot share it took it, `onTaken` is
 * called: two servers now run as if each held it, and this one must stop (the CLI exits).
 */
export async function acquireInstanceLock(options: {
  connectionString: string;
  connectTimeoutMs: number;
  mode: InstanceLockMode;
  logger?: Logger;
  waitMs?: number;
  onTaken?: (error: DatabaseInUseError) => void;
}): Promise<InstanceLock> {
  let client = await lockedClient(options, options.waitMs ?? DEFAULT_WAIT_MS);
  let released = false;
  let retry: NodeJS.Timeout | undefined;
  // At once, then after 1 s, doubling up to 30 s: a database down for long is not hammered.
  const retake = (delayMs = 0) => {
    retry = setTimeout(() => {
      lockedClient(options, 0).then(
        (taken) => {
          if (released) return void taken.end().catch(() => {});
          client = taken;
          watch(taken);
          options.logger?.info('took the instance lock again');
        },
        (error: unknown) => {
          if (released) return;
          if (error instanceof DatabaseInUseError) {
            options.logger?.fatal(
              { err: error },
              'another server took the instance lock while this one lost it',
            );
            options.onTaken?.(error);
            return;
          }
          options.logger?.warn({ err: error }, 'the instance lock is not held; trying again');
          retake(Math.min(Math.max(delayMs * 2, 1_000), RETAKE_MAX_MS));
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
      options.logger?.warn('lost the connection holding the instance lock; taking it again');
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
  options: { connectionString: string; connectTimeoutMs: number; mode: InstanceLockMode },
  waitMs: number,
): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: options.connectionString,
    connectionTimeoutMillis: options.connectTimeoutMs,
    keepAlive: true,
    application_name: 'outrun instance lock',
  });
  client.on('error', () => {});
  try {
    await client.connect();
    // Ignored on a Unix socket, where they do not apply.
    await client.query(
      `set tcp_keepalives_idle = ${KEEPALIVE.idle}; set tcp_keepalives_interval = ${KEEPALIVE.interval}; ` +
        `set tcp_keepalives_count = ${KEEPALIVE.count}`,
    );
    const take =
      options.mode === 'exclusive'
        ? 'select pg_try_advisory_lock($1, $2) as locked'
        : 'select pg_try_advisory_lock_shared($1, $2) as locked';
    const deadline = Date.now() + waitMs;
    for (;;) {
      const { rows } = await client.query<{ locked: boolean }>(take, [...LOCK_KEYS]);
      if (rows[0]?.locked) return client;
      if (Date.now() + RETRY_MS > deadline) {
        throw new DatabaseInUseError(options.mode, await describeHolder(client, options.mode));
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  } catch (error) {
    await client.end().catch(() => {});
    throw error;
  }
}

/** Who holds the lock in the mode that keeps this one out, as PostgreSQL sees it. */
async function describeHolder(client: pg.Client, mode: InstanceLockMode): Promise<string> {
  const { rows } = await client.query<{
    pid: number;
    client_addr: string | null;
    backend_start: Date | null;
  }>(
    `select a.pid, a.client_addr::text as client_addr, a.backend_start
       from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.classid = $1 and l.objid = $2 and l.objsubid = 2 and l.granted
        and l.database = (select oid from pg_database where datname = current_database())
        and ($3 or l.mode = 'ExclusiveLock')
      order by a.backend_start`,
    [...LOCK_KEYS, mode === 'exclusive'],
  );
  const holder = rows[0];
  if (!holder) return 'its session just ended; try again';
  const others = rows.length > 1 ? ` and ${rows.length - 1} more` : '';
  // Another role's session shows its address and start only to a role that may read all statistics.
  if (!holder.backend_start) return `its session is PostgreSQL backend ${holder.pid}${others}`;
  const from = holder.client_addr ? `from ${holder.client_addr}` : 'over a local socket';
  return `its session is PostgreSQL backend ${holder.pid}, ${from}, since ${holder.backend_start.toISOString()}${others}`;
}
