import { afterAll, afterEach, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { FaultPoint, Faults } from '../src/faults.ts';
import type { RunObject } from '../src/protocol/run.ts';
import { Lifecycle, type TransitionRequest } from '../src/runs/lifecycle.ts';
import { isTerminalStatus } from '../src/runs/run-status.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, script, scriptedText, streamedText, type StreamEvent } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { untilWaitingForLock } from './support/lock-waits.ts';
import { pollUntil } from './support/wait.ts';

/**
 * An owner's ending goes in one statement (docs/decisions/0011-one-statement-ending.md) and falls back to
 * the transaction, having written nothing, whenever it cannot be sure of it.
 */
describe.each(STORE_KINDS)('an owner ending its run in one statement on %s', (kind) => {
  let server: TestServer;
  const faults = new Faults();
  // The transaction's path of an ending: `transitionIn` with a terminal status. The one statement never calls it.
  let transitionIn: MockInstance<Lifecycle['transitionIn']>;
  const transactionalEndings = (runId: string) =>
    transitionIn.mock.calls.filter(
      ([, request]: [unknown, TransitionRequest]) => request.runId === runId && isTerminalStatus(request.to),
    ).length;

  beforeAll(async () => {
    transitionIn = vi.spyOn(Lifecycle.prototype, 'transitionIn');
    server = await startTestServer(kind, { faults, config: { leaseMs: 2_000 } });
  });
  afterAll(async () => {
    transitionIn.mockRestore();
    await server?.close();
  });
  afterEach(() => faults.clear());

  const fallbacks = async (reason: string) => {
    const metric = await server.outrun.metrics.registry
      .getSingleMetric('outrun_ending_fallbacks_total')
      ?.get();
    return metric?.values.find((value) => value.labels.reason === reason)?.value ?? 0;
  };
  const enqueue = (chatId: string, tokens: number, delayMs = 0) =>
    server.api<{ run: RunObject }>(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ tokens, delayMs }) }, multitask: 'enqueue' },
    });
  const terminalEvents = (events: StreamEvent[]) =>
    events.filter(
      (event) => event.chunk.type === 'data-run' && isTerminalStatus((event.chunk.data as RunObject).status),
    );

  it.each(['a local claim', 'a claim through the queue'])(
    'ends a run of %s in one statement; its data-run event is the run as stored',
    async (claim) => {
      // Armed, the point makes every start leave its run to the queue's claim (a separate transition).
      if (claim !== 'a local claim') faults.arm(FaultPoint.beforeClaim, () => {});
      const chatId = await server.createChat();
      const run = await server.startRun(chatId, { steps: 2, tokens: 3 });
      const ended = await server.waitForRun(run.id);
      expect(ended.status).toBe('succeeded');
      expect(transactionalEndings(run.id)).toBe(0);

      const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
      expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
      expect(streamedText(stream.events)).toBe(scriptedText(2, 3));
      const terminal = terminalEvents(stream.events);
      expect(terminal).toHaveLength(1);
      expect(terminal[0]!.seq).toBe(stream.events.length);
      // Built before the statement, from the row the owner claimed: it must be what the row became.
      expect(terminal[0]!.chunk.data).toEqual(ended);
      expect(ended).toMatchObject({ stepCount: 2, usage: { inputTokens: expect.any(Number) } });

      // The message and the last step were written by the same statement.
      const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
      expect(latest.body.message.status).toBe('completed');
      const texts = latest.body.message.parts.filter((part: { type: string }) => part.type === 'text');
      expect(texts.map((part: { text: string }) => part.text).join('')).toBe(scriptedText(2, 3));
      const steps = await server.outrun.db
        .selectFrom('run_steps')
        .select(['step', 'usage'])
        .where('run_id', '=', run.id)
        .orderBy('step')
        .execute();
      expect(steps.map((step) => step.step)).toEqual([1, 2]);
      expect(steps[1]!.usage).not.toBeNull();
    },
  );

  it('writes the loop’s last events in the ending’s statement, not in a group-commit insert of their own', async () => {
    // A coalescing window far longer than the run (beyond what OUTRUN_EVENT_COALESCE_MS allows, set here
    // directly): every event the loop appends waits in the group commit's queue, so only the ending can have
    // written them (decision 0015).
    const windowMs = 2_000;
    const coalescing = await startTestServer(kind, { config: { eventCoalesceMs: windowMs } });
    try {
      const inserts = async () =>
        (await coalescing.outrun.metrics.appendBatchSize.get()).values.find((value) =>
          value.metricName?.endsWith('_count'),
        )?.value ?? 0;
      const insertsBefore = await inserts();
      const chatId = await coalescing.createChat();
      const startedAt = Date.now();
      const run = await coalescing.startRun(chatId, { steps: 1, tokens: 3 });
      const ended = await coalescing.waitForRun(run.id);
      expect(Date.now() - startedAt).toBeLessThan(windowMs);
      expect(ended.status).toBe('succeeded');
      expect(await inserts()).toBe(insertsBefore);
      expect(transactionalEndings(run.id)).toBe(0);

      const stream = await collectStream(await coalescing.fetch(`/v1/runs/${run.id}/stream`));
      expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
      expect(streamedText(stream.events)).toBe(scriptedText(1, 3));
      expect(terminalEvents(stream.events).map((event) => event.seq)).toEqual([stream.events.length]);
      const steps = await coalescing.outrun.db
        .selectFrom('run_steps')
        .select('last_seq')
        .where('run_id', '=', run.id)
        .execute();
      // The step recorded with the ending ends at an event the same statement wrote.
      expect(steps).toHaveLength(1);
      expect(stream.events.map((event) => event.seq)).toContain(steps[0]!.last_seq);
    } finally {
      await coalescing.close();
    }
  });

  it('declines when a stop was requested meanwhile, writes nothing, and the transaction ends the run', async () => {
    const declinedBefore = await fallbacks('run');
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 200, delayMs: 10 });
    await server.waitForRun(run.id, (current) => current.status === 'running');
    // The owner claimed the run before this stop: its picture of the row has no stopRequestedAt.
    const stop = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' });
    expect(stop.body.stopped).toBe(true);
    const ended = await server.waitForRun(run.id);
    expect(ended).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });
    expect(ended.stopRequestedAt).not.toBeNull();

    expect(await fallbacks('run')).toBe(declinedBefore + 1);
    expect(transactionalEndings(run.id)).toBe(1);
    // The declined statement wrote nothing: one terminal event, from the transaction, and dense numbers.
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    const terminal = terminalEvents(stream.events);
    expect(terminal).toHaveLength(1);
    expect(terminal[0]!.chunk.data).toEqual(ended);
    const steps = await server.outrun.db
      .selectFrom('run_steps')
      .select('step')
      .where('run_id', '=', run.id)
      .execute();
    expect(steps.length).toBeLessThanOrEqual(1);
  });

  it('declines when a queued run waits, and the transaction promotes it', async () => {
    const declinedBefore = await fallbacks('queued');
    const chatId = await server.createChat();
    const active = (await enqueue(chatId, 20, 10)).body.run;
    const next = (await enqueue(chatId, 1)).body.run;
    expect(next.status).toBe('queued');
    expect((await server.waitForRun(active.id)).status).toBe('succeeded');
    expect((await server.waitForRun(next.id)).status).toBe('succeeded');
    expect(await fallbacks('queued')).toBe(declinedBefore + 1);
    expect(transactionalEndings(active.id)).toBe(1);
    // The queued run then ended alone in its chat: in one statement.
    expect(transactionalEndings(next.id)).toBe(0);
  });

  // The race the one statement must not lose: a start queues its run while the ending waits for the chat's
  // lock. The statement's snapshot cannot see that run; the chat row's newer version tells it. PGlite has one
  // connection, so only PostgreSQL can interleave the two.
  it.runIf(kind === 'postgres')(
    'sees a run queued by a start that committed while the ending waited for the chat, and promotes it',
    async () => {
      const declinedBefore = await fallbacks('chat');
      const chatId = await server.createChat();
      const active = (await enqueue(chatId, 40, 10)).body.run;
      await server.waitForRun(active.id, (current) => current.status === 'running');

      // The second start holds its transaction open, with its queued run inserted and the chat locked.
      let commit!: () => void;
      const held = new Promise<void>((resolve) => (commit = resolve));
      faults.arm(FaultPoint.startBeforeCommit, () => held);
      const queuing = enqueue(chatId, 1);
      try {
        await pollUntil(
          () => faults.hits(FaultPoint.startBeforeCommit),
          (hits) => hits >= 1,
        );
        // The active run ends meanwhile: its statement waits for the chat's lock.
        await untilWaitingForLock('with "changed" as (update "runs" ');
      } finally {
        commit();
      }
      const next = (await queuing).body.run;
      expect(next.status).toBe('queued');

      expect((await server.waitForRun(active.id)).status).toBe('succeeded');
      expect((await server.waitForRun(next.id)).status).toBe('succeeded');
      expect(await fallbacks('chat')).toBe(declinedBefore + 1);
      expect(transactionalEndings(active.id)).toBe(1);
    },
  );
});
