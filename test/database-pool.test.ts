import pino from 'pino';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { openTestDatabase } from './support/databases.ts';
import { ADMIN_KEY } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** How long a statement waits for a pooled connection here before its request answers 503. */
const CONNECT_TIMEOUT_MS = 1_000;

/**
 * A pool whose connections all stay busy (here its one connection, held by the test) is not a database that
 * is down: requests that cannot get a connection in time answer `503 service_unavailable` saying so, a failing
 * start makes no further statements, and `/metrics` shows the pool's connections and its waiters.
 */
describe.skipIf(!process.env.DATABASE_URL)('a database pool with every connection busy', () => {
  let database: DatabaseHandle;
  let outrun: Outrun;
  let url: string;

  beforeAll(async () => {
    database = await openTestDatabase('postgres', { poolSize: 1, connectTimeoutMs: CONNECT_TIMEOUT_MS });
    outrun = await createOutrun({
      database,
      bus: new MemoryBus(),
      queue: new MemoryQueue(),
      singleInstance: true,
      logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
      config: { port: 0, host: '127.0.0.1', adminKey: ADMIN_KEY },
    });
    await outrun.start();
    url = await outrun.listen();
  });
  afterAll(async () => {
    await outrun?.close({ graceMs: 0 }).catch(() => {});
    await database?.close().catch(() => {});
  });

  const call = async (path: string, init: { method?: string; body?: unknown } = {}) => {
    const response = await fetch(url + path, {
      method: init.method ?? 'GET',
      headers: {
        authorization: `Bearer ${ADMIN_KEY}`,
        ...(init.body ? { 'content-type': 'application/json' } : {}),
      },
      body: init.body ? JSON.stringify(init.body) : undefined,
    });
    return { status: response.status, headers: response.headers, body: await response.json() };
  };

  /** Holds the pool's one connection until the returned function is called. */
  const holdTheConnection = async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held!: () => void;
    const isHeld = new Promise<void>((resolve) => (held = resolve));
    const holding = outrun.db.connection().execute(async (connection) => {
      await sql`select 1`.execute(connection);
      held();
      await released;
    });
    await isHeld;
    return async () => {
      release();
      await holding;
    };
  };

  it('answers 503 saying no connection came free, and shows the waiter on /metrics', async () => {
    const chat = await call('/v1/chats', { method: 'POST', body: {} });
    expect(chat.status).toBe(201);
    const release = await holdTheConnection();
    try {
      const waiting = call(`/v1/chats/${chat.body.chat.id}`);
      await pollUntil(
        () => outrun.metrics.databasePoolWaiting.get(),
        (gauge) => gauge.values[0]?.value === 1,
        { timeoutMs: CONNECT_TIMEOUT_MS / 2, intervalMs: 10 },
      );
      const connections = await outrun.metrics.databasePoolConnections.get();
      expect(Object.fromEntries(connections.values.map((v) => [v.labels.state, v.value]))).toEqual({
        in_use: 1,
        idle: 0,
      });

      const answer = await waiting;
      expect(answer.status).toBe(503);
      expect(answer.body.error.code).toBe('service_unavailable');
      expect(answer.body.error.message).toMatch(/no database connection came free in time/i);
      expect(Number(answer.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      await release();
    }
    expect((await call(`/v1/chats/${chat.body.chat.id}`)).status).toBe(200);
    expect((await outrun.metrics.databasePoolWaiting.get()).values[0]?.value).toBe(0);
  });

  it('fails a start that got no connection at once: no key check or chat read after it', async () => {
    const chat = await call('/v1/chats', { method: 'POST', body: {} });
    const authenticate = vi.spyOn(outrun.auth, 'authenticate');
    const getRow = vi.spyOn(outrun.chats, 'getRow');
    const release = await holdTheConnection();
    try {
      const start = await call(`/v1/chats/${chat.body.chat.id}/runs`, {
        method: 'POST',
        body: { input: { text: 'hello' } },
      });
      expect(start.status).toBe(503);
      expect(start.body.error.code).toBe('service_unavailable');
      expect(authenticate).not.toHaveBeenCalled();
      expect(getRow).not.toHaveBeenCalled();
    } finally {
      await release();
      authenticate.mockRestore();
      getRow.mockRestore();
    }
    // Nothing was written: the chat has no run, and a start now succeeds.
    expect((await call(`/v1/chats/${chat.body.chat.id}/runs`)).body.items).toEqual([]);
    const start = await call(`/v1/chats/${chat.body.chat.id}/runs`, {
      method: 'POST',
      body: { input: { text: 'hello' } },
    });
    expect(start.status).toBe(201);
  });
});
