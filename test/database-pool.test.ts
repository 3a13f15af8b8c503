import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** How long a statement waits for a pooled connection here before its request answers 503. */
const CONNECT_TIMEOUT_MS = 1_000;

/**
 * A pool whose connections all stay busy (here its one connection, held by the test) is not a database that
 * is down: requests that cannot get a connection in time answer `503 service_unavailable` saying so, a failing
 * request makes no further statements (no key check, no chat read), and `/metrics` shows the pool's
 * connections and its waiters.
 */
describe.skipIf(!process.env.DATABASE_URL)('a database pool with every connection busy', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('postgres', {
      pool: { poolSize: 1, connectTimeoutMs: CONNECT_TIMEOUT_MS },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** Holds the pool's one connection until the returned function is called. */
  const holdTheConnection = async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held!: () => void;
    const isHeld = new Promise<void>((resolve) => (held = resolve));
    const holding = server.outrun.db.connection().execute(async (connection) => {
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

  /** Spies on the statements a failing request could make after its first one: a key check, a chat read. */
  const spyOnFollowUps = () => {
    const authenticate = vi.spyOn(server.outrun.auth, 'authenticate');
    const getRow = vi.spyOn(server.outrun.chats, 'getRow');
    return {
      expectNone() {
        expect(authenticate).not.toHaveBeenCalled();
        expect(getRow).not.toHaveBeenCalled();
      },
      restore() {
        authenticate.mockRestore();
        getRow.mockRestore();
      },
    };
  };

  /**
   * Sends `request` while the test holds the pool's one connection: it answers 503 `service_unavailable` and
   * makes no follow-up statement (`spyOnFollowUps`).
   */
  const expectUnavailableWithoutFollowUps = async (
    request: () => Promise<{ status: number; body: { error: { code: string } } }>,
  ) => {
    const followUps = spyOnFollowUps();
    const release = await holdTheConnection();
    try {
      const answer = await request();
      expect(answer.status).toBe(503);
      expect(answer.body.error.code).toBe('service_unavailable');
      followUps.expectNone();
    } finally {
      await release();
      followUps.restore();
    }
  };

  it('answers 503 saying no connection came free, and shows the waiter on /metrics', async () => {
    const chatId = await server.createChat();
    const release = await holdTheConnection();
    try {
      const waiting = server.api(`/v1/chats/${chatId}`);
      await pollUntil(
        () => server.outrun.metrics.databasePoolWaiting.get(),
        (gauge) => gauge.values[0]?.value === 1,
        { timeoutMs: CONNECT_TIMEOUT_MS / 2, intervalMs: 10 },
      );
      const connections = await server.outrun.metrics.databasePoolConnections.get();
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
    expect((await server.api(`/v1/chats/${chatId}`)).status).toBe(200);
    expect((await server.outrun.metrics.databasePoolWaiting.get()).values[0]?.value).toBe(0);
  });

  it('fails a start that got no connection at once, and writes nothing', async () => {
    const chatId = await server.createChat();
    await expectUnavailableWithoutFollowUps(() =>
      server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: 'hello' } } }),
    );
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toEqual([]);
    const start = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: 'hello' } },
    });
    expect(start.status).toBe(201);
  });

  it('fails a resume whose first read got no connection at once, without checking the key again', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 2 });
    await server.waitForRun(run.id);
    // The resume's first read checks the key in its own statement (`readCheckingKey`).
    await expectUnavailableWithoutFollowUps(() =>
      server.api(`/v1/runs/${run.id}/stream`, { headers: { accept: 'text/event-stream' } }),
    );
    expect((await server.api(`/v1/runs/${run.id}`)).status).toBe(200);
  });
});
