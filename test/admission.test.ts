import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { STORE_KINDS } from './support/databases.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/** OUTRUN_WORKER_CONCURRENCY: a worker runs at most that many runs at once; the rest wait and then finish. */
describe.each(STORE_KINDS)('admission control on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { workerConcurrency: 2 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('runs at most workerConcurrency runs at once and finishes every one of them', async () => {
    const chats = await Promise.all(Array.from({ length: 5 }, () => server.createChat()));
    const runs = await Promise.all(
      chats.map((chatId) => server.startRun(chatId, { tokens: 20, delayMs: 10 })),
    );
    let most = 0;
    const sampling = setInterval(() => (most = Math.max(most, server.outrun.executor.activeCount)), 5);
    const finished = await Promise.all(runs.map((run) => server.waitForRun(run.id)));
    clearInterval(sampling);
    expect(finished.map((run) => run.status)).toEqual(Array(5).fill('succeeded'));
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
  });
});

/**
 * OUTRUN_WORKER_BASE_CONCURRENCY and OUTRUN_WORKER_MAX_LOOP_DELAY_MS, on the real event-loop delay: beyond its
 * base a worker admits runs only while its loop keeps up. The store plays no part, so PGlite alone.
 */
describe('admission by load', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('pglite', {
      // No queue of the test's own: the server builds it from the configuration, as `outrun serve` does.
      queue: undefined,
      config: { workerConcurrency: 6, workerBaseConcurrency: 2, workerMaxLoopDelayMs: 50 },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** `outrun_worker_run_limit` as `GET /metrics` reports it. */
  async function runLimit(): Promise<number> {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(/^outrun_worker_run_limit (\d+)/m.exec(text)?.[1]);
  }

  it('admits only the base while the event loop is late, and more once it keeps up', async () => {
    const busy = setInterval(() => {
      const until = performance.now() + 150;
      while (performance.now() < until); // a late loop: every timer fires about 150 ms late
    }, 160);
    let most = 0;
    const sampling = setInterval(() => (most = Math.max(most, server.outrun.executor.activeCount)), 5);
    try {
      // The limit follows readings of the delay: a server idle until now may stand above its base until the
      // first reading of the late loop (CI once admitted all six in that window).
      await vi.waitFor(async () => expect(await runLimit()).toBe(2), { timeout: 10_000, interval: 100 });
      const chats = await Promise.all(Array.from({ length: 6 }, () => server.createChat()));
      const runs = await Promise.all(
        chats.map((chatId) => server.startRun(chatId, { tokens: 300, delayMs: 10 })),
      );
      await new Promise((resolve) => setTimeout(resolve, 1_500)); // three readings of the delay
      expect(most).toBe(2);
      expect(await runLimit()).toBe(2);

      clearInterval(busy);
      await vi.waitFor(() => expect(server.outrun.executor.activeCount).toBeGreaterThan(2), {
        timeout: 10_000,
      });
      expect(await runLimit()).toBeGreaterThan(2);
      const finished = await Promise.all(runs.map((run) => server.waitForRun(run.id)));
      expect(finished.map((run) => run.status)).toEqual(Array(6).fill('succeeded'));
      expect(most).toBeLessThanOrEqual(6);
    } finally {
      clearInterval(busy);
      clearInterval(sampling);
    }
  });
});
