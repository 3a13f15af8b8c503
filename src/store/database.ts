import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, type PostgresPool } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { acquireDataDirLock, type DataDirLock } from './data-dir-lock.ts';
import { acquireInstanceLock, type DatabaseInUseError, type InstanceLockMode } from './instance-lock.ts';
import { migrateToLatest } from './migrator.ts';
import { nameStatements } from './named-statements.ts';
import { PGliteDialect } from './pglite-dialect.ts';
import type { Database } from './schema.ts';
import { isDatabaseUnavailableError, PoolWaitTimeoutError } from './transient.ts';

/**
 * How long opening a PostgreSQL connection, or waiting for a free one in the pool, may take before the
 * query fails (and a request answers 503). Short: a database that cannot hand out a connection in this
 * time is unavailable or overloaded, and a caller is better told so than kept waiting.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 3_000;

/** Connections in the PostgreSQL pool that requests and runs share. */
export const DEFAULT_POOL_SIZE = 10;

/**
 * How long a pooled connection may sit idle before it is closed (pg-pool's default is 10 s). A new connection
 * prepares each statement afresh and PostgreSQL plans it for its values for its first five executions
 * (decision 0009), and the pool hands out its most recently used connection first, so under light traffic
 * all but one or two idle out: with 10 s, a wave of 100 paced runs after a 12 s lull had PostgreSQL plan for
 * 0.68–0.95 ms a run, against 0.04–0.08 with the connections kept (four runs each; its CPU per run moved
 * within the measurement's noise: docs/benchmarks.md, "a pool that keeps its connections"). A minute
 * keeps them across a chat's pauses and stays under the idle timeouts of cloud load balancers and NATs
 * (Azure's 4 min, AWS's 350 s), which may drop an idle connection without a word.
 */
export const POOL_IDLE_TIMEOUT_MS = 60_000;

/**
 * How long one statement may run (PostgreSQL's `statement_timeout`). Generous: a group-commit append of a
 * large batch or a lock wait under load must still finish; only a stuck statement is cut.
 */
export const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000;

/**
 * How much longer than the statement timeout the client waits for an answer before it gives up on its own
 * (`pg`'s `query_timeout`): a frozen or partitioned server never sends the cancellation.
 */
const CLIENT_READ_GRACE_MS = 2_000;

export type Db = Kysely<Database>;

export interface DatabaseHandle {
  db: Db;
  /**
   * The connection the event log's group commit writes with. On PostgreSQL it has a connection of its own,
   * so durable delivery never waits in the pool behind reads; on PGlite it is `db` (one connection).
   */
  appendDb: Db;
  /** `postgres` for a server database, `pglite` for the embedded one. */
  kind: 'postgres' | 'pglite';
  /** PostgreSQL: how busy `db`'s pool is now (absent on PGlite, whose one connection is not pooled). */
  poolUsage?(): PoolUsage;
  close(): Promise<void>;
}

/** A connection pool's state at one moment. */
export interface PoolUsage {
  /** Connections checked out by a statement or a transaction. */
  inUse: number;
  /** Connections open and free. */
  idle: number;
  /** Callers waiting for a connection to come free. */
  waiting: number;
}

export interface CreateDatabaseOptions {
  /** A PostgreSQL connection string. Absent: embedded PGlite. */
  databaseUrl?: string;
  /**
   * Where PGlite keeps its files; the handle holds an exclusive lock on it until `close` (`DataDirLockedError`
   * when another live process holds it). Absent (and no `pglite`): an in-memory database.
   */
  dataDir?: string;
  /** An already open PGlite instance to use (tests load one from a migrated template). */
  pglite?: PGlite;
  /** Connections in the PostgreSQL pool. @default DEFAULT_POOL_SIZE */
  poolSize?: number;
  /** Run migrations before returning. @default true */
  migrate?: boolean;
  /** PostgreSQL: how long connecting, or waiting for a pooled connection, may take. @default DEFAULT_CONNECT_TIMEOUT_MS */
  connectTimeoutMs?: number;
  /** PostgreSQL: how long one statement may run; 0 turns the limit off. @default DEFAULT_STATEMENT_TIMEOUT_MS */
  statementTimeoutMs?: number;
  /**
   * PostgreSQL: the mode in which the handle holds the database's instance lock until `close`: `exclusive` for
   * a server without Redis, which takes every active run as its own at start; `shared` for one with Redis
   * (`DatabaseInUseError` while a server holds it in a mode this one cannot share). PGlite's data directory
   * lock is always taken. @default none
   */
  instanceLock?: InstanceLockMode;
  /** A server that cannot share the instance lock took it while this handle had lost its connection. */
  onInstanceLockTaken?: (error: DatabaseInUseError) => void;
  /** Where the instance lock reports losing its connection. */
  logger?: Logger;
}

