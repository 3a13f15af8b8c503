import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { ManualClock } from '../src/clock.ts';
import type { RunObject } from '../src/protocol/run.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import { STORE_KINDS } from './support/databases.ts';
import { answeredText, collectStream, messageText, script, scriptedText } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';
import { waitUntil } from './support/wait.ts';

/** A second instance on the same database, with its own (in-process) bus and queue: it shares only the store. */
async function secondInstance(
  server: TestServer,
  options: { worker: boolean; maxAttempts?: number; clock?: ManualClock },
): Promise<Outrun> {
  const other = await createOutrun({
    clock: options.clock,
    database: server.outrun.database,
    logger: pino({ level: 'silent' }),
    bus: new MemoryBus(),
    queue: new MemoryQueue(),
    singleInstance: false,
    worker: options.worker,
    config: { port: 0, host: '127.0.0.1', adminKey: ADMIN_KEY, maxAttempts: options.maxAttempts ?? 3 },
  });
  await other.start();
  return other;
}

/** How many output deltas of step `step` (counting every step begun) a run's log holds. */
async function deltasOfStep(server: TestServer, runId: string, step: number): Promise<number> {
  let begun = 0;
  let deltas = 0;
  for await (const event of server.outrun.log.replay(runId)) {
    const { type } = event.chunk as { type: string };
    if (type === 'start-step') begun += 1;
    else if (type === 'text-delta' && begun === step) deltas += 1;
  }
  return deltas;
}

/** A clock for the second instance that runs `leaseMs` ahead: to it, the first instance's leases have run out. */
function clockPastLease(leaseMs: number): ManualClock {
  return new ManualClock(new Date(Date.now() + 2 * leaseMs));
}

