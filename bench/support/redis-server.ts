import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { cleanupOnInterrupt } from './store.ts';

/** How long a started redis-server gets to answer PING. */
const REDIS_START_TIMEOUT_MS = 5_000;
/** Keys deleted per SCAN round when a shared Redis is cleaned up. */
const SCAN_COUNT = 1_000;

/** A Redis for one benchmark: its URL, a key prefix of its own, and its CPU time when the benchmark started it. */
export interface BenchRedis {
  url: string;
  /** A prefix no other benchmark or deployment uses (`outrun-bench-<random>`). */
  prefix: string;
  /** Human-readable: which Redis, started by whom. */
  description: string;
  /** CPU time (µs) the redis-server process has used so far; null for a shared Redis (not ours to measure). */
  cpuMicros(): number | null;
  /** Stops the Redis the benchmark started (by its PID), or deletes this benchmark's keys from a shared one. */
  close(): Promise<void>;
}

/**
 * A Redis for a benchmark. Without `sharedUrl`, starts `redis-server` on a free loopback port with persistence
 * off (`--save "" --appendonly no`), so its CPU time can be read from /proc and counted; with `sharedUrl`,
 * uses that Redis under a unique key prefix, deletes the prefix's keys at the end and reports no CPU time.
 */
export async function createBenchRedis(options: { sharedUrl?: string } = {}): Promise<BenchRedis> {
  const prefix = `outrun-bench-${randomBytes(4).toString('hex')}`;
  if (options.sharedUrl) {
    const url = options.sharedUrl;
    const cleanup = () => deleteKeys(url, prefix);
    const unregister = cleanupOnInterrupt(cleanup);
    return {
      url,
      prefix,
      description: `shared Redis at ${new URL(url).host}, key prefix ${prefix} (its CPU is not counted)`,
      cpuMicros: () => null,
      async close() {
        unregister();
        await cleanup();
      },
    };
  }

  const port = await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let spawnError: Error | null = null;
  child.once('error', (error) => (spawnError = error));
  const pid = child.pid;
  // A benchmark that throws still stops its redis-server: `exit` handlers run on any normal exit.
  const killOnExit = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode !== null || child.signalCode !== null || spawnError) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  const unregister = cleanupOnInterrupt(stop);
  const url = `redis://127.0.0.1:${port}`;
  try {
    await waitForPing(url, () => spawnError);
  } catch (error) {
    unregister();
    await stop();
    throw error;
  }
  const version = await redisVersion(url);
  return {
    url,
    prefix,
    description: `redis-server ${version} started by the benchmark on port ${port} (PID ${pid}), persistence off`,
    cpuMicros: () => (pid === undefined ? null : processCpuMicros(pid)),
    async close() {
      unregister();
      await stop();
    },
  };
}

/** CPU time (user + system, µs) of process `pid` from /proc (Linux); null where it cannot be read. */
export function processCpuMicros(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of /proc/<pid>/stat (utime, stime) in clock ticks of 1/100 s (USER_HZ).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return null;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPing(url: string, failed: () => Error | null): Promise<void> {
  const deadline = Date.now() + REDIS_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const error = failed();
    if (error) throw new Error(`could not start redis-server: ${error.message}`);
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.ping();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      client.disconnect();
    }
  }
  throw new Error(`redis-server at ${url} did not answer within ${REDIS_START_TIMEOUT_MS} ms`);
}

async function redisVersion(url: string): Promise<string> {
  const client = new Redis(url);
  try {
    const info = await client.info('server');
    return /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  } finally {
    client.disconnect();
  }
}

async function deleteKeys(url: string, prefix: string): Promise<void> {
  const client = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', SCAN_COUNT);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}
