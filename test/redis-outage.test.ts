import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BusChannel, BusUnavailableError } from '../src/bus/bus.ts';
import { assertRedisReachable, RedisUnreachableError } from '../src/bus/redis-reachable.ts';
import { RedisBus } from '../src/bus/redis-bus.ts';
import { createOutrun } from '../src/app.ts';
import { Worker } from 'bullmq';
import { BullMqQueue } from '../src/queue/bullmq-queue.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import { QueueUnavailableError } from '../src/queue/queue.ts';
import { openTestDatabase } from './support/databases.ts';
import { freePort } from './support/ports.ts';
import { OwnRedisServer } from './support/redis-server.ts';
import { script } from './support/sse.ts';

/** These tests take Redis down, so they run their own `redis-server`, never the shared one. */
const HAS_REDIS_SERVER = spawnSync('redis-server', ['--version']).status === 0;
const PREFIX = `outrun-test-outage-${randomBytes(4).toString('hex')}`;
const silent = pino({ level: 'silent' });

/** How long a call took to settle, whether it resolved or rejected, and how. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; error: unknown }> {
  const started = performance.now();
  try {
    await promise;
    return { ms: performance.now() - started, error: undefined };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

describe.runIf(HAS_REDIS_SERVER)('through a Redis outage', () => {
  let server: OwnRedisServer;
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    server = await OwnRedisServer.start();
  });
  afterEach(async () => {
    await server.restart();
    await Promise.all(closers.splice(0).map((close) => close()));
  });
  afterAll(async () => {
    await server?.stop();
  });

  function createBus(): RedisBus {
    const bus = new RedisBus({
      url: server.url,
      keyPrefix: `${PREFIX}:`,
      logger: silent,
      subscribeTimeoutMs: 1000,
    });
    closers.push(() => bus.close());
    return bus;
  }

  /** A queue that records the run ids of the jobs it handles, shown to handle one already. */
  async function handlingQueue(queueName: string): Promise<{ queue: BullMqQueue; handled: string[] }> {
    const queue = new BullMqQueue({ url: server.url, prefix: PREFIX, queueName, logger: silent });
    closers.push(() => queue.close());
    const handled: string[] = [];
    queue.process(async (job) => void handled.push(job.runId));
    await queue.enqueue({ runId: 'run_before' });
    await vi.waitFor(() => expect(handled).toEqual(['run_before']), { timeout: 10_000 });
    return { queue, handled };
  }

  it('bounds publish while Redis is down, and delivers again once it is back', async () => {
    const bus = createBus();
    const other = createBus();
    const own: unknown[] = [];
    const received: unknown[] = [];
    await bus.subscribe(BusChannel.runStop, (message) => void own.push(message));
    await other.subscribe(BusChannel.runStop, (message) => void received.push(message));
    await bus.publish(BusChannel.runStop, { runId: 'run_before' });
    await vi.waitFor(() => expect(received).toEqual([{ runId: 'run_before' }]));

    await server.stop();
    const publishing = await timed(bus.publish(BusChannel.runStop, { runId: 'run_during' }));
    expect(publishing.ms).toBeLessThan(1000);
    expect(publishing.error).toBeInstanceOf(BusUnavailableError);
    expect((publishing.error as Error).message).toContain(`127.0.0.1:${server.port}`);
    // The publishing instance's own handlers have it all the same: they never needed Redis.
    expect(own).toEqual([{ runId: 'run_before' }, { runId: 'run_during' }]);
    const subscribing = await timed(bus.subscribe(BusChannel.apiKeyRevoked, () => {}));
    expect(subscribing.error).toBeInstanceOf(BusUnavailableError);
    expect(bus.ready()).toBe(false);

    await server.restart();
    await vi.waitFor(() => expect(bus.ready() && other.ready()).toBe(true), {
      timeout: 10_000,
      interval: 50,
    });
    await bus.publish(BusChannel.runStop, { runId: 'run_after' });
    await vi.waitFor(() => expect(received).toEqual([{ runId: 'run_before' }, { runId: 'run_after' }]));
    expect(own).toEqual([{ runId: 'run_before' }, { runId: 'run_during' }, { runId: 'run_after' }]);
  });

  it('resolves a subscribe made during an outage once Redis is back and confirms it', async () => {
    const bus = new RedisBus({
      url: server.url,
      keyPrefix: `${PREFIX}:`,
      logger: silent,
      subscribeTimeoutMs: 10_000,
    });
    closers.push(() => bus.close());
    const publisher = createBus();
    await bus.publish(BusChannel.runStop, { runId: 'run_warmup' });
    await server.stop();
    const received: unknown[] = [];
    const subscribing = bus.subscribe(BusChannel.runStop, (message) => void received.push(message));
    await server.restart();
    await subscribing;
    await vi.waitFor(() => expect(publisher.ready()).toBe(true), { timeout: 10_000, interval: 50 });
    await publisher.publish(BusChannel.runStop, { runId: 'run_after' });
    await vi.waitFor(() => expect(received).toEqual([{ runId: 'run_after' }]));
  });

  it('subscribes again to every channel after its subscriber connection is killed', async () => {
    const bus = createBus();
    const publisher = createBus();
    const received: string[] = [];
    const channels = ['a', 'b', 'c'].map((id) => BusChannel.runEvents(`run_${id}`));
    for (const channel of channels)
      await bus.subscribe(channel, (message) => void received.push(message.runId));
    const admin = new Redis(server.url);
    closers.push(async () => void (await admin.quit()));
    expect(Number(await admin.client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThan(0);
    // What is published while the subscriber is away is lost, as the port allows: wait until it is back.
    await vi.waitFor(
      async () => {
        const counts = (await admin.pubsub(
          'NUMSUB',
          ...channels.map((channel) => `${PREFIX}:${channel.name}`),
        )) as (string | number)[];
        expect(counts.filter((_, index) => index % 2 === 1).map(Number)).toEqual([1, 1, 1]);
      },
      { timeout: 10_000, interval: 50 },
    );
    for (const channel of channels)
      await publisher.publish(channel, { runId: channel.name.slice('run-events:'.length), events: [] });
    await vi.waitFor(() => expect(received).toEqual(['run_a', 'run_b', 'run_c']));
  });

  it('answers /readyz and a streaming start 503 while Redis is down, writing nothing, and streams once Redis is back', async () => {
    const database = await openTestDatabase('pglite');
    const adminKey = 'outage-admin-key-0123456789abcdef';
    const outrun = await createOutrun({
      database,
      logger: silent,
      bus: createBus(),
      queue: new MemoryQueue({ logger: silent }),
      config: { port: 0, host: '127.0.0.1', adminKey },
    });
    closers.push(async () => {
      await outrun.close({ graceMs: 0 });
      await database.close();
    });
    await outrun.start();
    const url = await outrun.listen();
    const headers = { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' };
    const chat = await (await fetch(`${url}/v1/chats`, { method: 'POST', headers, body: '{}' })).json();
    const start = () =>
      fetch(`${url}/v1/chats/${chat.chat.id}/runs`, {
        method: 'POST',
        headers: { ...headers, accept: 'text/event-stream' },
        body: JSON.stringify({ input: { text: script({ steps: 1, tokens: 2 }) } }),
      });

    const readiness = async () => {
      const response = await fetch(`${url}/readyz`);
      return { status: response.status, body: await response.json() };
    };
    expect((await readiness()).status).toBe(200);

    await server.stop();
    // Not ready while Redis is down (DESIGN §4): a load balancer sends its starts elsewhere.
    await vi.waitFor(
      async () =>
        expect(await readiness()).toEqual({
          status: 503,
          body: { error: { code: 'not_ready', message: 'Redis is not reachable.' } },
        }),
      { timeout: 5_000, interval: 50 },
    );
    const refused = await start();
    expect(refused.status).toBe(503);
    expect((await refused.json()).error.code).toBe('service_unavailable');
    const runs = await (await fetch(`${url}/v1/chats/${chat.chat.id}/runs`, { headers })).json();
    expect(runs.items).toEqual([]);

    await server.restart();
    await vi.waitFor(() => expect(outrun.bus.ready()).toBe(true), { timeout: 10_000, interval: 50 });
    expect((await readiness()).status).toBe(200);
    const started = await start();
    expect(started.status).toBe(200);
    expect(await started.text()).toContain('data: [DONE]');
  });

  it('bounds enqueue while Redis is down, and handles jobs again once it is back', async () => {
    const { queue, handled } = await handlingQueue('outage');

    await server.stop();
    const enqueueing = await timed(queue.enqueue({ runId: 'run_during' }));
    expect(enqueueing.ms).toBeLessThan(2000);
    expect(enqueueing.error).toBeInstanceOf(QueueUnavailableError);

    await server.restart();
    await vi.waitFor(() => queue.enqueue({ runId: 'run_after' }), { timeout: 10_000, interval: 100 });
    await vi.waitFor(() => expect(handled).toContain('run_after'), { timeout: 15_000 });
  });

  it('takes jobs again after an outage longer than its blocking read', async () => {
    const { queue, handled } = await handlingQueue('long-outage');

    // Longer than BullMQ's blocking read and its watchdog (drainDelay 5 s + 1 s).
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 7_000));
    await server.restart();
    await vi.waitFor(() => queue.enqueue({ runId: 'run_after' }), { timeout: 10_000, interval: 100 });
    await vi.waitFor(() => expect(handled).toContain('run_after'), { timeout: 15_000 });
  });

  it('closes in bounded time when BullMQ’s worker never finishes closing', async () => {
    // After a Redis outage BullMQ's close can wait forever on a connection parked in `reconnecting`
    // (`outrun serve` then never exited after SIGTERM): the fault, injected.
    const workers: Worker[] = [];
    const stuck = vi.spyOn(Worker.prototype, 'close').mockImplementation(function (this: Worker) {
      workers.push(this);
      return new Promise<void>(() => {});
    });
    const queue = new BullMqQueue({
      url: server.url,
      prefix: PREFIX,
      queueName: 'stuck-close',
      logger: silent,
      closeTimeoutMs: 500,
    });
    try {
      queue.process(async () => {});
      await queue.enqueue({ runId: 'run_stuck' });
      const closing = await timed(queue.close());
      expect(closing.error).toBeUndefined();
      expect(closing.ms).toBeLessThan(2_000);
      expect(stuck).toHaveBeenCalled();
    } finally {
      stuck.mockRestore();
      // BullMQ's own close, for real this time, so the test leaves no connection behind.
      await Promise.all(workers.map((worker) => worker.close(true)));
    }
  });
});

describe('assertRedisReachable', () => {
  it('fails within its timeout with an error naming REDIS_URL when nothing listens', async () => {
    const url = `redis://:secret@127.0.0.1:${await freePort()}`;
    const checking = await timed(assertRedisReachable(url, { timeoutMs: 1000 }));
    expect(checking.ms).toBeLessThan(2000);
    expect(checking.error).toBeInstanceOf(RedisUnreachableError);
    expect((checking.error as Error).message).toMatch(/REDIS_URL/);
    expect((checking.error as Error).message).not.toMatch(/secret/);
  });

  it.runIf(HAS_REDIS_SERVER)('resolves once the server answers', async () => {
    const server = await OwnRedisServer.start();
    try {
      await expect(assertRedisReachable(server.url, { timeoutMs: 2000 })).resolves.toBeUndefined();
    } finally {
      await server.stop();
    }
  });
});
