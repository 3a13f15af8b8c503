import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { RedisBus } from '../src/bus/redis-bus.ts';
import { BullMqQueue } from '../src/queue/bullmq-queue.ts';
import { createPostgresDatabase } from './support/databases.ts';
import { startServerProcess } from './support/server-process.ts';
import { answeredText, collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { pollUntil } from './support/wait.ts';

const DATABASE_URL = process.env.DATABASE_URL;
const REDIS_URL = process.env.REDIS_URL;
const ADMIN_KEY = 'scale-out-admin-key-0123456789';

/** Requests to the instance listening at `baseUrl()`, as the admin. */
function adminClient(baseUrl: () => string) {
  const request = async (path: string, init: RequestInit = {}) =>
    fetch(baseUrl() + path, {
      ...init,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json', ...init.headers },
    });
  return {
    request,
    /** Creates a chat and starts a scripted run in it; `accept: text/event-stream` streams the answer. */
    async startRun(options: Parameters<typeof script>[0], accept?: string) {
      const chat = await (await request('/v1/chats', { method: 'POST', body: '{}' })).json();
      return request(`/v1/chats/${chat.chat.id}/runs`, {
        method: 'POST',
        headers: accept ? { accept } : {},
        body: JSON.stringify({ input: { text: script(options) } }),
      });
    },
    /** Reads the run until `done` holds, and returns it. */
    waitForRun: (runId: string, done: (run: any) => boolean) =>
      pollUntil(async () => (await (await request(`/v1/runs/${runId}`)).json()).run, done),
    /** The run's whole stream, from its first event to its end. */
    readStream: async (runId: string) => collectStream(await request(`/v1/runs/${runId}/stream`)),
  };
}

/**
 * Two instances on one PostgreSQL and one Redis: an API-only instance that takes requests, and a worker that
 * executes runs. Nothing is shared in-process; everything crosses Redis (queue, stop signals, live events).
 */
describe.skipIf(!DATABASE_URL || !REDIS_URL)('scale-out on PostgreSQL and Redis', () => {
  const prefix = `outrun-test-${randomBytes(4).toString('hex')}`;
  let drop: () => Promise<void>;
  let databaseUrl: string;
  let api: Outrun;
  let worker: Outrun;
  let url: string;

  const instance = async (
    role: 'api' | 'worker',
    databaseUrl: string,
    options: { prefix?: string; leaseMs?: number; sweepIntervalMs?: number; schedulePollMs?: number } = {},
  ) => {
    const logger = pino({ level: 'silent' });
    const redisPrefix = options.prefix ?? prefix;
    const outrun = await createOutrun({
      logger,
      worker: role === 'worker',
      singleInstance: false,
      bus: new RedisBus({ url: REDIS_URL!, keyPrefix: `${redisPrefix}:`, logger }),
      queue: new BullMqQueue({ url: REDIS_URL!, prefix: redisPrefix, logger }),
      config: {
        databaseUrl,
        port: 0,
        host: '127.0.0.1',
        adminKey: ADMIN_KEY,
        leaseMs: options.leaseMs,
        sweepIntervalMs: options.sweepIntervalMs,
        schedulePollIntervalMs: options.schedulePollMs,
      },
    });
    await outrun.start();
    return outrun;
  };

  const { request, startRun } = adminClient(() => url);

  beforeAll(async () => {
    const database = await createPostgresDatabase();
    drop = database.drop;
    databaseUrl = database.url;
    api = await instance('api', database.url);
    worker = await instance('worker', database.url);
    url = await api.listen();
  });
  afterAll(async () => {
    await api?.close({ graceMs: 0 });
    await worker?.close({ graceMs: 0 });
    await drop?.();
    // Leave Redis as we found it: drop every key this file's queues and buses wrote.
    const redis = new Redis(REDIS_URL!);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('runs on the worker and streams live through the API instance, dense and exact', async () => {
    const response = await startRun({ steps: 2, tokens: 30, delayMs: 10 }, 'text/event-stream');
    const stream = await collectStream(response);
    expect(stream.done).toBe(true);
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    expect(streamedText(stream.events)).toBe(scriptedText(2, 30));
    const runId = response.headers.get('x-outrun-run-id')!;
    expect(worker.executor.isActive(runId)).toBe(false);
    expect(api.executor.activeCount).toBe(0);
  });

  it('ends a reader on the API instance resumed past the end of a run on the worker with just [DONE] when it ends', async () => {
    const { run } = await (await startRun({ tokens: 20, delayMs: 100 })).json();
    const response = await request(`/v1/runs/${run.id}/stream?after=1000`);
    expect(response.status).toBe(200);
    // The reader is in before the run ends: its cursor is ahead of a live log.
    const current = (await (await request(`/v1/runs/${run.id}`)).json()).run;
    expect(['pending', 'running']).toContain(current.status);
    const stream = await collectStream(response);
    // No keep-alive (15 s apart) came first: the run's terminal event, across Redis, ended the stream.
    expect(stream).toEqual({ events: [], done: true, comments: [] });
  });

  it('stops a run executing on the worker from the API instance, at once', async () => {
    const { run } = await (await startRun({ steps: 1, tokens: 5000, delayMs: 5 })).json();
    const deadline = Date.now() + 10_000;
    while (!worker.executor.isActive(run.id) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(worker.executor.isActive(run.id)).toBe(true);

    const stoppedAt = Date.now();
    const stop = await (await request(`/v1/runs/${run.id}/stop`, { method: 'POST' })).json();
    expect(stop.stopped).toBe(true);
    for (;;) {
      const current = (await (await request(`/v1/runs/${run.id}`)).json()).run;
      if (current.status !== 'running') {
        expect(current).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // Well inside the heartbeat interval (a third of the 30 s lease): the stop crossed the Redis bus.
    expect(Date.now() - stoppedAt).toBeLessThan(5_000);
  });

  it('resumes on another worker a run whose worker process was killed with kill -9', async () => {
    // A queue and bus of its own, so the in-process worker above cannot take the job.
    const isolated = `${prefix}-resume`;
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: REDIS_URL!,
      OUTRUN_REDIS_PREFIX: isolated,
      OUTRUN_ADMIN_KEY: ADMIN_KEY,
      OUTRUN_LEASE_MS: '1500',
      OUTRUN_SWEEP_INTERVAL_MS: '300',
    };
    const victim = await startServerProcess(env, 'worker');
    const front = await instance('api', databaseUrl, {
      prefix: isolated,
      leaseMs: 1500,
      sweepIntervalMs: 300,
    });
    let rescuer: Outrun | undefined;
    try {
      const frontUrl = await front.listen();
      const client = adminClient(() => frontUrl);
      const { run } = await (await client.startRun({ steps: 3, tokens: 40, delayMs: 20 })).json();
      const waitFor = (done: (current: any) => boolean) => client.waitForRun(run.id, done);
      await waitFor((current) => current.stepCount >= 1);

      victim.child.kill('SIGKILL');
      await victim.exited;
      rescuer = await instance('worker', databaseUrl, {
        prefix: isolated,
        leaseMs: 1500,
        sweepIntervalMs: 300,
      });

      const settled = await waitFor(
        (current) => current.status !== 'running' && current.status !== 'pending',
      );
      expect(settled).toMatchObject({ status: 'succeeded', stepCount: 3, error: null });
      expect(settled.attempt).toBe(2);

      const stream = await client.readStream(run.id);
      expect(stream.done).toBe(true);
      expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
      // The killed worker's partial step is closed as interrupted; the answer is the scripted text, once.
      expect(stream.events.some((event) => event.chunk.type === 'data-step-interrupted')).toBe(true);
      expect(answeredText(stream.events)).toBe(scriptedText(3, 40));
    } finally {
      if (victim.child.exitCode === null && victim.child.signalCode === null) victim.child.kill('SIGKILL');
      await rescuer?.close({ graceMs: 0 });
      await front.close({ graceMs: 0 });
    }
  });

  it('hands the runs of a worker stopped with SIGTERM to the other worker at once, not after a lease', async () => {
    const isolated = `${prefix}-release`;
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: REDIS_URL!,
      OUTRUN_REDIS_PREFIX: isolated,
      OUTRUN_ADMIN_KEY: ADMIN_KEY,
      OUTRUN_SHUTDOWN_GRACE_MS: '200',
    };
    const leaving = await startServerProcess(env, 'worker');
    // A long lease: if the run moved only once its lease ran out, this test would time out.
    const front = await instance('api', databaseUrl, { prefix: isolated, leaseMs: 60_000 });
    let staying: Outrun | undefined;
    try {
      const frontUrl = await front.listen();
      const client = adminClient(() => frontUrl);
      const { run } = await (await client.startRun({ steps: 2, tokens: 60, delayMs: 20 })).json();
      const waitFor = (done: (current: any) => boolean) => client.waitForRun(run.id, done);
      await waitFor((current) => current.status === 'running');
      staying = await instance('worker', databaseUrl, { prefix: isolated, leaseMs: 60_000 });

      const signalledAt = Date.now();
      leaving.child.kill('SIGTERM');
      expect((await leaving.exited).code).toBe(0);
      const settled = await waitFor((current) => current.status === 'succeeded');
      expect(Date.now() - signalledAt).toBeLessThan(20_000);
      expect(settled).toMatchObject({ attempt: 2, error: null });
      const stream = await client.readStream(run.id);
      expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
      expect(answeredText(stream.events)).toBe(scriptedText(2, 60));
    } finally {
      if (leaving.child.exitCode === null && leaving.child.signalCode === null) leaving.child.kill('SIGKILL');
      await staying?.close({ graceMs: 0 });
      await front.close({ graceMs: 0 });
    }
  });

  it('fires on time, on the worker, a schedule written through an instance whose runner stopped', async () => {
    // Both poll every ten minutes: the worker's runner can only be on time if the write reached it over Redis.
    const isolated = `${prefix}-schedules`;
    const front = await instance('api', databaseUrl, { prefix: isolated, schedulePollMs: 600_000 });
    const back = await instance('worker', databaseUrl, { prefix: isolated, schedulePollMs: 600_000 });
    try {
      await front.scheduler.stop();
      const frontUrl = await front.listen();
      const client = adminClient(() => frontUrl);
      const chat = await (await client.request('/v1/chats', { method: 'POST', body: '{}' })).json();
      const at = new Date(Date.now() + 1_500);
      const created = await client.request(`/v1/chats/${chat.chat.id}/schedules`, {
        method: 'POST',
        body: JSON.stringify({ at: at.toISOString(), input: { text: script({ steps: 1, tokens: 2 }) } }),
      });
      expect(created.status).toBe(201);
      const runs = await pollUntil(
        async () => (await (await client.request(`/v1/chats/${chat.chat.id}/runs`)).json()).items,
        (items: any[]) => items.length > 0,
        { timeoutMs: 10_000 },
      );
      expect(runs[0]).toMatchObject({ trigger: 'schedule' });
      const lateMs = new Date(runs[0].createdAt).getTime() - at.getTime();
      expect(lateMs).toBeGreaterThanOrEqual(0);
      expect(lateMs).toBeLessThan(1_000);
    } finally {
      await back.close({ graceMs: 0 });
      await front.close({ graceMs: 0 });
    }
  });
});
