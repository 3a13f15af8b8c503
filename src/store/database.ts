import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { migrateToLatest } from './migrator.ts';
import { PGliteDialect } from './pglite-dialect.ts';
import type { Database } from './schema.ts';

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
  close(): Promise<void>;
}

export interface CreateDatabaseOptions {
  /** A PostgreSQL connection string. Absent: embedded PGlite. */
  databaseUrl?: string;
  /** Where PGlite keeps its files. Absent (and no `pglite`): an in-memory database. */
  dataDir?: string;
  /** An already open PGlite instance to use (tests load one from a migrated template). */
  pglite?: PGlite;
  /** Connections in the PostgreSQL pool. @default 10 */
  poolSize?: number;
  /** Run migrations before returning. @default true */
  migrate?: boolean;
}

/** Opens the store: PostgreSQL when a URL is given, else embedded PGlite; then migrates to the latest schema. */
export async function createDatabase(options: CreateDatabaseOptions): Promise<DatabaseHandle> {
  let handle: DatabaseHandle;
  if (options.databaseUrl) {
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.poolSize ?? 10 });
    // An idle client that loses its connection emits here; the pool replaces it on the next checkout.
    pool.on('error', () => {});
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    const appendPool = new pg.Pool({ connectionString: options.databaseUrl, max: 1 });
    appendPool.on('error', () => {});
    const appendDb = new Kysely<Database>({ dialect: new PostgresDialect({ pool: appendPool }) });
    handle = {
      db,
      appendDb,
      kind: 'postgres',
      close: async () => {
        await appendDb.destroy();
        await db.destroy();
      },
    };
  } else {
    const ownsInstance = !options.pglite;
    if (options.dataDir) mkdirSync(options.dataDir, { recursive: true });
    const pglite = options.pglite ?? new PGlite(options.dataDir);
    const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
    handle = {
      db,
      appendDb: db,
      kind: 'pglite',
      close: async () => {
        await db.destroy();
        if (ownsInstance) await pglite.close();
      },
    };
  }
  if (options.migrate !== false) {
    try {
      await migrateToLatest(handle.db as Kysely<unknown>);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }
  return handle;
}
