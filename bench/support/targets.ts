import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { BenchApi } from './api.ts';
import { CLOCK_MODEL_ID } from './clock-model.ts';
import { createBenchRedis, type BenchRedis } from './redis-server.ts';
import { importResumableStream } from './resumable-pipe-server.ts';
import { BENCH_ADMIN_KEY, launchServer, type ServerMode, type ServerProcess } from './server-process.ts';
import { createBenchStore, POSTGRES_ADMIN_URL, postgresBackendCpuMicros, type BenchStore } from './store.ts';

/**
 * What a paced-load benchmark runs against, cheapest first: `a0` bare SSE writes (no AI SDK), `a` the AI SDK
 * `streamText` → SSE pipe, `b` that pipe plus `resumable-stream` on Redis, `d` that pipe plus a minimal durable
 * log on PostgreSQL (the durable floor: each chunk delivered once its group-committed insert is in), then
 * Outrun on PGlite, on PostgreSQL, and on PostgreSQL + Redis with N server processes.
 */
export const TARGET_KINDS = ['a0', 'a', 'b', 'd', 'pglite', 'postgres', 'redis'] as const;
export type TargetKind = (typeof TARGET_KINDS)[number];

export function isTargetKind(value: string): value is TargetKind {
  return (TARGET_KINDS as readonly string[]).includes(value);
}

/** A short label for tables. */
export function targetLabel(kind: TargetKind, workers = 1): string {
  switch (kind) {
    case 'a0':
      return 'A0: bare SSE writes';
    case 'a':
      return 'A: AI SDK pipe';
    case 'b':
      return 'B: A + resumable-stream';
    case 'd':
      return 'D: A + durable PostgreSQL log (floor)';
    case 'pglite':
      return 'Outrun, PGlite';
    case 'postgres':
      return 'Outrun, PostgreSQL';
    case 'redis':
      return `Outrun, PostgreSQL + Redis ×${workers}`;
  }
}

export interface TargetOptions {
  /** Outrun server processes for `redis` (each serves HTTP and executes runs). @default 1 */
  workers?: number;
  /** `OUTRUN_WORKER_CONCURRENCY` for Outrun servers. @default the server's default */
  workerConcurrency?: number;
  /** `OUTRUN_WORKER_BASE_CONCURRENCY` for Outrun servers. @default the server's default */
  workerBaseConcurrency?: number;
  /** Use this Redis (under a unique key prefix) instead of starting a redis-server. @default start one */
  sharedRedisUrl?: string;
}

/** One request that starts a run and streams it (`streamSse` options). */
export interface RunRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** Cumulative CPU time (µs) of everything serving a target, read at one moment. */
export interface CpuReading {
  /** Per server process (user + system, all threads). */
  servers: number[];
  /** PostgreSQL backends of the target's database; null without PostgreSQL or /proc. */
  database: number | null;
  /** The redis-server the benchmark started; null without one (or with a shared Redis). */
  redis: number | null;
}

/** A running target: its server processes and everything they need, and how to start runs on it. */
export interface Target {
  kind: TargetKind;
  label: string;
  /** What runs where: store, Redis, processes. */
  description: string;
  servers: ServerProcess[];
  /** The servers' clock offset ahead of this process (ms), averaged over the server processes. */
  clockOffset: number;
  /** Prepares `count` runs whose model reads `text` (creates a chat per run on Outrun), round robin over the servers. */
  prepare(count: number, text: string): Promise<RunRequest[]>;
  cpu(): Promise<CpuReading>;
  /** Stops every process the target started and deletes its database, data directory and Redis keys. */
  close(): Promise<void>;
}

/**
 * Why `kind` cannot run on this machine (a missing package, server or binary), or null when it can. Checked
 * before a benchmark starts so a missing optional piece skips a target with a message instead of failing it.
 */
export async function targetUnavailable(
  kind: TargetKind,
  options: TargetOptions = {},
): Promise<string | null> {
  const redisMissing = () =>
    options.sharedRedisUrl || spawnSync('redis-server', ['--version']).status === 0
      ? null
      : 'redis-server is not installed (or pass --redis-url to use a running Redis)';
  const postgresMissing = async () => {
    const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL, connectionTimeoutMillis: 3_000 });
    try {
      await client.connect();
      return null;
    } catch (error) {
      return `PostgreSQL at ${new URL(POSTGRES_ADMIN_URL).host} is not reachable (${(error as Error).message}); set DATABASE_URL`;
    } finally {
      await client.end().catch(() => {});
    }
  };
  switch (kind) {
    case 'a0':
    case 'a':
    case 'pglite':
      return null;
    case 'b':
      try {
        await importResumableStream();
      } catch (error) {
        return (error as Error).message;
      }
      return redisMissing();
    case 'd':
    case 'postgres':
      return postgresMissing();
    case 'redis':
      return (await postgresMissing()) ?? redisMissing();
  }
}

