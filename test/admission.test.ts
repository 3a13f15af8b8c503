import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