describe.each(STORE_KINDS)('leases across instances on %s', (kind) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('resumes a run on another worker from its last finished step, fencing the worker that lost its lease', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, { worker: true, clock: clockPastLease(60_000) });
    cleanups.push(() => other.close({ graceMs: 0 }));

    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 3, tokens: 40, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.stepCount >= 1);

    expect(await other.engine.sweep({ all: false })).toBe(1);

    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'succeeded', stepCount: 3, attempt: 2, error: null });
    // The old owner noticed at its next append and let go without settling.
    await waitUntil(() => !server.outrun.executor.isActive(run.id));

    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.done).toBe(true);
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    const statuses = stream.events
      .filter((event) => event.chunk.type === 'data-run')
      .map((event) => (event.chunk.data as { status: string; attempt: number }).status);
    expect(statuses).toEqual(['pending', 'running', 'pending', 'running', 'succeeded']);
    expect(stream.events.filter((event) => event.chunk.type === 'start')).toHaveLength(1);

    // Step 1 once; the part of step 2 the first worker streamed is closed as interrupted; then steps 2 and 3.
    expect(stream.events.filter((event) => event.chunk.type === 'data-step-interrupted')).toHaveLength(1);
    expect(answeredText(stream.events)).toBe(scriptedText(3, 40));

    // The message is the projection of that stream, the interrupted part marked.
    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    expect(messageText(latest.body.message.parts)).toBe(scriptedText(3, 40));
    expect(latest.body.message.status).toBe('completed');
  });

  it('records a finished step only under the run’s current epoch, and each step once', async () => {
    const server = await startTestServer(kind);
    cleanups.push(() => server.close());
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 200, delayMs: 20 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    const { runs, db } = server.outrun;
    const row = (await runs.get(run.id))!;
    const step = {
      runId: run.id,
      step: 99,
      parts: [{ type: 'text', text: 'x' }],
      usage: { inputTokens: 5, outputTokens: 7 },
      costUsd: 0.5,
      lastSeq: 1,
      startedAt: new Date(),
    };
    const recorded = () =>
      db.selectFrom('run_steps').selectAll().where('run_id', '=', run.id).where('step', '=', 99).execute();

    // A worker fenced out (an older epoch) writes nothing: no step, no spend.
    await runs.recordStep({ ...step, epoch: row.epoch - 1 });
    expect(await recorded()).toHaveLength(0);
    expect((await runs.get(run.id))!.cost_usd ?? 0).toBe(row.cost_usd ?? 0);

    await runs.recordStep({ ...step, epoch: row.epoch });
    await runs.recordStep({ ...step, epoch: row.epoch });
    expect(await recorded()).toHaveLength(1);
    expect(Number((await runs.get(run.id))!.step_count)).toBeGreaterThanOrEqual(99);
  });

  it('keeps a resumed run’s spend: usage and cost recorded before the takeover stay counted', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, { worker: true, clock: clockPastLease(60_000) });
    cleanups.push(() => other.close({ graceMs: 0 }));

    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 3, tokens: 40, delayMs: 5 });
    const before = await server.waitForRun(run.id, (r) => r.stepCount >= 1);
    expect(before.usage?.outputTokens).toBeGreaterThanOrEqual(40);
    // The takeover comes once step 2 has streamed some output, so it cuts that step.
    await waitUntil(async () => (await deltasOfStep(server, run.id, 2)) >= 3);
    expect(await other.engine.sweep({ all: false })).toBe(1);

    const final = await server.waitForRun(run.id);
    expect(final).toMatchObject({ status: 'succeeded', attempt: 2 });
    const steps = await server.outrun.db
      .selectFrom('run_steps')
      .select(['usage', 'cost_usd'])
      .where('run_id', '=', run.id)
      .execute();
    const sum = (pick: (usage: Record<string, number>) => number) =>
      steps.reduce((total, step) => total + pick((step.usage ?? {}) as Record<string, number>), 0);
    // Three steps of 40 output tokens over both executions, and the part of a step the takeover cut: nothing
    // spent before the takeover was lost. Each streamed delta is a token of the scripted model.
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const deltas = stream.events.filter((event) => event.chunk.type === 'text-delta').length;
    expect(deltas).toBeGreaterThan(120);
    expect(final.usage!.outputTokens).toBe(deltas);
    expect(final.usage!.inputTokens).toBeGreaterThanOrEqual(sum((usage) => usage.inputTokens ?? 0));
    // The cut step's spend counts for the day too, apart from the finished steps.
    const outside = await server.outrun.db
      .selectFrom('spend_outside_steps')
      .select(['tokens', 'cost_usd'])
      .where('run_id', '=', run.id)
      .execute();
    expect(outside).toHaveLength(1);
    expect(outside[0]!.tokens).toBe(
      final.usage!.inputTokens! +
        final.usage!.outputTokens! -
        sum((u) => (u.inputTokens ?? 0) + (u.outputTokens ?? 0)),
    );
    expect(final.costUsd).toBeCloseTo(
      steps.reduce((total, step) => total + (step.cost_usd ?? 0), 0) + outside[0]!.cost_usd!,
      12,
    );
  });

  it('counts the prompt of a first step a takeover cut by an estimate of it, not as nothing', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, { worker: true, clock: clockPastLease(60_000) });
    cleanups.push(() => other.close({ graceMs: 0 }));

    const chatId = await server.createChat();
    // A long user message: the first step's prompt is mostly this text.
    const text = `${script({ steps: 1, tokens: 200, delayMs: 5 })} ${'lorem ipsum '.repeat(400)}`;
    const run = (await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text } } }))
      .body.run as RunObject;
    await waitUntil(async () => (await deltasOfStep(server, run.id, 1)) >= 3);
    expect(await other.engine.sweep({ all: false })).toBe(1);
    await server.waitForRun(run.id);

    // What the cut step streamed before the takeover: a token per delta before its interruption.
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const cutAt = stream.events.findIndex((event) => event.chunk.type === 'data-step-interrupted');
    const cutOutput = stream.events
      .slice(0, cutAt)
      .filter((event) => event.chunk.type === 'text-delta').length;
    const outside = await server.outrun.db
      .selectFrom('spend_outside_steps')
      .select('tokens')
      .where('run_id', '=', run.id)
      .executeTakeFirstOrThrow();
    // The prompt as estimated (the stored message's characters / 4, its JSON a little longer than its text).
    const prompt = outside.tokens - cutOutput;
    expect(prompt).toBeGreaterThanOrEqual(Math.ceil(text.length / 4));
    expect(prompt).toBeLessThan(Math.ceil(text.length / 4) + 20);
  });

  it('runs an approved call once, though the execution the answer resumed died in the step after it', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, { worker: true, clock: clockPastLease(60_000) });
    cleanups.push(() => other.close({ graceMs: 0 }));
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'careful', tools: [{ name: 'echo', needsApproval: true }] },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    const run = await server.startRun(chatId, { steps: 2, tokens: 40, delayMs: 5 });
    const waiting = await server.waitForRun(run.id, (current) => current.status === 'waiting');
    const { approvalId } = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!;
    await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    // The approved call ran; step 2 is streaming when the other instance takes the run over.
    await waitUntil(async () => (await deltasOfStep(server, run.id, 2)) >= 3);
    expect(await other.engine.sweep({ all: false })).toBe(1);

    const final = await server.waitForRun(run.id);
    expect(final).toMatchObject({ status: 'succeeded', attempt: 3 });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const types = stream.events.map((event) => event.chunk.type);
    expect(types).toContain('data-step-interrupted');
    expect(types.filter((type) => type === 'tool-output-available')).toHaveLength(1);
    expect(answeredText(stream.events)).toBe(scriptedText(2, 40));
  });

  it('counts only lost executions against maxAttempts: a run resumed after three waits survives a crash', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, {
      worker: true,
      clock: clockPastLease(60_000),
      maxAttempts: 3,
    });
    cleanups.push(() => other.close({ graceMs: 0 }));
    const chatId = await server.createChat();
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: {
        input: { text: JSON.stringify({ script: { steps: 4, tokens: 40, delayMs: 5 } }) },
        budget: { maxSteps: 1 },
      },
    });
    const runId = started.body.run.id as string;
    // Three waits for a budget, each answered: three more executions, none lost.
    for (const maxSteps of [2, 3, 10]) {
      await server.waitForRun(runId, (run) => run.status === 'waiting');
      const continued = await server.api(`/v1/runs/${runId}/continue`, {
        method: 'POST',
        body: { budget: { maxSteps } },
      });
      expect(continued.status).toBe(200);
    }
    await waitUntil(async () => (await deltasOfStep(server, runId, 4)) >= 3);
    expect((await server.outrun.runs.get(runId))!.attempt).toBe(4);
    // Its process "dies": the other instance finds the lease run out. One lost execution of three allowed.
    expect(await other.engine.sweep({ all: false })).toBe(1);

    const final = await server.waitForRun(runId);
    expect(final).toMatchObject({ status: 'succeeded', attempt: 5, error: null });
    expect((await server.outrun.runs.get(runId))!.lost_executions).toBe(1);
  });

  it('keeps what a step streamed before a hand-back in the run’s spend, so the resumed run’s budget holds', async () => {
    const server = await startTestServer(kind);
    cleanups.push(() => server.close());
    const text = JSON.stringify({ script: { tokens: 200, delayMs: 5 } });
    const promptTokens = Math.ceil(text.length / 4);
    // Room for the prompt and the 200-token answer once, not for a redone answer on top of what was cut.
    const maxTokens = promptTokens + 250;
    const chatId = await server.createChat();
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text }, budget: { maxTokens } },
    });
    const runId = started.body.run.id as string;
    await collectStream(await server.fetch(`/v1/runs/${runId}/stream`), { stopAfter: 120 });
    // A shutdown's hand-back, mid-answer; then the sweep a restart makes resumes the run, redoing the step.
    await server.outrun.executor.releaseAll();
    expect((await server.outrun.runs.get(runId))!.status).toBe('pending');
    await server.outrun.engine.sweep({ all: true });

    const final = await server.waitForRun(
      runId,
      (run) => run.status === 'waiting' || run.status === 'succeeded',
    );
    expect(final).toMatchObject({
      status: 'waiting',
      attempt: 2,
      waiting: { reason: 'budget', exceeded: 'tokens' },
    });
    // The waiting run's stream stays open: read its log instead.
    const chunks: { type: string }[] = [];
    for await (const event of server.outrun.log.replay(runId)) chunks.push(event.chunk as { type: string });
    const deltas = chunks.filter((chunk) => chunk.type === 'text-delta').length;
    expect(chunks.filter((chunk) => chunk.type === 'data-step-interrupted')).toHaveLength(2);
    // Every token streamed counts, the cut step's included, and the budget held over both executions.
    expect(final.usage!.outputTokens).toBe(deltas);
    expect(final.usage!.inputTokens! + final.usage!.outputTokens!).toBeLessThanOrEqual(maxTokens + 1);
  });

  it('ends a run aborted/lease_expired once it has used its executions', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, {
      worker: false,
      maxAttempts: 1,
      clock: clockPastLease(60_000),
    });
    cleanups.push(() => other.close({ graceMs: 0 }));

    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 5000, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    expect(await other.engine.sweep({ all: false })).toBe(1);

    await waitUntil(() => !server.outrun.executor.isActive(run.id));
    const final = await server.api(`/v1/runs/${run.id}`);
    expect(final.body.run).toMatchObject({ status: 'aborted', error: { code: 'lease_expired' }, attempt: 1 });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    const eventCount = stream.events.length;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await server.outrun.log.read({ runId: run.id, after: 0, limit: 100_000 })).toHaveLength(
      eventCount,
    );
  });

  it('delivers a stop recorded by another instance to the run, even without a shared bus', async () => {
    const server = await startTestServer(kind, { config: { leaseMs: 600 } });
    cleanups.push(() => server.close());
    const other = await secondInstance(server, { worker: false });
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