/** Starts `kind`: its store and Redis when it needs them, then its server process(es). */
export async function startTarget(kind: TargetKind, options: TargetOptions = {}): Promise<Target> {
  const workers = kind === 'redis' ? (options.workers ?? 1) : 1;
  let store: BenchStore | undefined;
  let redis: BenchRedis | undefined;
  const servers: ServerProcess[] = [];
  const close = async () => {
    await Promise.allSettled(servers.map((server) => server.close()));
    await Promise.allSettled([store?.cleanup(), redis?.close()]);
  };
  try {
    const outrunEnv: Record<string, string> = {
      // The embedded and PostgreSQL targets are one process with an in-process bus and queue, whatever
      // BENCH_REDIS_URL says; the `redis` target sets its own.
      REDIS_URL: '',
      // A target cut at its deadline hands its runs back on close, one warning per run; LOG_LEVEL=warn shows them.
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'error',
      ...(options.workerConcurrency ? { OUTRUN_WORKER_CONCURRENCY: String(options.workerConcurrency) } : {}),
      ...(options.workerBaseConcurrency
        ? { OUTRUN_WORKER_BASE_CONCURRENCY: String(options.workerBaseConcurrency) }
        : {}),
    };
    const parts: string[] = [];
    let mode: ServerMode = 'outrun';
    let env: Record<string, string> = outrunEnv;
    if (kind === 'a0') mode = 'bare';
    else if (kind === 'a') mode = 'plain';
    else if (kind === 'b') {
      redis = await createBenchRedis({ sharedUrl: options.sharedRedisUrl });
      mode = 'resumable';
      env = { REDIS_URL: redis.url, BENCH_REDIS_PREFIX: redis.prefix };
      parts.push(redis.description);
    } else if (kind === 'd') {
      store = await createBenchStore('postgres');
      mode = 'durable';
      env = { ...store.env };
      parts.push(store.description);
    } else {
      store = await createBenchStore(kind === 'pglite' ? 'pglite' : 'postgres');
      parts.push(store.description);
      if (kind === 'redis') {
        redis = await createBenchRedis({ sharedUrl: options.sharedRedisUrl });
        env = { ...outrunEnv, REDIS_URL: redis.url, OUTRUN_REDIS_PREFIX: redis.prefix };
        parts.push(redis.description);
      }
    }
    // The first Outrun instance migrates the database and seeds the admin key alone; the others then start at once.
    servers.push(await launchServer({ mode, store, env }));
    servers.push(
      ...(await Promise.all(Array.from({ length: workers - 1 }, () => launchServer({ mode, store, env })))),
    );
    parts.push(
      `${workers} server process${workers === 1 ? '' : 'es'} (PID ${servers.map((s) => s.pid).join(', ')})`,
    );

    const offsets = await Promise.all(servers.map((server) => server.clockOffset()));
    const clockOffset = offsets.reduce((sum, offset) => sum + offset, 0) / offsets.length;
    const databaseUrl = store?.kind === 'postgres' ? store.env.DATABASE_URL : undefined;
    const outrun = mode === 'outrun';
    return {
      kind,
      label: targetLabel(kind, workers),
      description: parts.join('; '),
      servers,
      clockOffset,
      async prepare(count, text) {
        if (!outrun) {
          const body = JSON.stringify({ text, model: CLOCK_MODEL_ID });
          return Array.from({ length: count }, (_, index) => ({
            url: `${servers[index % servers.length]!.url}/chat`,
            headers: { 'content-type': 'application/json' },
            body,
          }));
        }
        const chats = await new BenchApi(servers[0]!.url).createChats(count);
        const body = JSON.stringify({ input: { text }, model: CLOCK_MODEL_ID });
        return chats.map((chatId, index) => ({
          url: `${servers[index % servers.length]!.url}/v1/chats/${chatId}/runs`,
          headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
          body,
        }));
      },
      async cpu() {
        const [stats, database] = await Promise.all([
          Promise.all(servers.map((server) => server.stats())),
          databaseUrl ? postgresBackendCpuMicros(databaseUrl) : null,
        ]);
        return { servers: stats.map((stat) => stat.cpuMicros), database, redis: redis?.cpuMicros() ?? null };
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
