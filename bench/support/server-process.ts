import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serverNodeFlags } from './environment.ts';
import type { BenchStore } from './store.ts';
import { wallNow } from './stats.ts';

/** The admin key benchmark servers are seeded with. */
export const BENCH_ADMIN_KEY = 'bench-admin-key-0123456789abcdef';

/**
 * What a benchmark server runs: `outrun` a full Outrun instance; `plain` the `streamText` → SSE pipe
 * (plain-pipe-server.ts); `resumable` that pipe plus `resumable-stream` on Redis (resumable-pipe-server.ts,
 * needs `REDIS_URL` and `BENCH_REDIS_PREFIX` in `env`); `bare` SSE frames written on a timer with no AI SDK
 * (bare-sse-server.ts); `bare-fan-out` one paced producer broadcast to every reader, each frame built once
 * (bare-fan-out-server.ts, the fan-out floor); `durable` the pipe plus a minimal durable PostgreSQL log
 * (durable-pipe-server.ts, the durable floor, needs `DATABASE_URL` in `env` or the store's).
 */
export type ServerMode = 'outrun' | 'plain' | 'resumable' | 'bare' | 'bare-fan-out' | 'durable';

export type ParentMessage =
  | { type: 'stats'; id: number; reset?: boolean }
  | { type: 'now'; id: number }
  | { type: 'gate'; id: number; name: string }
  | { type: 'profile'; id: number; action: 'start' }
  | { type: 'profile'; id: number; action: 'stop'; path: string }
  | { type: 'close' };

export type ChildMessage =
  | { type: 'ready'; url: string }
  | {
      type: 'stats';
      id: number;
      cpuMicros: number;
      rss: number;
      peakRss: number;
      loopDelayP99Ms: number;
      loopDelayMaxMs: number;
      /** Event-loop utilization since the last reset (0–1): the share of time the loop was not idle. */
      loopUtilization: number;
    }
  | { type: 'now'; id: number; now: number }
  | { type: 'gate'; id: number; at: number }
  | { type: 'profile'; id: number };

export type ServerStats = Omit<Extract<ChildMessage, { type: 'stats' }>, 'type' | 'id'>;

export interface ServerProcess {
  url: string;
  pid: number;
  /** CPU time (user + system) the server process has used, its RSS, its peak RSS and event-loop delay since the last reset. */
  stats(options?: { reset?: boolean }): Promise<ServerStats>;
  /** How far the server's `wallNow()` is ahead of ours (ms), from the IPC round trip with the smallest delay. */
  clockOffset(): Promise<number>;
  /** Releases the clock model's gate `name` in the server; returns when it was opened, on the server's clock. */
  openGate(name: string): Promise<number>;
  /**
   * With `BENCH_PROFILE_DIR` set, starts a CPU profile of the server (V8 inspector); `stop` writes it to
   * `<BENCH_PROFILE_DIR>/<name>.cpuprofile` (open it in Chrome DevTools). Without it, does nothing.
   */
  profile(action: 'start' | 'stop', name?: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a benchmark server in a child process on the same Node binary (`process.execPath`), so its CPU time
 * is measured apart from the client's: `outrun` is a full Outrun instance on `store`, the others the baselines
 * of `ServerMode`. Outrun's per-key request limit is off (`OUTRUN_RATE_LIMIT_PER_MINUTE=0`): a benchmark
 * starting hundreds of runs with one key measures throughput, not the limiter; `env` can set it again.
 */
export async function launchServer(options: {
  mode: ServerMode;
  store?: BenchStore;
  /** More environment for the server (Outrun configuration such as `OUTRUN_KEEP_ALIVE_MS`). */
  env?: Record<string, string>;
}): Promise<ServerProcess> {
  const child: ChildProcess = fork(fileURLToPath(new URL('./server-main.ts', import.meta.url)), [], {
    // The Node flags `npm start` passes, for every server alike (`serverNodeFlags`).
    execArgv: ['--import', import.meta.resolve('tsx'), ...serverNodeFlags()],
    env: {
      ...process.env,
      // One embedded instance: in-process bus and queue (set BENCH_REDIS_URL to measure with Redis).
      REDIS_URL: process.env.BENCH_REDIS_URL ?? '',
      OUTRUN_RATE_LIMIT_PER_MINUTE: '0',
      ...options.store?.env,
      ...options.env,
      BENCH_SERVER_MODE: options.mode,
      BENCH_ADMIN_KEY,
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let nextId = 1;
  const waiting = new Map<number, (message: ChildMessage) => void>();
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );

  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) =>
      reject(new Error(`the benchmark server exited with ${code} before it was ready`)),
    );
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'ready') resolve(message.url);
      else waiting.get(message.id)?.(message);
    });
  });

  const request = <T extends ChildMessage>(message: ParentMessage & { id: number }): Promise<T> =>
    new Promise((resolve, reject) => {
      if (exited) return reject(new Error('the benchmark server has exited'));
      waiting.set(message.id, (reply) => {
        waiting.delete(message.id);
        resolve(reply as T);
      });
      child.send(message);
    });

  return {
    url,
    pid: child.pid!,
    async stats(statsOptions = {}) {
      const {
        type: _type,
        id: _id,
        ...stats
      } = await request<Extract<ChildMessage, { type: 'stats' }>>({
        type: 'stats',
        id: nextId++,
        reset: statsOptions.reset,
      });
      return stats;
    },
    async clockOffset() {
      let best = { roundTrip: Infinity, offset: 0 };
      for (let index = 0; index < 50; index++) {
        const sent = wallNow();
        const reply = await request<Extract<ChildMessage, { type: 'now' }>>({ type: 'now', id: nextId++ });
        const received = wallNow();
        if (received - sent < best.roundTrip) {
          best = { roundTrip: received - sent, offset: reply.now - (sent + received) / 2 };
        }
      }
      return best.offset;
    },
    async openGate(name) {
      const reply = await request<Extract<ChildMessage, { type: 'gate' }>>({
        type: 'gate',
        id: nextId++,
        name,
      });
      return reply.at;
    },
    async profile(action, name = 'server') {
      const directory = process.env.BENCH_PROFILE_DIR;
      if (!directory) return;
      if (action === 'start') await request({ type: 'profile', id: nextId++, action });
      else
        await request({ type: 'profile', id: nextId++, action, path: join(directory, `${name}.cpuprofile`) });
    },
    async close() {
      if (exited) return;
      child.send({ type: 'close' } satisfies ParentMessage);
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exit;
      clearTimeout(timer);
    },
  };
}
