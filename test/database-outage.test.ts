import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import { createDatabase, type DatabaseHandle } from '../src/store/database.ts';
import { findPostgresBin, startOwnPostgres, type OwnPostgres } from './support/own-postgres.ts';
import { ADMIN_KEY } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** The test's statement timeout: short, so a frozen database answers in seconds (the default is 30 s). */
const STATEMENT_TIMEOUT_MS = 1_000;

/**
 * A database that freezes or stops makes requests answer `503 service_unavailable` with `Retry-After`
 * within a bound, never hang and never 500; `/readyz` answers 503 within about a second whatever the
 * database does; once the database is back, requests succeed again.
 */
describe.skipIf(!findPostgresBin())('a database outage', () => {
  let postgres: OwnPostgres;
  let database: DatabaseHandle;
  let outrun: Outrun;
  let url: string;

  beforeAll(async () => {
    postgres = await startOwnPostgres();
    database = await createDatabase({
      databaseUrl: postgres.url,
      connectTimeoutMs: 1_000,
      statementTimeoutMs: STATEMENT_TIMEOUT_MS,
    });
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
    postgres?.thaw();
    await outrun?.close({ graceMs: 0 }).catch(() => {});
    await database?.close().catch(() => {});
    await postgres?.destroy();
  });

  const timed = async (path: string) => {
    const started = Date.now();
    const response = await fetch(url + path, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    return { response, body: await response.json(), elapsedMs: Date.now() - started };
  };

  it('answers 503 within bounds while the database is frozen, and recovers when it thaws', async () => {
    expect((await timed('/v1/chats')).response.status).toBe(200);
    postgres.freeze();
    try {
      const ready = await timed('/readyz');
      expect(ready.response.status).toBe(503);
      expect(ready.elapsedMs).toBeLessThan(1_500);
      expect(ready.body.error.code).toBe('not_ready');

      const chats = await timed('/v1/chats');
      expect(chats.response.status).toBe(503);
      expect(chats.body.error.code).toBe('service_unavailable');
      expect(Number(chats.response.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(chats.elapsedMs).toBeLessThan(STATEMENT_TIMEOUT_MS + 5_000);
    } finally {
      postgres.thaw();
    }
    await pollUntil(
      async () => (await timed('/v1/chats')).response.status,
      (status) => status === 200,
      {
        timeoutMs: 10_000,
        intervalMs: 100,
      },
    );
  });

  it('answers 503, not 500, while the database is stopped, and recovers when it starts again', async () => {
    await postgres.stop();
    for (let attempt = 0; attempt < 3; attempt++) {
      const chats = await timed('/v1/chats');
      expect(chats.response.status).toBe(503);
      expect(chats.body.error.code).toBe('service_unavailable');
      expect(chats.response.headers.get('retry-after')).toBeTruthy();
    }
    const created = await fetch(url + '/v1/chats', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'during the outage' }),
    });
    expect(created.status).toBe(503);
    const ready = await timed('/readyz');
    expect(ready.response.status).toBe(503);
    expect(ready.elapsedMs).toBeLessThan(1_500);

    await postgres.start();
    await pollUntil(
      async () => (await timed('/v1/chats')).response.status,
      (status) => status === 200,
      {
        timeoutMs: 10_000,
        intervalMs: 100,
      },
    );
    expect((await timed('/readyz')).response.status).toBe(200);
  });
});
