import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import type { Bus } from '../src/bus/bus.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { RedisBus } from '../src/bus/redis-bus.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { openTestDatabase, STORE_KINDS } from './support/databases.ts';
import { readSse, script } from './support/sse.ts';

const REDIS_URL = process.env.REDIS_URL;
const FIRST_KEY = 'revocation-admin-key-0123456789';
const SECOND_KEY = 'revocation-admin-key-rotated-9876';
/** How long a revoked key's stream may stay open on another instance. */
const CLOSE_BOUND_MS = 1_500;

/**
 * Two instances on one database: one executes runs, the other only serves HTTP. Revocation through one closes
 * streams on the other: over the shared bus (Redis when REDIS_URL is set), or by the periodic re-check when the
 * instances share no bus at all.
 */
describe.each(STORE_KINDS)('key revocation across instances on %s', (kind) => {
  const prefix = `outrun-access-${randomBytes(4).toString('hex')}`;
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  let database: DatabaseHandle | undefined;
  const instances: Outrun[] = [];

  const sharedBus = (): (() => Bus) => {
    if (REDIS_URL) return () => new RedisBus({ url: REDIS_URL, keyPrefix: `${prefix}:`, logger });
    const bus = new MemoryBus({ logger });
    // One in-process bus for both instances; neither may close it while the other uses it.
    return (): Bus => ({
      publish: (channel, message) => bus.publish(channel, message),
      subscribe: (channel, handler) => bus.subscribe(channel, handler),
      listening: () => bus.listening(),
      ready: () => bus.ready(),
      close: async () => undefined,
    });
  };

  const instance = async (options: {
    bus: Bus;
    worker: boolean;
    adminKey?: string;
    streamRecheckMs?: number;
  }): Promise<{ outrun: Outrun; url: string }> => {
    database ??= await openTestDatabase(kind);
    const outrun = await createOutrun({
      database,
      logger,
      bus: options.bus,
      queue: new MemoryQueue({ logger }),
      worker: options.worker,
      singleInstance: false,
      config: {
        port: 0,
        host: '127.0.0.1',
        adminKey: options.adminKey ?? FIRST_KEY,
        streamRecheckMs: options.streamRecheckMs ?? 60_000,
      },
    });
    instances.push(outrun);
    await outrun.start();
    return { outrun, url: await outrun.listen() };
  };

  const api = async (
    url: string,
    path: string,
    key: string,
    init: { method?: string; body?: unknown } = {},
  ) => {
    const response = await fetch(url + path, {
      method: init.method ?? 'GET',
      headers: {
        authorization: `Bearer ${key}`,
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: init.body !== undefined ? JSON.stringify(init.body) : undefined,
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };

  /** A user with a long run on `workerUrl`; returns their key, its id and the run. */
  const userWithLongRun = async (workerUrl: string) => {
    const me = await api(workerUrl, '/v1/me', FIRST_KEY);
    const user = await api(workerUrl, '/v1/admin/users', FIRST_KEY, {
      method: 'POST',
      body: {
        workspaceId: me.body.workspace.id,
        email: `user-${randomBytes(3).toString('hex')}@example.com`,
      },
    });
    const key = user.body.apiKey as string;
    const keyId = (await api(workerUrl, '/v1/api-keys', key)).body.items[0].id as string;
    const chat = await api(workerUrl, '/v1/chats', key, { method: 'POST', body: {} });
    const run = await api(workerUrl, `/v1/chats/${chat.body.chat.id}/runs`, key, {
      method: 'POST',
      body: { input: { text: script({ steps: 1, tokens: 400, delayMs: 50 }) } },
    });
    expect(run.status).toBe(201);
    return { key, keyId, chatId: chat.body.chat.id as string, runId: run.body.run.id as string };
  };

  /** Opens the run's stream and resolves with the time it ended. */
  const openStream = async (url: string, runId: string, key: string, query = false) => {
    const response = await fetch(
      query ? `${url}/v1/runs/${runId}/stream?access_token=${key}` : `${url}/v1/runs/${runId}/stream`,
      query ? {} : { headers: { authorization: `Bearer ${key}` } },
    );
    expect(response.status).toBe(200);
    const frames: string[] = [];
    const ended = (async () => {
      try {
        for await (const frame of readSse(response.body!)) frames.push(frame.data ?? '');
      } catch {
        // A connection cut mid-frame also ends the stream.
      }
      return Date.now();
    })();
    return { frames, ended };
  };

  afterEach(async () => {
    for (const outrun of instances.splice(0)) await outrun.close({ graceMs: 0 });
    await database?.close();
    database = undefined;
  });
  afterAll(async () => {
    if (!REDIS_URL) return;
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('refuses a revoked key on the other instance and closes its open stream there within a second', async () => {
    const bus = sharedBus();
    const worker = await instance({ bus: bus(), worker: true });
    const other = await instance({ bus: bus(), worker: false });
    const user = await userWithLongRun(worker.url);
    const token = await api(worker.url, '/v1/tokens', user.key, {
      method: 'POST',
      body: { chatId: user.chatId, scopes: ['read'] },
    });
    const byKey = await openStream(other.url, user.runId, user.key);
    const byToken = await openStream(other.url, user.runId, token.body.token, true);
    expect((await api(other.url, '/v1/me', user.key)).status).toBe(200);

    const revokedAt = Date.now();
    const revoke = await api(worker.url, `/v1/api-keys/${user.keyId}`, user.key, { method: 'DELETE' });
    expect(revoke.status).toBe(200);
    expect((await api(other.url, '/v1/me', user.key)).status).toBe(401);
    expect(await byKey.ended).toBeLessThan(revokedAt + CLOSE_BOUND_MS);
    expect(await byToken.ended).toBeLessThan(revokedAt + CLOSE_BOUND_MS);
    expect(byKey.frames).not.toContain('[DONE]');
  });

  it('closes a revoked key’s stream by the periodic re-check when the revocation never crosses the bus', async () => {
    const worker = await instance({ bus: new MemoryBus({ logger }), worker: true });
    const other = await instance({ bus: new MemoryBus({ logger }), worker: false, streamRecheckMs: 300 });
    const user = await userWithLongRun(worker.url);
    const stream = await openStream(other.url, user.runId, user.key);

    const revokedAt = Date.now();
    await api(worker.url, `/v1/api-keys/${user.keyId}`, user.key, { method: 'DELETE' });
    expect(await stream.ended).toBeLessThan(revokedAt + CLOSE_BOUND_MS);
  });

  it('revokes the previous owner key when OUTRUN_ADMIN_KEY changes', async () => {
    const bus = sharedBus();
    const first = await instance({ bus: bus(), worker: false });
    expect((await api(first.url, '/v1/me', FIRST_KEY)).body.user.role).toBe('owner');
    const second = await instance({ bus: bus(), worker: false, adminKey: SECOND_KEY });
    expect((await api(second.url, '/v1/me', SECOND_KEY)).body.user.role).toBe('owner');
    expect((await api(second.url, '/v1/me', FIRST_KEY)).status).toBe(401);
    // The first instance honours it too: authentication reads the database on every request.
    expect((await api(first.url, '/v1/me', FIRST_KEY)).status).toBe(401);
    const keys = await api(second.url, '/v1/api-keys', SECOND_KEY);
    expect(
      keys.body.items.filter((item: { revokedAt: string | null }) => item.revokedAt === null),
    ).toHaveLength(1);
  });
});
