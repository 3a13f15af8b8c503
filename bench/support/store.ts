import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createDatabase, type DatabaseHandle } from '../../src/store/database.ts';

export type StoreKind = 'pglite' | 'postgres';

/** The PostgreSQL server benchmarks create their databases on (`DATABASE_URL` names it, like the tests). */
export const POSTGRES_ADMIN_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

/** A fresh, empty store for one benchmark, and how to reach it from this process or a server process. */
export interface BenchStore {
  kind: StoreKind;
  /** Human-readable: where the data lives. */
  description: string;
  /** Environment for an Outrun server process using this store (overrides `DATABASE_URL` / `OUTRUN_DATA_DIR`). */
  env: Record<string, string>;
  /** Opens the store in this process, migrated. */
  open(options?: { poolSize?: number }): Promise<DatabaseHandle>;
  /** Deletes the data (drops the database, removes the directory). Idempotent. */
  cleanup(): Promise<void>;
}

const cleanups = new Set<() => Promise<void>>();
let handlersInstalled = false;

/** Drops what a benchmark created even when it is interrupted (Ctrl-C) or fails. */
function installCleanupHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (signal: NodeJS.Signals) => {
    void Promise.allSettled([...cleanups].map((cleanup) => cleanup())).then(() =>
      process.kill(process.pid, signal),
    );
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

/**
 * Runs `cleanup` if the benchmark is interrupted (Ctrl-C, SIGTERM) before it calls the returned function,
 * which unregisters it. For resources other than stores: a Redis server, a set of keys.
 */
export function cleanupOnInterrupt(cleanup: () => Promise<void>): () => void {
  installCleanupHandlers();
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/**
 * Creates a store for a benchmark: PGlite in a new temporary data directory (on disk, as `npm start` uses it),
 * or a new PostgreSQL database `outrun_bench_<random>` on the server of `DATABASE_URL` (default: local, trust auth).
 */
export async function createBenchStore(kind: StoreKind): Promise<BenchStore> {
  installCleanupHandlers();
  if (kind === 'pglite') {
    const dataDir = mkdtempSync(join(tmpdir(), 'outrun-bench-'));
    const cleanup = async () => {
      cleanups.delete(cleanup);
      rmSync(dataDir, { recursive: true, force: true });
    };
    cleanups.add(cleanup);
    return {
      kind,
      description: `PGlite, data directory on disk (${dataDir})`,
      env: { OUTRUN_DATA_DIR: dataDir, DATABASE_URL: '' },
      open: () => createDatabase({ dataDir }),
      cleanup,
    };
  }

  const name = `outrun_bench_${randomBytes(5).toString('hex')}`;
  await adminQuery(`create database ${name}`);
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  let dropped = false;
  const cleanup = async () => {
    cleanups.delete(cleanup);
    if (dropped) return;
    dropped = true;
    await adminQuery(`drop database if exists ${name} with (force)`);
  };
  cleanups.add(cleanup);
  const version = await adminQuery('show server_version');
  return {
    kind,
    description: `PostgreSQL ${version} on loopback, database ${name}`,
    env: { DATABASE_URL: databaseUrl },
    open: (options = {}) => createDatabase({ databaseUrl, poolSize: options.poolSize }),
    cleanup,
  };
}

async function adminQuery(query: string): Promise<string> {
  const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await client.connect();
  try {
    const result = await client.query<Record<string, unknown>>(query);
    const first = result.rows[0];
    return first ? String(Object.values(first)[0]) : '';
  } finally {
    await client.end();
  }
}

/**
 * CPU time (µs) used so far by the PostgreSQL backends connected to `databaseUrl`'s database, read from
 * /proc (Linux, same machine). Backends that disconnect between two readings drop out, so compare readings
 * taken while the server's pool is busy. Null where /proc is not available.
 */
export async function postgresBackendCpuMicros(databaseUrl: string): Promise<number | null> {
  const name = new URL(databaseUrl).pathname.slice(1);
  const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await client.connect();
  let pids: number[];
  try {
    const result = await client.query<{ pid: number }>(
      'select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
      [name],
    );
    pids = result.rows.map((row) => row.pid);
  } finally {
    await client.end();
  }
  const { readFileSync } = await import('node:fs');
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the command name.
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      return null;
    }
  }
  // Linux reports these in clock ticks of 1/100 s (USER_HZ).
  return ticks * 10_000;
}
