import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { RedisBus } from '../src/bus/redis-bus.ts';
import { createRequestRateLimiter } from '../src/http/rate-limit.ts';
import { BullMqQueue } from '../src/queue/bullmq-queue.ts';
import { createPostgresDatabase } from './support/databases.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

const DATABASE_URL = process.env.DATABASE_URL;
const REDIS_URL = process.env.REDIS_URL;
const LIMIT = 5;

describe('per-key rate limits in memory', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('pglite', { rateLimiter: createRequestRateLimiter({ perMinute: LIMIT }) });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers the request past the limit with 429 rate_limited and Retry-After', async () => {
    const statuses: number[] = [];
    for (let index = 0; index < LIMIT; index++) statuses.push((await server.api('/v1/chats')).status);
    expect(statuses).toEqual(Array(LIMIT).fill(200));
    const limited = await server.api('/v1/chats');
    expect(limited.status).toBe(429);
    expect(limited.body.error).toMatchObject({ code: 'rate_limited', limit: LIMIT });
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
  });

  it('counts each key on its own, and neither bad keys nor routes outside /v1', async () => {
    expect((await server.api('/v1/chats', { key: 'not-a-key-at-all' })).status).toBe(401);
    expect((await server.fetch('/healthz')).status).toBe(200);
    // The admin is limited by now; a user created before the admin's window is not.
    const memberKey = await createMember(server);
    expect((await server.api('/v1/chats', { key: memberKey })).status).toBe(200);
  });
});

/** A member of the admin's workspace, created with a limiter-free request path (the store). */
async function createMember(server: TestServer): Promise<string> {
  const admin = await server.outrun.db
    .selectFrom('users')
    .select(['id', 'workspace_id'])
    .where('role', '=', 'owner')
    .executeTakeFirstOrThrow();
  const owner = { userId: admin.id, workspaceId: admin.workspace_id, role: 'owner' as const };
  const { apiKey } = await server.outrun.auth.createUser(owner, {
    workspaceId: admin.workspace_id,
    email: `member-${randomBytes(3).toString('hex')}@example.com`,
  });
  return apiKey;
}

describe.skipIf(!DATABASE_URL || !REDIS_URL)('per-key rate limits across two instances sharing Redis', () => {
  const prefix = `outrun-test-${randomBytes(4).toString('hex')}`;
  const adminKey = 'rate-limit-admin-key-0123456789';
  let drop: () => Promise<void>;
  const instances: Outrun[] = [];
  const urls: string[] = [];

  beforeAll(async () => {
    const database = await createPostgresDatabase();
    drop = database.drop;
    for (let index = 0; index < 2; index++) {
      const logger = pino({ level: 'silent' });
      const outrun = await createOutrun({
        logger,
        worker: index === 0,
        singleInstance: false,
        bus: new RedisBus({ url: REDIS_URL!, keyPrefix: `${prefix}:`, logger }),
        queue: new BullMqQueue({ url: REDIS_URL!, prefix, logger }),
        config: {
          databaseUrl: database.url,
          redisUrl: REDIS_URL,
          redisPrefix: prefix,
          rateLimitPerMinute: LIMIT,
          port: 0,
          host: '127.0.0.1',
          adminKey,
        },
      });
      await outrun.start();
      instances.push(outrun);
      urls.push(await outrun.listen());
    }
  });
  afterAll(async () => {
    for (const outrun of instances) await outrun.close({ graceMs: 0 });
    await drop?.();
    const redis = new Redis(REDIS_URL!);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('limits a key on the sixth request split over both instances', async () => {
    const get = (index: number) =>
      fetch(`${urls[index % 2]}/v1/chats`, { headers: { authorization: `Bearer ${adminKey}` } });
    const statuses: number[] = [];
    for (let index = 0; index < LIMIT; index++) statuses.push((await get(index)).status);
    expect(statuses).toEqual(Array(LIMIT).fill(200));
    for (const index of [0, 1]) {
      const limited = await get(index);
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
    }
  });
});
