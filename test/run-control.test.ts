import type { LanguageModelV3 } from '@ai-sdk/provider';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { resolveModel } from '../src/agent/providers.ts';
import { createScriptedModel } from '../src/agent/scripted-model.ts';
import { FaultPoint, Faults } from '../src/faults.ts';
import { Ending } from '../src/runs/lifecycle.ts';
import { RunErrorCode, RunStatus } from '../src/runs/run-status.ts';
import { TransientDatabaseError } from '../src/store/transient.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/** The scripted model, counting every model call, so a test can prove a path made none. */
function countingScriptedModel(): { model: LanguageModelV3; calls: () => number } {
  const model = createScriptedModel();
  let calls = 0;
  return {
    model: {
      ...model,
      doStream: (options) => {
        calls += 1;
        return model.doStream(options);
      },
    } as LanguageModelV3,
    calls: () => calls,
  };
}

/** How long this file's interrupts wait for the run they stopped (10 s by default). */
const INTERRUPT_WAIT_MS = 600;

describe.each(STORE_KINDS)('run control on %s', (kind) => {
  let server: TestServer;
  const faults = new Faults();
  const counter = countingScriptedModel();

  beforeAll(async () => {
    server = await startTestServer(kind, {
      faults,
      resolveModel: (modelId) => resolveModel({ modelId, scripted: counter.model }),
      interruptWaitMs: INTERRUPT_WAIT_MS,
    });
  });
  afterAll(async () => {
    await server?.close();
  });
  afterEach(() => faults.clear());

  it('lets exactly one of many concurrent starts on a chat through; the others get 409 with its id', async () => {
    const chatId = await server.createChat();
    const callsBefore = counter.calls();
    const responses = await Promise.all(
      Array.from({ length: 16 }, () =>
        server.api(`/v1/chats/${chatId}/runs`, {
          method: 'POST',
          // Long enough to outlast the burst, so every loser meets it still active.
          body: { input: { text: script({ steps: 1, tokens: 1000, delayMs: 10 }) } },
        }),
      ),
    );
    const created = responses.filter((response) => response.status === 201);
    const rejected = responses.filter((response) => response.status === 409);
    expect(created).toHaveLength(1);
    expect(rejected).toHaveLength(15);
    const runId = created[0]!.body.run.id;
    for (const response of rejected) {
      expect(response.body.error).toMatchObject({ code: 'run_already_active', runId });
    }

    await server.api(`/v1/runs/${runId}/stop`, { method: 'POST' });
    await server.waitForRun(runId);
    const runs = await server.api(`/v1/chats/${chatId}/runs`);
    expect(runs.body.items).toHaveLength(1);
    // The losers wrote nothing: one user message, one assistant message.
    const messages = await server.api(`/v1/chats/${chatId}/messages`);
    expect(messages.body.items).toHaveLength(2);
    // And called no model: one step, one call.
    expect(counter.calls() - callsBefore).toBe(1);
  });

  it('stops a running run by run id, keeping the partial answer, and a second stop answers false', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 200, delayMs: 10 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    await new Promise((resolve) => setTimeout(resolve, 150));

    const stop = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' });
    expect(stop.status).toBe(200);
    expect(stop.body.stopped).toBe(true);
    expect(stop.body.run.stopRequestedAt).not.toBeNull();

    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });
    const again = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' });
    expect(again.body).toMatchObject({ stopped: false, run: { status: 'aborted' } });

    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const types = stream.events.map((event) => event.chunk.type);
    expect(types.slice(-2)).toEqual(['abort', 'data-run']);
    const text = streamedText(stream.events);
    expect(text.length).toBeGreaterThan(0);
    expect(scriptedText(1, 200).startsWith(text)).toBe(true);
    expect(text).not.toBe(scriptedText(1, 200));

    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    expect(latest.body.message.status).toBe('aborted');
    const messageText = latest.body.message.parts
      .filter((part: { type: string }) => part.type === 'text')
      .map((part: { text: string }) => part.text)
      .join('');
    expect(messageText).toBe(text);
  });

  it('refuses a stop by run id with a field it does not take, leaving the run going; an empty body stops it', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 200, delayMs: 10 });
    await server.waitForRun(run.id, (r) => r.status === 'running');

    for (const raw of ['{"bogus":1}', 'null', '[]', '"stop"']) {
      const refused = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST', raw });
      expect(refused.status, raw).toBe(400);
      expect(refused.body.error.code, raw).toBe('invalid_request');
    }
    const refused = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST', body: { bogus: 1 } });
    expect(refused.body.error.message).toContain('bogus');
    const untouched = (await server.api(`/v1/runs/${run.id}`)).body.run;
    expect(untouched).toMatchObject({ status: 'running', stopRequestedAt: null });

    const stop = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST', raw: '' });
    expect(stop.status).toBe(200);
    expect(stop.body.stopped).toBe(true);
    expect((await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST', body: {} })).status).toBe(200);
    expect(await server.waitForRun(run.id)).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });
  });

  it('stops the active run of a chat by chat id, and answers stopped: false when none is active', async () => {
    const chatId = await server.createChat();
    const idle = await server.api(`/v1/chats/${chatId}/stop`, { method: 'POST' });
    expect(idle.body).toEqual({ stopped: false, run: null });

    const run = await server.startRun(chatId, { steps: 3, tokens: 50, delayMs: 10 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    const stop = await server.api(`/v1/chats/${chatId}/stop`, { method: 'POST' });
    expect(stop.body).toMatchObject({ stopped: true, run: { id: run.id } });
    expect(await server.waitForRun(run.id)).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });

    // The chat is usable again at once.
    const next = await server.startRun(chatId, { steps: 1, tokens: 2 });
    expect((await server.waitForRun(next.id)).status).toBe('succeeded');
  });

  it('stops a run that is still pending, before any model call', async () => {
    const chatId = await server.createChat();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    faults.arm(FaultPoint.beforeClaim, () => held);
    const callsBefore = counter.calls();

    const run = await server.startRun(chatId, { steps: 1, tokens: 5 });
    expect(run.status).toBe('pending');
    const stop = await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' });
    expect(stop.body).toMatchObject({
      stopped: true,
      run: { status: 'aborted', error: { code: 'stopped' } },
    });
    release();

    const settled = await server.waitForRun(run.id);
    expect(settled.status).toBe('aborted');
    expect(counter.calls()).toBe(callsBefore);
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.events.map((event) => event.chunk.type)).toEqual(['data-run', 'abort', 'data-run']);
  });

  it('stops a run whose stop races its start', async () => {
    for (let round = 0; round < 10; round++) {
      const chatId = await server.createChat();
      const start = server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: script({ steps: 2, tokens: 50, delayMs: 5 }) } },
      });
      // Fire stops while the start is in flight, until one lands on the run.
      let stopped = false;
      const stops: Promise<unknown>[] = [];
      const deadline = Date.now() + 5_000;
      while (!stopped && Date.now() < deadline) {
        const stop = server.api(`/v1/chats/${chatId}/stop`, { method: 'POST' });
        stops.push(stop);
        stopped = (await stop).body.stopped === true;
      }
      await Promise.all(stops);
      const run = (await start).body.run;
      expect(stopped).toBe(true);
      expect(await server.waitForRun(run.id)).toMatchObject({
        status: 'aborted',
        error: { code: 'stopped' },
      });
    }
  });

  it('settles a run exactly once when two settles race', async () => {
    const chatId = await server.createChat();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    faults.arm(FaultPoint.beforeClaim, () => held);
    const run = await server.startRun(chatId, { steps: 1, tokens: 1 });

    const settle = (status: 'failed' | 'aborted') =>
      server.outrun.lifecycle.endUnowned({
        runId: run.id,
        from: [RunStatus.pending],
        ending:
          status === 'failed'
            ? Ending.failed(RunErrorCode.internalError)
            : Ending.aborted(RunErrorCode.stopped),
      });
    const results = await Promise.all([
      settle('failed'),
      settle('aborted'),
      settle('failed'),
      settle('aborted'),
    ]);
    release();
    const winners = results.filter((result) => result !== null);
    expect(winners).toHaveLength(1);

    const final = await server.waitForRun(run.id);
    expect(final.status).toBe(winners[0]!.run.status);
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const terminal = stream.events.filter(
      (event) =>
        event.chunk.type === 'data-run' && (event.chunk.data as { status: string }).status !== 'pending',
    );
    expect(terminal).toHaveLength(1);
  });

  it('retries a settle that hits a transient database error', async () => {
    const chatId = await server.createChat();
    const retriesBefore = await metricValue(server, 'outrun_settle_retries_total');
    faults.armTimes(FaultPoint.settleBeforeCommit, 2, () => {
      throw new TransientDatabaseError();
    });
    const run = await server.startRun(chatId, { steps: 2, tokens: 3 });
    const settled = await server.waitForRun(run.id);
    expect(settled.status).toBe('succeeded');
    expect((await metricValue(server, 'outrun_settle_retries_total')) - retriesBefore).toBe(2);
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(streamedText(stream.events)).toBe(scriptedText(2, 3));
    expect(stream.events.filter((event) => event.chunk.type === 'data-run')).toHaveLength(3);
  });

  it('gives up on a settle after its retries, logs once, and leaves the run for the sweeper to finish', async () => {
    const chatId = await server.createChat();
    const failuresBefore = await metricValue(server, 'outrun_settle_failures_total');
    faults.arm(FaultPoint.settleBeforeCommit, () => {
      throw new TransientDatabaseError();
    });
    const run = await server.startRun(chatId, { steps: 1, tokens: 2 });
    const deadline = Date.now() + 10_000;
    while (
      (await metricValue(server, 'outrun_settle_failures_total')) === failuresBefore &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect((await metricValue(server, 'outrun_settle_failures_total')) - failuresBefore).toBe(1);
    faults.clear();
    // Still active: nothing claimed the ending. Once its lease is gone the sweeper hands it back, and the
    // next execution finds the agent loop already finished and ends it.
    expect((await server.api(`/v1/runs/${run.id}`)).body.run.status).toBe('running');
    await server.outrun.db
      .updateTable('runs')
      .set({ lease_expires_at: new Date(0) })
      .where('id', '=', run.id)
      .execute();
    expect(await server.outrun.engine.sweep({ all: false })).toBeGreaterThanOrEqual(1);
    expect(await server.waitForRun(run.id)).toMatchObject({ status: 'succeeded', attempt: 2, error: null });
    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    const texts = latest.body.message.parts.filter((part: { type: string }) => part.type === 'text');
    expect(texts.map((part: { text: string }) => part.text)).toEqual([scriptedText(1, 2)]);
  });

  it('settles a run as failed when the start path throws before the agent loop owns it', async () => {
    const chatId = await server.createChat();
    faults.arm(FaultPoint.beforeLoop, () => {
      throw new Error('boom before the loop');
    });
    const callsBefore = counter.calls();
    const run = await server.startRun(chatId, { steps: 1, tokens: 3 });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'failed', error: { code: 'start_failed' } });
    expect(counter.calls()).toBe(callsBefore);
    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    expect(latest.body.message.status).toBe('error');
  });

  it('settles a run as failed when handing it to the queue throws', async () => {
    const chatId = await server.createChat();
    faults.arm(FaultPoint.afterBegin, () => {
      throw new Error('queue unavailable');
    });
    const response = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 1 }) } },
    });
    expect(response.status).toBe(201);
    expect(response.body.run).toMatchObject({ status: 'failed', error: { code: 'start_failed' } });
    faults.clear();
    // Nothing is left active: the next run starts.
    const next = await server.startRun(chatId, { steps: 1, tokens: 1 });
    expect((await server.waitForRun(next.id)).status).toBe('succeeded');
  });

  it('retries an event-log insert that hits a transient database error, losing nothing', async () => {
    const chatId = await server.createChat();
    const retriesBefore = await metricValue(server, 'outrun_event_append_retries_total');
    const run = await server.startRun(chatId, { steps: 2, tokens: 20, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    faults.armTimes(FaultPoint.beforeEventInsert, 2, () => {
      throw new TransientDatabaseError();
    });
    expect((await server.waitForRun(run.id)).status).toBe('succeeded');
    expect((await metricValue(server, 'outrun_event_append_retries_total')) - retriesBefore).toBe(2);
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(streamedText(stream.events)).toBe(scriptedText(2, 20));
  });

  it('fails a run as persistence_failed when its events cannot be written', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 200, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    faults.armTimes(FaultPoint.beforeEventInsert, 1, () => {
      throw new Error('disk full');
    });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'failed', error: { code: 'persistence_failed' } });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    expect(stream.events.at(-1)!.chunk).toMatchObject({ type: 'data-run', data: { status: 'failed' } });
  });

  it('retries recording a step after a transient database error, keeping every step', async () => {
    const chatId = await server.createChat();
    faults.armTimes(FaultPoint.beforeStepRecord, 2, () => {
      throw new TransientDatabaseError();
    });
    const run = await server.startRun(chatId, { steps: 3, tokens: 3 });
    expect(await server.waitForRun(run.id)).toMatchObject({ status: 'succeeded', stepCount: 3 });
    const steps = await server.api(`/v1/runs/${run.id}/steps`);
    expect(steps.body.items.map((item: { step: number }) => item.step)).toEqual([1, 2, 3]);
  });

  it('fails a run as persistence_failed when a step cannot be recorded, without crashing the server', async () => {
    const chatId = await server.createChat();
    faults.arm(FaultPoint.beforeStepRecord, () => {
      throw new Error('constraint violated');
    });
    const run = await server.startRun(chatId, { steps: 3, tokens: 20, delayMs: 2 });
    expect(await server.waitForRun(run.id)).toMatchObject({
      status: 'failed',
      error: { code: 'persistence_failed' },
    });
    faults.clear();
    const next = await server.startRun(chatId, { steps: 1, tokens: 1 });
    expect((await server.waitForRun(next.id)).status).toBe('succeeded');
  });

  it('interrupts the active run when asked with multitask: interrupt', async () => {
    const chatId = await server.createChat();
    const first = await server.startRun(chatId, { steps: 1, tokens: 500, delayMs: 10 });
    await server.waitForRun(first.id, (r) => r.status === 'running');
    const second = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 1, tokens: 2 }) }, multitask: 'interrupt' },
    });
    expect(second.status).toBe(201);
    expect((await server.api(`/v1/runs/${first.id}`)).body.run).toMatchObject({ status: 'aborted' });
    expect((await server.waitForRun(second.body.run.id)).status).toBe('succeeded');
  });

  it('stops reading the run it interrupted once its wait is over, even if the run has not ended', async () => {
    const chatId = await server.createChat();
    const busy = await server.startRun(chatId, { steps: 1, tokens: 2_000, delayMs: 10 });
    await server.waitForRun(busy.id, (r) => r.status === 'running');
    const { engine } = server.outrun;
    // The run does not hear the stop (as on an instance that went away): the interrupt waits it out.
    const stop = vi
      .spyOn(engine, 'stopRun')
      .mockResolvedValue({ stopped: true, run: { status: 'running' } } as never);
    const reads = vi.spyOn(engine.runs, 'get');
    try {
      const began = Date.now();
      await engine.interrupt(busy.id);
      expect(Date.now() - began).toBeGreaterThanOrEqual(INTERRUPT_WAIT_MS - 20);
      const readsAtEnd = reads.mock.calls.filter(([id]) => id === busy.id).length;
      expect(readsAtEnd).toBeGreaterThan(0);
      // Past the wait nothing polls the row any more (before: every 250 ms until the run ended).
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect(reads.mock.calls.filter(([id]) => id === busy.id)).toHaveLength(readsAtEnd);
    } finally {
      stop.mockRestore();
      reads.mockRestore();
    }
    await server.api(`/v1/runs/${busy.id}/stop`, { method: 'POST' });
    expect((await server.waitForRun(busy.id)).status).toBe('aborted');
  });

  it('refuses an interrupt into a chat with queued runs with 409, stopping nothing', async () => {
    const chatId = await server.createChat();
    const active = await server.startRun(chatId, { steps: 1, tokens: 500, delayMs: 10 });
    await server.waitForRun(active.id, (r) => r.status === 'running');
    const queued = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 1, tokens: 1 }) }, multitask: 'enqueue' },
    });
    expect(queued.body.run.status).toBe('queued');
    // The queued run would take the chat as the active one settles: the interrupt would end it for nothing.
    const interrupt = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 1, tokens: 1 }) }, multitask: 'interrupt' },
    });
    expect(interrupt.status).toBe(409);
    expect(interrupt.body.error).toMatchObject({ code: 'run_already_active', runId: active.id, queued: 1 });
    expect((await server.api(`/v1/runs/${active.id}`)).body.run.status).toBe('running');
    expect((await server.api(`/v1/runs/${queued.body.run.id}`)).body.run.status).toBe('queued');
    const runs = await server.api(`/v1/chats/${chatId}/runs`);
    expect(runs.body.items).toHaveLength(2);
    await server.api(`/v1/chats/${chatId}/stop`, { method: 'POST', body: { includeQueued: true } });
  });
});

async function metricValue(server: TestServer, name: string): Promise<number> {
  const metric = await server.outrun.metrics.registry.getSingleMetric(name)?.get();
  return metric?.values.reduce((sum, value) => sum + value.value, 0) ?? 0;
}
