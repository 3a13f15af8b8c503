import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
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

  it('counts a scoped token apart from the key that issued it', async () => {
    const memberKey = await createMember(server);
    const chat = await server.api('/v1/chats', { method: 'POST', body: {}, key: memberKey });
    const chatId = chat.body.chat.id as string;
    const issued = await server.api('/v1/tokens', {
      method: 'POST',
      body: { chatId, scopes: ['read'] },
      key: memberKey,
    });
    expect(issued.status).toBe(201);
    const token = issued.body.token as string;
    // The key has spent 3 of its 5; a browser using the token up to its own limit takes none of the rest.
    const byToken: number[] = [];
    for (let index = 0; index <= LIMIT; index++) {
      byToken.push((await server.api(`/v1/chats/${chatId}`, { key: token })).status);
    }
    expect(byToken).toEqual([...Array(LIMIT).fill(200), 429]);
    expect((await server.api('/v1/chats', { key: memberKey })).status).toBe(200);
  });
});

describe('failed authentications per client address', () => {
  const FAILURES = 3;
  let server: TestServer;
  let proxied: TestServer;

  beforeAll(async () => {
    // With REDIS_URL the counts live in Redis, by address: a prefix of their own keeps these servers' apart.
    const redisPrefix = () => `outrun-test-${randomBytes(4).toString('hex')}`;
    server = await startTestServer('pglite', {
      config: { authFailuresPerMinute: FAILURES, redisPrefix: redisPrefix() },
    });
    proxied = await startTestServer('pglite', {
      config: { authFailuresPerMinute: FAILURES, trustProxy: ['127.0.0.1'], redisPrefix: redisPrefix() },
    });
  });
  afterAll(async () => {
    await server?.close();
    await proxied?.close();
  });

  it('refuses an address past its failures without a look-up, but still serves a key that worked', async () => {
    // The admin's key works here before the failures; a member's key is new to this instance.
    expect((await server.api('/v1/me')).status).toBe(200);
    const memberKey = await createMember(server);
    const bad = (index: number, headers: Record<string, string> = {}) =>
      server.api('/v1/chats', { key: `not-a-real-key-${index}-0123456789`, headers });

    const statuses: number[] = [];
    for (let index = 0; index < FAILURES; index++) statuses.push((await bad(index)).status);
    expect(statuses).toEqual(Array(FAILURES).fill(401));

    const lookUps = vi.spyOn(server.outrun.auth, 'authenticate');
    // Without OUTRUN_TRUST_PROXY a forwarded address is not believed: the peer is still the one limited.
    const limited = await bad(FAILURES, { 'x-forwarded-for': '203.0.113.9' });
    expect(limited.status).toBe(429);
    expect(limited.body.error).toMatchObject({ code: 'rate_limited', limit: FAILURES });
    expect(limited.body.error.message).toContain('failed authentications');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    // A valid key this instance has not seen work is refused the same way, unread.
    expect((await server.api('/v1/chats', { key: memberKey })).status).toBe(429);
    expect(lookUps).not.toHaveBeenCalled();
    // The key that worked before goes on, and so do routes outside /v1.
    expect((await server.api('/v1/chats')).status).toBe(200);
    expect((await server.fetch('/healthz')).status).toBe(200);
    // A scoped token is checked by its signature, with no look-up to spare: it is not limited.
    const chatId = await server.createChat();
    const issued = await server.api('/v1/tokens', { method: 'POST', body: { chatId, scopes: ['read'] } });
    expect(issued.status).toBe(201);
    expect((await server.api(`/v1/chats/${chatId}/runs`, { key: issued.body.token })).status).toBe(200);
    lookUps.mockRestore();
    // `/metrics` counts both: the failures looked up, and the requests refused unread.
    const metrics = await (await server.fetch('/metrics')).text();
    expect(metrics).toContain(`outrun_auth_failures_total{result="unauthorized"} ${FAILURES}`);
    expect(metrics).toContain('outrun_auth_failures_total{result="refused"} 2');
  });

  it('counts each forwarded client on its own behind a trusted proxy, an IPv6 one by its /64', async () => {
    const bad = (client: string) =>
      proxied.api('/v1/chats', { key: 'not-a-real-key-0123456789', headers: { 'x-forwarded-for': client } });
    for (let index = 0; index < FAILURES; index++) expect((await bad('203.0.113.1')).status).toBe(401);
    expect((await bad('203.0.113.1')).status).toBe(429);
    expect((await bad('203.0.113.2')).status).toBe(401);
    // An IPv6 client is counted by its /64: a new address in it for each guess does not start a new count.
    for (let index = 0; index < FAILURES; index++) {
      expect((await bad(`2001:db8:7:8::${index + 1}`)).status).toBe(401);
    }
    expect((await bad('2001:db8:7:8:ffff::42')).status).toBe(429);
    expect((await bad('2001:db8:7:9::1')).status).toBe(401);
    // The proxy itself (no header) has failed nothing.
    expect((await proxied.api('/v1/chats', { key: 'not-a-real-key-0123456789' })).status).toBe(401);
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
          authFailuresPerMinute: LIMIT,
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

  it('refuses an address on the failed authentication past the limit, split over both instances', async () => {
    const bad = (index: number) =>
      fetch(`${urls[index % 2]}/v1/chats`, {
        headers: { authorization: 'Bearer not-a-real-key-0123456789' },
      });
    const statuses: number[] = [];
    for (let index = 0; index < LIMIT; index++) statuses.push((await bad(index)).status);
    expect(statuses).toEqual(Array(LIMIT).fill(401));
    for (const index of [0, 1]) expect((await bad(index)).status).toBe(429);
  });
});