/** Opens the store: PostgreSQL when a URL is given, else embedded PGlite; then migrates to the latest schema. */
export async function createDatabase(options: CreateDatabaseOptions): Promise<DatabaseHandle> {
  let handle: DatabaseHandle;
  let migrationDb: Kysely<unknown> | undefined;
  if (options.databaseUrl) {
    // Taken before anything else: a refused start touches nothing.
    const instanceLock = options.instanceLock
      ? await acquireInstanceLock({
          connectionString: options.databaseUrl,
          connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
          mode: options.instanceLock,
          logger: options.logger,
          onTaken: options.onInstanceLockTaken,
        })
      : undefined;
    const poolOptions = postgresPoolOptions(options);
    const pool = createPool(
      { ...poolOptions, max: options.poolSize ?? DEFAULT_POOL_SIZE },
      { nameStatements: true },
    );
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    const appendPool = createPool({ ...poolOptions, max: 1 }, { nameStatements: true });
    const appendDb = new Kysely<Database>({ dialect: new PostgresDialect({ pool: appendPool }) });
    // Migrations may rewrite large tables: their one connection has no statement timeout.
    migrationDb = new Kysely<unknown>({
      dialect: new PostgresDialect({
        pool: createPool({ ...poolOptions, max: 1, statement_timeout: 0, query_timeout: undefined }),
      }),
    });
    handle = {
      db,
      appendDb,
      kind: 'postgres',
      poolUsage: pool.usage,
      close: async () => {
        try {
          await appendDb.destroy();
          await db.destroy();
        } finally {
          await instanceLock?.release();
        }
      },
    };
  } else {
    const ownsInstance = !options.pglite;
    let lock: DataDirLock | undefined;
    if (ownsInstance && options.dataDir) {
      try {
        mkdirSync(options.dataDir, { recursive: true });
      } catch (error) {
        const reason =
          (error as NodeJS.ErrnoException).code === 'EEXIST'
            ? 'it is a file, not a directory'
            : (error as Error).message;
        throw new Error(`OUTRUN_DATA_DIR: cannot use ${options.dataDir} as the data directory: ${reason}.`);
      }
      // Taken before PGlite opens the files: a second process on them would corrupt the database.
      lock = await acquireDataDirLock({ dataDir: options.dataDir });
    }
    const pglite = options.pglite ?? new PGlite(options.dataDir);
    const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
    handle = {
      db,
      appendDb: db,
      kind: 'pglite',
      close: async () => {
        try {
          await db.destroy();
          if (ownsInstance) await pglite.close();
        } finally {
          lock?.release();
        }
      },
    };
  }
  if (options.migrate !== false) {
    try {
      await migrateToLatest(migrationDb ?? (handle.db as Kysely<unknown>));
    } catch (error) {
      await handle.close();
      throw error;
    } finally {
      await migrationDb?.destroy();
    }
  } else {
    await migrationDb?.destroy();
  }
  return handle;
}

function postgresPoolOptions(options: CreateDatabaseOptions): pg.PoolConfig {
  const statementTimeoutMs = options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  return {
    connectionString: options.databaseUrl,
    connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs > 0 ? statementTimeoutMs + CLIENT_READ_GRACE_MS : undefined,
    idleTimeoutMillis: POOL_IDLE_TIMEOUT_MS,
    keepAlive: true,
  };
}

/**
 * A `pg` pool whose connections are discarded, not reused, once a query on them failed because the
 * database was unavailable: a connection whose query timed out on the client may still be waiting for an
 * answer, and every later query on it would queue behind that one. With `nameStatements`, its connections
 * prepare Kysely's statements (`nameStatements`); the migrations' connection does not.
 */
function createPool(
  config: pg.PoolConfig,
  options: { nameStatements?: boolean } = {},
): PostgresPool & { usage(): PoolUsage } {
  const pool = new pg.Pool(config);
  // An idle client that loses its connection emits here; the pool replaces it on the next checkout.
  pool.on('error', () => {});
  const broken = new WeakSet<pg.PoolClient>();
  pool.on('connect', (client) => {
    // A connection that dies while checked out between statements (a transaction awaiting its caller, the
    // server shutting down) emits here: the pool listens only to idle connections, and an `error` event nobody
    // listens to would crash the process. Its next statement fails; it is discarded when released.
    client.on('error', () => broken.add(client));
    if (options.nameStatements) nameStatements(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      const result = query(...args);
      if (result instanceof Promise) {
        result.catch((error: unknown) => {
          if (isDatabaseUnavailableError(error)) broken.add(client);
        });
      }
      return result;
    };
  });
  return {
    async connect() {
      const started = performance.now();
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (error) {
        // pg-pool's words for a wait in its queue that outlasted `connectionTimeoutMillis` (a new connection
        // that times out says "Connection terminated due to connection timeout").
        if (error instanceof Error && error.message === 'timeout exceeded when trying to connect') {
          throw new PoolWaitTimeoutError(Math.round(performance.now() - started), error);
        }
        throw error;
      }
      const release = client.release.bind(client);
      client.release = (error?: Error | boolean) =>
        release(error ?? (broken.has(client) ? new Error('connection unusable after a timeout') : undefined));
      return client;
    },
    end: () => pool.end(),
    usage: () => ({
      inUse: pool.totalCount - pool.idleCount,
      idle: pool.idleCount,
      waiting: pool.waitingCount,
    }),
  };
}
