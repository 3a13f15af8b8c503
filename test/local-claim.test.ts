import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultPoint, Faults } from '../src/faults.ts';
import { toRunObject } from '../src/runs/run-object.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/**
 * A start on a worker with a free slot claims its run in the transaction that begins it and executes it
 * here, without the queue hop; a worker whose slots are taken leaves the run `pending` for the queue.
 */
describe.each(STORE_KINDS)('starting a run on a worker on %s', (kind) => {
  let server: TestServer;
  const faults = new Faults();

  beforeAll(async () => {
    server = await startTestServer(kind, { faults, config: { workerConcurrency: 1 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  const statusesOf = (events: { seq: number; chunk: unknown }[]) =>
    events
      .map((event) => event.chunk as { type: string; data?: { status: string } })
      .filter((chunk) => chunk.type === 'data-run')
      .map((chunk) => chunk.data!.status);

  it('claims the run in its begin transaction when a slot is free, with the same stream', async () => {
    const chatId = await server.createChat();
    const claimsBefore = faults.hits(FaultPoint.beforeClaim);
    const run = await server.startRun(chatId, { steps: 1, tokens: 5 });
    expect(run.status).toBe('pending'); // the run as begun, whichever path executes it
    expect(await server.waitForRun(run.id)).toMatchObject({ status: 'succeeded', attempt: 1 });
    // The queue's worker never claimed it: the start did.
    expect(faults.hits(FaultPoint.beforeClaim)).toBe(claimsBefore);
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    expect(statusesOf(stream.events)).toEqual(['pending', 'running', 'succeeded']);
    expect(streamedText(stream.events)).toBe(scriptedText(1, 5));
  });

  it('leaves a run pending for the queue while every slot is taken, and runs it once one frees', async () => {
    const busyChat = await server.createChat();
    const waitingChat = await server.createChat();
    const busy = await server.startRun(busyChat, { steps: 1, tokens: 40, delayMs: 10 });
    await server.waitForRun(busy.id, (run) => run.status === 'running');
    const claimsBefore = faults.hits(FaultPoint.beforeClaim);
    const queued = await server.startRun(waitingChat, { steps: 1, tokens: 3 });
    // The one slot is taken: the run waits pending, not claimed, until the busy run ends.
    expect((await server.api(`/v1/runs/${queued.id}`)).body.run.status).toBe('pending');
    expect((await server.waitForRun(busy.id)).status).toBe('succeeded');
    expect((await server.waitForRun(queued.id)).status).toBe('succeeded');
    expect(faults.hits(FaultPoint.beforeClaim)).toBe(claimsBefore + 1);
  });

  it('takes the queue path while a test holds the claim', async () => {
    const chatId = await server.createChat();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    faults.arm(FaultPoint.beforeClaim, () => held);
    try {
      const run = await server.startRun(chatId, { steps: 1, tokens: 2 });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect((await server.api(`/v1/runs/${run.id}`)).body.run.status).toBe('pending');
      release();
      expect((await server.waitForRun(run.id)).status).toBe('succeeded');
    } finally {
      faults.clear();
    }
  });

  it('writes events that describe the run as inserted: claimed, pending and queued', async () => {
    const { runs, log, db } = server.outrun;
    const me = (await server.api('/v1/me')).body;
    const base = {
      workspaceId: me.workspace.id as string,
      userId: me.user.id as string,
      parts: [{ type: 'text', text: 'hello' }],
      model: 'scripted',
      trigger: 'api' as const,
    };
    const parent = await server.waitForRun((await server.startRun(await server.createChat(), {})).id);
    const statusEvents = async (runId: string) =>
      (await log.read({ runId, after: 0 })).map((event) => JSON.parse(event.data) as { data: unknown });
    const stored = async (runId: string) =>
      toRunObject(await db.selectFrom('runs').selectAll().where('id', '=', runId).executeTakeFirstOrThrow());
    const leaseExpiresAt = new Date(Date.now() + 60_000);

    const chatId = await server.createChat();
    const claimed = await runs.begin({
      ...base,
      chatId,
      parentRunId: parent.id,
      metadata: { customer: 'c-1', nested: { b: 2, a: [1, 'x'] } },
      localClaim: () => ({ owner: 'another-instance', leaseExpiresAt }),
    });
    const claimedRow = await db
      .selectFrom('runs')
      .selectAll()
      .where('id', '=', claimed.run.id)
      .executeTakeFirstOrThrow();
    expect(claimedRow).toMatchObject({
      epoch: 1,
      attempt: 1,
      lease_owner: 'another-instance',
      status: 'running',
    });
    expect(claimedRow.lease_expires_at?.getTime()).toBe(leaseExpiresAt.getTime());
    const running = await stored(claimed.run.id);
    expect(await statusEvents(claimed.run.id)).toEqual([
      { type: 'data-run', data: { ...running, status: 'pending', attempt: 0, startedAt: null } },
      { type: 'data-run', data: running },
    ]);
    expect(claimed.run).toEqual({ ...running, status: 'pending', attempt: 0, startedAt: null });
    expect(claimed.claimed?.run).toEqual(running);

    // The chat is busy now: the locked path queues the next one.
    const queued = await runs.begin({
      ...base,
      chatId,
      enqueue: true,
      localClaim: () => ({ owner: 'x', leaseExpiresAt }),
    });
    expect(queued.claimed).toBeNull();
    expect(await statusEvents(queued.run.id)).toEqual([
      { type: 'data-run', data: await stored(queued.run.id) },
    ]);
    expect(queued.run).toEqual(await stored(queued.run.id));

    const pending = await runs.begin({ ...base, chatId: await server.createChat() });
    expect(pending.claimed).toBeNull();
    expect(await statusEvents(pending.run.id)).toEqual([
      { type: 'data-run', data: await stored(pending.run.id) },
    ]);

    for (const runId of [claimed.run.id, queued.run.id, pending.run.id]) {
      await server.outrun.engine.stopRun(runId).catch(() => {});
    }
  });
});
