import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

/** A second instance on the same database, with its own (in-process) bus: it shares nothing but the store. */
async function secondInstance(server: TestServer): Promise<Outrun> {
  const other = await createOutrun({
    database: server.outrun.database,
    logger: pino({ level: 'silent' }),
    bus: new MemoryBus(),
    queue: new MemoryQueue(),
    singleInstance: false,
    worker: false,
    config: { port: 0, host: '127.0.0.1', adminKey: ADMIN_KEY },
  });
  await other.start();
  return other;
}

describe.each(STORE_KINDS)('leases across instances on %s', (kind) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('fences a worker whose lease was taken over: it can no longer append events or settle', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server);
    cleanups.push(() => other.close({ graceMs: 0 }));

    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 5000, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    await new Promise((resolve) => setTimeout(resolve, 100));

    // The owner looks dead to everyone else: its lease has run out. The other instance sweeps the run.
    await server.outrun.db
      .updateTable('runs')
      .set({ lease_expires_at: new Date(0) })
      .where('id', '=', run.id)
      .execute();
    expect(await other.engine.sweep({ all: false })).toBe(1);

    // The old owner notices at its next append and lets go without settling.
    const deadline = Date.now() + 10_000;
    while (server.outrun.executor.isActive(run.id) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(server.outrun.executor.isActive(run.id)).toBe(false);

    const final = await server.api(`/v1/runs/${run.id}`);
    expect(final.body.run).toMatchObject({ status: 'aborted', error: { code: 'lease_expired' }, attempt: 2 });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.done).toBe(true);
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    const statuses = stream.events
      .filter((event) => event.chunk.type === 'data-run')
      .map((event) => (event.chunk.data as { status: string }).status);
    expect(statuses).toEqual(['pending', 'running', 'aborted']);
    const eventCount = stream.events.length;
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = await server.outrun.log.read({ runId: run.id, after: 0, limit: 100_000 });
    expect(after).toHaveLength(eventCount);
  });

  it('delivers a stop recorded by another instance to the run, even without a shared bus', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 600 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server);
    cleanups.push(() => other.close({ graceMs: 0 }));
    const otherUrl = await other.listen();

    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 5000, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.status === 'running');

    const response = await fetch(`${otherUrl}/v1/runs/${run.id}/stop`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    });
    expect((await response.json()).stopped).toBe(true);
    expect(await server.waitForRun(run.id)).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });
  });
});
