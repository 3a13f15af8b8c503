import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Outrun } from '../src/app.ts';
import { resolveModel } from '../src/agent/providers.ts';
import type { RunObject } from '../src/protocol/run.ts';
import { STORE_KINDS } from './support/databases.ts';
import { answeredText, collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { ADMIN_KEY, startOtherInstance, startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** Runs that wait for a person (DESIGN §1 invariants 11 and 12): tool approvals and budgets. */
describe.each(STORE_KINDS)('waiting runs on %s', (kind) => {
  let server: TestServer;
  const others: Outrun[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, {
      config: { waitTtlMs: 60_000 },
      // `unpriced` is the scripted model under a name with no price.
      resolveModel: (id) => resolveModel({ modelId: id === 'unpriced' ? 'scripted' : id }),
    });
  });
  afterAll(async () => {
    await server?.close();
  });
  afterEach(async () => {
    for (const other of others.splice(0)) await other.close({ graceMs: 0 });
  });

  async function approvalChat(): Promise<string> {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'careful', tools: [{ name: 'echo', needsApproval: true }] },
    });
    expect(agent.status).toBe(201);
    const chat = await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
    return chat.body.chat.id as string;
  }

  const waitFor = (runId: string, status: string) => server.waitForRun(runId, (run) => run.status === status);

  async function start(chatId: string, body: Record<string, unknown>): Promise<RunObject> {
    const response = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body.run as RunObject;
  }

  async function stream(runId: string) {
    return collectStream(await server.fetch(`/v1/runs/${runId}/stream`));
  }

  it('waits for an approved tool call, runs it once approved, and refuses a second answer', async () => {
    const chatId = await approvalChat();
    const run = await start(chatId, { input: { text: script({ steps: 2, tokens: 3, tool: true }) } });
    const waiting = await waitFor(run.id, 'waiting');
    expect(waiting.waiting).toMatchObject({
      reason: 'approval',
      approvals: [{ toolName: 'echo', input: { step: 1 } }],
    });
    expect(Date.parse(waiting.waiting!.expiresAt)).toBeGreaterThan(Date.now());
    // The step that asked is recorded by the change to `waiting`, with what it spent.
    const recorded = await server.outrun.db
      .selectFrom('run_steps')
      .selectAll()
      .where('run_id', '=', run.id)
      .execute();
    expect(recorded.map((step) => step.step)).toEqual([1]);
    expect(recorded[0]!.usage).toMatchObject({ outputTokens: expect.any(Number) });
    const { inputTokens, outputTokens } = recorded[0]!.usage as { inputTokens: number; outputTokens: number };
    expect(waiting.usage).toEqual({ inputTokens, outputTokens });
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;

    const answered = await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    expect(answered.status).toBe(200);
    expect(['pending', 'running', 'succeeded']).toContain(answered.body.run.status);
    const again = await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: false },
    });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toMatch(/approval_already_answered|run_not_waiting/);

    const final = await server.waitForRun(run.id);
    expect(final).toMatchObject({ status: 'succeeded', waiting: null });
    const events = (await stream(run.id)).events;
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    const types = events.map((event) => event.chunk.type);
    expect(types).toContain('tool-approval-request');
    expect(types).toContain('data-tool-approval');
    expect(types.filter((type) => type === 'tool-output-available')).toHaveLength(1);
    expect(streamedText(events)).toBe(scriptedText(2, 3));
  });

  it('waits again at a later step and goes on after each answer, each approved call run once', async () => {
    const chatId = await approvalChat();
    const run = await start(chatId, { input: { text: script({ steps: 3, tokens: 2, tool: true }) } });
    for (const step of [1, 2]) {
      const waiting = await server.waitForRun(
        run.id,
        (current) => current.status === 'waiting' && current.stepCount === step,
      );
      const approval = (waiting.waiting as { approvals: { approvalId: string; input: unknown }[] })
        .approvals[0]!;
      expect(approval.input).toEqual({ step });
      if (step === 2) {
        // Step 1's call ran after its step was recorded: its record, and the message a reload shows while
        // the run waits, hold its output.
        const steps = (await server.api(`/v1/runs/${run.id}/steps`)).body.items as {
          parts: { type: string; state?: string }[];
        }[];
        expect(steps[0]!.parts.filter((part) => part.type === 'tool-echo').map((part) => part.state)).toEqual(
          ['output-available'],
        );
        const streaming = (await server.api(`/v1/chats/${chatId}/messages`)).body.items.at(-1) as {
          status: string;
          parts: { type: string; state?: string }[];
        };
        expect(streaming.parts.filter((part) => part.type === 'tool-echo').map((part) => part.state)).toEqual(
          ['output-available', 'approval-requested'],
        );
      }
      const answered = await server.api(`/v1/runs/${run.id}/approvals`, {
        method: 'POST',
        body: { approvalId: approval.approvalId, approved: step === 1 },
      });
      expect(answered.status).toBe(200);
    }
    const final = await server.waitForRun(run.id);
    expect(final).toMatchObject({ status: 'succeeded', stepCount: 3, error: null });
    const events = (await stream(run.id)).events;
    const types = events.map((event) => event.chunk.type);
    // Step 1's call approved and run once; step 2's denied, and the model told so.
    expect(types.filter((type) => type === 'tool-output-available')).toHaveLength(1);
    expect(types.filter((type) => type === 'tool-output-denied')).toHaveLength(1);
    expect(streamedText(events)).toBe(scriptedText(3, 2));
    // The message holds each call as it ended: step 1's with its output, step 2's denied.
    const message = (await server.api(`/v1/chats/${chatId}/messages`)).body.items.at(-1) as {
      parts: { type: string; state?: string }[];
    };
    expect(message.parts.filter((part) => part.type === 'tool-echo').map((part) => part.state)).toEqual([
      'output-available',
      'output-denied',
    ]);
  });

  it('refuses a repeated answer to an earlier wait’s approval with 409 approval_already_answered, changing nothing', async () => {
    const chatId = await approvalChat();
    const run = await start(chatId, { input: { text: script({ steps: 3, tokens: 2, tool: true }) } });
    const answer = (approvalId: string, approved: boolean) =>
      server.api(`/v1/runs/${run.id}/approvals`, { method: 'POST', body: { approvalId, approved } });
    const row = () =>
      server.outrun.db
        .selectFrom('runs')
        .select(['status', 'epoch', 'waiting'])
        .where('id', '=', run.id)
        .executeTakeFirstOrThrow();
    const firstWait = await server.waitForRun(
      run.id,
      (current) => current.status === 'waiting' && current.stepCount === 1,
    );
    const first = (firstWait.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    expect((await answer(first, false)).status).toBe(200);

    const secondWait = await server.waitForRun(
      run.id,
      (current) => current.status === 'waiting' && current.stepCount === 2,
    );
    const waitingRow = await row();
    const lastSeq = await server.outrun.log.lastSeq(run.id);
    const repeated = await answer(first, true);
    expect(repeated.status).toBe(409);
    expect(repeated.body.error).toMatchObject({ code: 'approval_already_answered', approved: false });
    // The current wait and the log are as they were.
    expect(await row()).toEqual(waitingRow);
    expect(await server.outrun.log.lastSeq(run.id)).toBe(lastSeq);
    // An id that never belonged to the run is still unknown while the run waits.
    const unknown = await answer('approval_never_asked', true);
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('approval_not_found');

    const second = (secondWait.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    expect((await answer(second, true)).status).toBe(200);
    await server.waitForRun(run.id);
    const endedRow = await row();
    for (const [approvalId, approved] of [
      [first, false],
      [second, true],
    ] as const) {
      const again = await answer(approvalId, !approved);
      expect(again.status).toBe(409);
      expect(again.body.error).toMatchObject({ code: 'approval_already_answered', approved });
    }
    // Once the run no longer waits, an id it never had says so.
    const notWaiting = await answer('approval_never_asked', true);
    expect(notWaiting.status).toBe(409);
    expect(notWaiting.body.error.code).toBe('run_not_waiting');
    expect(await row()).toEqual(endedRow);
  });

  it('tells the model about a denied call and goes on', async () => {
    const chatId = await approvalChat();
    const run = await start(chatId, { input: { text: script({ steps: 2, tokens: 2, tool: true }) } });
    const waiting = await waitFor(run.id, 'waiting');
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    const denied = await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: false, reason: 'not today' },
    });
    expect(denied.status).toBe(200);
    expect((await server.waitForRun(run.id)).status).toBe('succeeded');
    const types = (await stream(run.id)).events.map((event) => event.chunk.type);
    expect(types).toContain('tool-output-denied');
    expect(types).not.toContain('tool-output-available');
  });

  it('is answered on another instance after the first one shut down, and runs there', async () => {
    const chatId = await approvalChat();
    const run = await start(chatId, { input: { text: script({ steps: 2, tokens: 2, tool: true }) } });
    const waiting = await waitFor(run.id, 'waiting');
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    const { outrun: other, url } = await startOtherInstance(server);
    others.push(other);
    const response = await fetch(`${url}/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ approvalId, approved: true }),
    });
    expect(response.status).toBe(200);
    const final = await pollUntil(
      async () =>
        (await (
          await fetch(`${url}/v1/runs/${run.id}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
        ).json()) as { run: RunObject },
      (body) => body.run.status === 'succeeded',
    );
    expect(final.run.attempt).toBe(2);
    expect(other.executor.isActive(run.id)).toBe(false);
  });

  it('ends a waiting run aborted on stop, and aborted/wait_expired once its wait runs out', async () => {
    const chatId = await approvalChat();
    const stopped = await start(chatId, { input: { text: script({ steps: 2, tool: true }) } });
    await waitFor(stopped.id, 'waiting');
    const stop = await server.api(`/v1/runs/${stopped.id}/stop`, { method: 'POST' });
    expect(stop.body).toMatchObject({
      stopped: true,
      run: { status: 'aborted', error: { code: 'stopped' } },
    });
    expect((await stream(stopped.id)).done).toBe(true);

    const expiring = await start(chatId, { input: { text: script({ steps: 2, tool: true }) } });
    await waitFor(expiring.id, 'waiting');
    await server.outrun.db
      .updateTable('runs')
      .set({
        waiting: JSON.stringify({ reason: 'approval', approvals: [], expiresAt: new Date(0).toISOString() }),
      })
      .where('id', '=', expiring.id)
      .execute();
    await server.outrun.engine.sweep({ all: false });
    expect((await server.api(`/v1/runs/${expiring.id}`)).body.run).toMatchObject({
      status: 'aborted',
      error: { code: 'wait_expired' },
    });
  });

  describe('budgets', () => {
    const cases = [
      {
        kind: 'tokens',
        budget: { maxTokens: 40 },
        raise: { maxTokens: 100_000 },
        text: { steps: 1, tokens: 60 },
      },
      {
        kind: 'cost',
        budget: { maxCostUsd: 0.00006 },
        raise: { maxCostUsd: 1 },
        text: { steps: 1, tokens: 60 },
      },
      {
        kind: 'steps',
        budget: { maxSteps: 1 },
        raise: { maxSteps: 10 },
        text: { steps: 3, tokens: 4, tool: true },
      },
      {
        kind: 'duration',
        budget: { maxDurationMs: 150 },
        raise: { maxDurationMs: 600_000 },
        text: { steps: 1, tokens: 40, delayMs: 15 },
      },
    ] as const;

    for (const { kind: limit, budget, raise, text } of cases) {
      it(`pauses a run out of ${limit}, then continues to the whole scripted answer after a raise`, async () => {
        const chatId = await server.createChat();
        const run = await start(chatId, { input: { text: script(text) }, budget });
        const paused = await waitFor(run.id, 'waiting');
        expect(paused.waiting).toMatchObject({ reason: 'budget', exceeded: limit });
        const spentBefore = paused.usage!;
        const continued = await server.api(`/v1/runs/${run.id}/continue`, {
          method: 'POST',
          body: { budget: raise },
        });
        expect(continued.status, JSON.stringify(continued.body)).toBe(200);
        const final = await server.waitForRun(run.id);
        expect(final.status).toBe('succeeded');
        const events = (await stream(run.id)).events;
        expect(answeredText(events)).toBe(scriptedText(text.steps, text.tokens));
        expect(events.some((event) => event.chunk.type === 'data-budget')).toBe(true);
        // Spend is never given back: the final totals include what the paused execution spent.
        expect(final.usage!.outputTokens!).toBeGreaterThanOrEqual(spentBefore.outputTokens!);
      });
    }

    it('refuses a continue whose budget leaves a limit used up with 400 naming it, and the run waits unchanged', async () => {
      // Each step calls the echo tool but the last, and takes at least 40 ms.
      const text = { steps: 4, tokens: 3, delayMs: 20 };
      const run = await start(await server.createChat(), {
        input: { text: script(text) },
        budget: { maxSteps: 2 },
      });
      const paused = await waitFor(run.id, 'waiting');
      expect(paused).toMatchObject({ stepCount: 2, waiting: { reason: 'budget', exceeded: 'steps' } });
      const spentTokens = paused.usage!.inputTokens! + paused.usage!.outputTokens!;
      const lastSeq = await server.outrun.log.lastSeq(run.id);
      const refusals = [
        { budget: { maxSteps: 2 }, field: 'budget.maxSteps', says: 'the 2 steps' },
        { budget: { maxSteps: 1 }, field: 'budget.maxSteps', says: 'the 2 steps' },
        // The merged budget is checked: a raise of one limit leaves the others as they were.
        { budget: { maxTokens: 100_000 }, field: 'budget.maxSteps', says: 'the 2 steps' },
        {
          budget: { maxSteps: 10, maxTokens: spentTokens },
          field: 'budget.maxTokens',
          says: `${spentTokens}`,
        },
        { budget: { maxSteps: 10, maxCostUsd: paused.costUsd! }, field: 'budget.maxCostUsd', says: '$' },
        { budget: { maxSteps: 10, maxDurationMs: 1 }, field: 'budget.maxDurationMs', says: 'ms' },
      ];
      for (const refusal of refusals) {
        const response = await server.api(`/v1/runs/${run.id}/continue`, {
          method: 'POST',
          body: { budget: refusal.budget },
        });
        expect(response.status, JSON.stringify(refusal.budget)).toBe(400);
        expect(response.body.error).toMatchObject({ code: 'invalid_request', field: refusal.field });
        expect(response.body.error.message).toContain(refusal.field);
        expect(response.body.error.message).toContain(refusal.says);
      }
      expect((await server.api(`/v1/runs/${run.id}`)).body.run).toEqual(paused);
      expect(await server.outrun.log.lastSeq(run.id)).toBe(lastSeq);

      const continued = await server.api(`/v1/runs/${run.id}/continue`, {
        method: 'POST',
        body: { budget: { maxSteps: 4 } },
      });
      expect(continued.status, JSON.stringify(continued.body)).toBe(200);
      const final = await server.waitForRun(run.id);
      expect(final).toMatchObject({ status: 'succeeded', stepCount: 4 });
      expect(answeredText((await stream(run.id)).events)).toBe(scriptedText(text.steps, text.tokens));
      expect(Object.keys(final.usage!).sort()).toEqual(['inputTokens', 'outputTokens']);
    });

    it('refuses a continue that sets a cost budget on a model without a price with 400 price_unknown', async () => {
      const run = await start(await server.createChat(), {
        input: { text: script({ steps: 2, tokens: 2 }) },
        model: 'unpriced',
        budget: { maxSteps: 1 },
      });
      const paused = await waitFor(run.id, 'waiting');
      const response = await server.api(`/v1/runs/${run.id}/continue`, {
        method: 'POST',
        body: { budget: { maxSteps: 5, maxCostUsd: 1 } },
      });
      expect(response.status).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'price_unknown', field: 'budget.maxCostUsd' });
      expect((await server.api(`/v1/runs/${run.id}`)).body.run).toEqual(paused);
    });

    it('pauses a resumed run whose steps are used up and whose last step called a tool, never ending it succeeded', async () => {
      const text = { steps: 4, tokens: 3 };
      const run = await start(await server.createChat(), {
        input: { text: script(text) },
        budget: { maxSteps: 2 },
      });
      const paused = await waitFor(run.id, 'waiting');
      // Resumed without a raise, as a continue an older instance accepted in a rolling deploy would.
      const { db, lifecycle } = server.outrun;
      const change = await db
        .transaction()
        .execute((tx) => lifecycle.transitionIn(tx, { runId: run.id, to: 'pending', from: ['waiting'] }));
      await lifecycle.afterCommit(change!);
      const again = await server.waitForRun(
        run.id,
        (current) => current.status !== 'pending' && current.status !== 'running',
      );
      // The run's totals keep their shape, not that of its steps' usage (`totalTokens` and the like).
      expect(again.usage).toEqual(paused.usage);
      expect(again).toMatchObject({
        status: 'waiting',
        stepCount: 2,
        costUsd: paused.costUsd,
        waiting: { reason: 'budget', exceeded: 'steps' },
      });
      const continued = await server.api(`/v1/runs/${run.id}/continue`, {
        method: 'POST',
        body: { budget: { maxSteps: 10 } },
      });
      expect(continued.status, JSON.stringify(continued.body)).toBe(200);
      const final = await server.waitForRun(run.id);
      expect(final).toMatchObject({ status: 'succeeded', stepCount: 4 });
      expect(answeredText((await stream(run.id)).events)).toBe(scriptedText(text.steps, text.tokens));
    });

    it('aborts with budget_exceeded under onExceeded: abort, keeping the partial output', async () => {
      const chatId = await server.createChat();
      const run = await start(chatId, {
        input: { text: script({ tokens: 80 }) },
        budget: { maxTokens: 40, onExceeded: 'abort' },
      });
      const final = await server.waitForRun(run.id);
      expect(final).toMatchObject({ status: 'aborted', error: { code: 'budget_exceeded' } });
      const events = (await stream(run.id)).events;
      const partial = streamedText(events);
      expect(partial.length).toBeGreaterThan(0);
      expect(scriptedText(1, 80).startsWith(partial)).toBe(true);
      // The cut came at the chunk that crossed the budget: tokens spent exceed it by at most one.
      expect(final.usage!.inputTokens! + final.usage!.outputTokens!).toBeLessThanOrEqual(41);
    });

    it('holds a run to its duration while the model sends nothing, pausing it and then aborting it', async () => {
      // Two seconds between deltas: without a clock of its own the budget would only be looked at on the next.
      const text = { tokens: 1, delayMs: 2_000 };
      const chatId = await server.createChat();
      const startedAt = Date.now();
      const run = await start(chatId, { input: { text: script(text) }, budget: { maxDurationMs: 200 } });
      const paused = await waitFor(run.id, 'waiting');
      expect(Date.now() - startedAt).toBeLessThan(1_500);
      expect(paused.waiting).toMatchObject({ reason: 'budget', exceeded: 'duration' });
      // The step it cut is redone after a raise, so the answer is still the whole scripted one.
      const continued = await server.api(`/v1/runs/${run.id}/continue`, {
        method: 'POST',
        body: { budget: { maxDurationMs: 600_000 } },
      });
      expect(continued.status, JSON.stringify(continued.body)).toBe(200);
      const final = await server.waitForRun(run.id);
      expect(final.status).toBe('succeeded');
      expect(answeredText((await stream(run.id)).events)).toBe(scriptedText(1, text.tokens));

      const abortedAt = Date.now();
      const other = await start(await server.createChat(), {
        input: { text: script(text) },
        budget: { maxDurationMs: 200, onExceeded: 'abort' },
      });
      const ended = await server.waitForRun(other.id);
      expect(Date.now() - abortedAt).toBeLessThan(1_500);
      expect(ended).toMatchObject({ status: 'aborted', error: { code: 'budget_exceeded' } });
    });

    it('lets a run with a duration budget longer than a timer can wait (30 days) finish', async () => {
      const run = await start(await server.createChat(), {
        input: { text: script({ tokens: 3, delayMs: 20 }) },
        budget: { maxDurationMs: 30 * 24 * 60 * 60_000 },
      });
      expect(await server.waitForRun(run.id)).toMatchObject({ status: 'succeeded' });
    });

    it('records usage and cost per step, and the run totals are their sums', async () => {
      const chatId = await server.createChat();
      const run = await start(chatId, { input: { text: script({ steps: 3, tokens: 5, tool: true }) } });
      const final = await server.waitForRun(run.id);
      const steps = (await server.api(`/v1/runs/${run.id}/steps`)).body.items as {
        usage: { inputTokens: number; outputTokens: number };
      }[];
      expect(steps).toHaveLength(3);
      const rows = await server.outrun.db
        .selectFrom('run_steps')
        .select(['cost_usd'])
        .where('run_id', '=', run.id)
        .execute();
      expect(final.usage!.inputTokens).toBe(steps.reduce((sum, step) => sum + step.usage.inputTokens, 0));
      expect(final.usage!.outputTokens).toBe(15);
      expect(final.costUsd).toBeCloseTo(
        rows.reduce((sum, row) => sum + (row.cost_usd ?? 0), 0),
        12,
      );
      expect(final.costUsd).toBeCloseTo(
        (final.usage!.inputTokens! * 1 + final.usage!.outputTokens! * 2) / 1_000_000,
        12,
      );
    });

    it('refuses a cost budget on a model without a price with 400 price_unknown, writing nothing', async () => {
      const chatId = await server.createChat();
      const response = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: 'hi' }, model: 'unpriced', budget: { maxCostUsd: 1 } },
      });
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('price_unknown');
      expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toEqual([]);
    });
  });
});
