import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../src/clock.ts';
import { QuotaExceededError } from '../src/errors.ts';
import { toErrorResponse } from '../src/http/error-mapper.ts';
import { QuotaService, secondsToNextUtcDay } from '../src/quotas/quota-service.ts';
import { RunEngine } from '../src/runs/run-engine.ts';
import { STORE_KINDS } from './support/databases.ts';
import { captureLogger } from './support/logger.ts';
import { collectStream, script } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil, waitUntil } from './support/wait.ts';

describe.each(STORE_KINDS)('workspace quotas on %s', (kind) => {
  let server: TestServer;
  let workspaceId: string;
  const logs = captureLogger<{ runId: string; code: string }>();

  beforeAll(async () => {
    server = await startTestServer(kind, { logger: logs.logger });
    workspaceId = (await server.api('/v1/me')).body.workspace.id;
  });
  afterAll(async () => {
    await server?.close();
  });

  const setQuota = (quota: Record<string, unknown> | null) =>
    server.api('/v1/workspaces/current/quota', { method: 'PATCH', body: { quota } });

  it('lets a workspace admin set, read and remove the quota', async () => {
    const set = await setQuota({ tokensPerDay: 1000, runsPerMinute: 30 });
    expect(set.status).toBe(200);
    expect(set.body.quota).toEqual({ tokensPerDay: 1000, runsPerMinute: 30 });
    const read = await server.api('/v1/workspaces/current/quota');
    expect(read.body).toMatchObject({
      quota: { tokensPerDay: 1000, runsPerMinute: 30 },
      usage: { tokens: 0, costUsd: 0 },
      remaining: { tokens: 1000, costUsd: null },
    });
    expect(read.body.resetsInSeconds).toBeGreaterThan(0);
    expect((await setQuota(null)).body.quota).toBeNull();
  });

  it('rejects a bad quota with 400 and a member changing it with 403, changing nothing', async () => {
    expect((await setQuota({ tokensPerDay: -1 })).status).toBe(400);
    expect((await setQuota({ tokensPerHour: 5 })).status).toBe(400);
    const memberKey = await server.createUser('quota-member@example.com');
    const forbidden = await server.api('/v1/workspaces/current/quota', {
      method: 'PATCH',
      body: { quota: { runsPerMinute: 1 } },
      key: memberKey,
    });
    expect(forbidden.status).toBe(403);
    expect((await server.api('/v1/workspaces/current/quota', { key: memberKey })).body.quota).toBeNull();
  });

  it('refuses a start past runsPerMinute until the oldest run of the window is a minute old', async () => {
    const chatId = await server.createChat();
    const first = await server.startRun(chatId, { steps: 1, tokens: 1 });
    await server.waitForRun(first.id);
    const second = await server.startRun(chatId, { steps: 1, tokens: 1 });
    await server.waitForRun(second.id);
    await setQuota({ runsPerMinute: 2 });
    const quotas = server.outrun.quotas;
    const error = await quotas.assertCanStart(workspaceId).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(QuotaExceededError);
    expect(error).toMatchObject({ code: 'quota_exceeded', quota: 'runsPerMinute', status: 429 });
    const retryAfter = (error as QuotaExceededError).retryAfterSeconds;
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);

    // A minute after the first run, one run has left the window and a start fits again.
    const later = new ManualClock(new Date(Date.parse(first.createdAt) + 60_001));
    // It passes, and hands the start the guard that counts again in the start's transaction.
    await expect(
      new QuotaService({ db: server.outrun.db, clock: later }).assertCanStart(workspaceId),
    ).resolves.toBeTypeOf('function');
    await setQuota({ runsPerMinute: 3 });
    await expect(quotas.assertCanStart(workspaceId)).resolves.toBeTypeOf('function');
    await setQuota(null);
    await expect(quotas.assertCanStart(workspaceId)).resolves.toBeNull();
  });

  it('never begins more runs than runsPerMinute from a burst of concurrent starts', async () => {
    const workspace = await server.api('/v1/admin/workspaces', {
      method: 'POST',
      body: { name: 'Bursty', quota: { runsPerMinute: 4 } },
    });
    const admin = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: 'bursty@example.com', role: 'admin' },
    });
    const key = admin.body.apiKey as string;
    const chats = await Promise.all(Array.from({ length: 12 }, () => server.createChat(key)));
    // Every start passes the first check together; the guard in each start's transaction decides.
    const answers = await Promise.all(
      chats.map((chatId) =>
        server.api(`/v1/chats/${chatId}/runs`, {
          method: 'POST',
          body: { input: { text: JSON.stringify({ script: { steps: 1, tokens: 1 } }) } },
          key,
        }),
      ),
    );
    const statuses = answers.map((answer) => answer.status).sort();
    expect(statuses).toEqual([...Array(4).fill(201), ...Array(8).fill(429)]);
    for (const refused of answers.filter((answer) => answer.status === 429)) {
      expect(refused.body.error).toMatchObject({ code: 'quota_exceeded', quota: 'runsPerMinute', limit: 4 });
    }
    const begun = await server.outrun.db
      .selectFrom('runs')
      .select('id')
      .where('workspace_id', '=', workspace.body.workspace.id)
      .execute();
    expect(begun).toHaveLength(4);
    // A refused start wrote nothing: no message, no event.
    const messages = await server.outrun.db
      .selectFrom('messages')
      .select('id')
      .where('workspace_id', '=', workspace.body.workspace.id)
      .execute();
    expect(messages).toHaveLength(2 * 4);
  });

  it('holds the continuation of a run to runsPerMinute like any start, beginning no run past it', async () => {
    const workspace = await server.api('/v1/admin/workspaces', { method: 'POST', body: { name: 'Chained' } });
    const admin = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: 'chained@example.com', role: 'admin' },
    });
    const key = admin.body.apiKey as string;
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'chained', tools: [{ name: 'echo' }], continuation: { maxRuns: 2 } },
      key,
    });
    const chat = await server.api('/v1/chats', {
      method: 'POST',
      body: { agentId: agent.body.agent.id },
      key,
    });
    const quotaNow = async () => (await server.api('/v1/workspaces/current/quota', { key })).body;
    const limit = ((await quotaNow()).usage.runsLastMinute as number) + 1;
    const patched = await server.api('/v1/workspaces/current/quota', {
      method: 'PATCH',
      body: { quota: { runsPerMinute: limit } },
      key,
    });
    expect(patched.status).toBe(200);

    const continuations = vi.spyOn(RunEngine.prototype, 'startContinuation');
    let first;
    let settled;
    try {
      const started = await server.api(`/v1/chats/${chat.body.chat.id}/runs`, {
        method: 'POST',
        body: {
          input: { text: script({ steps: 4, tokens: 2, tool: true }) },
          budget: { maxSteps: 1, onExceeded: 'continue' },
        },
        key,
      });
      expect(started.status, JSON.stringify(started.body)).toBe(201);
      first = await server.waitForRun(started.body.run.id, undefined, key);
      await waitUntil(() => continuations.mock.settledResults.some((result) => result.type !== 'incomplete'));
      settled = [...continuations.mock.settledResults];
    } finally {
      continuations.mockRestore();
    }
    expect(first.status).toBe('succeeded');
    // The follow-up was refused by the quota, and the refusal logged as the workspace's state, not a fault.
    expect(settled[0]).toMatchObject({
      type: 'rejected',
      value: { code: 'quota_exceeded', quota: 'runsPerMinute', details: { limit } },
    });
    const said = () =>
      logs.records.find((record) => record.runId === first.id && record.msg.startsWith('no continuation'));
    await waitUntil(() => said() !== undefined);
    expect(said()).toMatchObject({ level: 40, code: 'quota_exceeded' });
    const begun = await server.outrun.db
      .selectFrom('runs')
      .select('id')
      .where('workspace_id', '=', workspace.body.workspace.id)
      .execute();
    expect(begun.map((run) => run.id)).toEqual([first.id]);
    expect((await quotaNow()).usage.runsLastMinute).toBeLessThanOrEqual(limit);
  });

  it('sums the tokens of the steps finished today and refuses a start once tokensPerDay is used', async () => {
    const before = await server.outrun.quotas.usage(workspaceId);
    const chatId = await server.createChat();
    const run = await server.waitForRun((await server.startRun(chatId, { steps: 2, tokens: 3 })).id);
    const steps = await server.outrun.db
      .selectFrom('run_steps')
      .select('usage')
      .where('run_id', '=', run.id)
      .execute();
    const runTokens = steps.reduce(
      (sum, step) => sum + (step.usage?.inputTokens ?? 0) + (step.usage?.outputTokens ?? 0),
      0,
    );
    expect(runTokens).toBeGreaterThan(0);
    const after = await server.outrun.quotas.usage(workspaceId);
    expect(after.tokens - before.tokens).toBe(runTokens);

    await setQuota({ tokensPerDay: after.tokens + 10 });
    expect(await server.outrun.quotas.remaining(workspaceId)).toEqual({ tokens: 10, costUsd: null });
    await expect(server.outrun.quotas.assertCanStart(workspaceId)).resolves.toBeNull();

    await setQuota({ tokensPerDay: after.tokens });
    expect(await server.outrun.quotas.remaining(workspaceId)).toEqual({ tokens: 0, costUsd: null });
    const error = (await server.outrun.quotas
      .assertCanStart(workspaceId)
      .catch((caught: unknown) => caught)) as QuotaExceededError;
    expect(error).toMatchObject({
      quota: 'tokensPerDay',
      details: { limit: after.tokens, used: after.tokens },
    });
    // The daily quotas reset at midnight UTC, and `Retry-After` says when.
    expect(Math.abs(error.retryAfterSeconds - secondsToNextUtcDay(new Date()))).toBeLessThanOrEqual(2);

    // Tomorrow nothing of today counts.
    const tomorrow = new ManualClock(new Date(Date.now() + 24 * 60 * 60 * 1000));
    const nextDay = new QuotaService({ db: server.outrun.db, clock: tomorrow });
    expect(await nextDay.usage(workspaceId)).toMatchObject({ tokens: 0, costUsd: 0 });
    await expect(nextDay.assertCanStart(workspaceId)).resolves.toBeNull();
    await setQuota(null);
  });

  it('sums run_steps.cost_usd against costUsdPerDay', async () => {
    const chatId = await server.createChat();
    const run = await server.waitForRun((await server.startRun(chatId, { steps: 1, tokens: 1 })).id);
    // The scripted model has a price: start this step from nothing, so the change below is all it costs.
    await server.outrun.db
      .updateTable('run_steps')
      .set({ cost_usd: 0 })
      .where('run_id', '=', run.id)
      .execute();
    const spentBefore = (await server.outrun.quotas.usage(workspaceId)).costUsd;
    await server.outrun.db
      .updateTable('run_steps')
      .set({ cost_usd: 0.25 })
      .where('run_id', '=', run.id)
      .execute();
    const spent = (await server.outrun.quotas.usage(workspaceId)).costUsd;
    expect(spent - spentBefore).toBeCloseTo(0.25, 9);

    await setQuota({ costUsdPerDay: spent + 0.5 });
    expect((await server.outrun.quotas.remaining(workspaceId)).costUsd).toBeCloseTo(0.5, 9);
    await setQuota({ costUsdPerDay: spent });
    await expect(server.outrun.quotas.assertCanStart(workspaceId)).rejects.toMatchObject({
      code: 'quota_exceeded',
      quota: 'costUsdPerDay',
    });
    await setQuota(null);
  });

  it('counts what a run spent on a step it did not finish (here: stopped mid-answer) against the day', async () => {
    const before = await server.outrun.quotas.usage(workspaceId);
    const run = await server.startRun(await server.createChat(), { tokens: 400, delayMs: 10 });
    await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`), { stopAfter: 20 });
    expect((await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' })).status).toBe(200);
    const stopped = await server.waitForRun(run.id);
    expect(stopped.status).toBe('aborted');
    // The one step never finished: no run_steps row, yet every token the run counted counts for the day.
    const spent = stopped.usage!.inputTokens! + stopped.usage!.outputTokens!;
    expect(stopped.usage!.outputTokens).toBeGreaterThan(10);
    await pollUntil(
      async () => (await server.outrun.quotas.usage(workspaceId)).tokens - before.tokens,
      (counted) => counted === spent,
      { timeoutMs: 5_000 },
    );
    expect((await server.outrun.quotas.usage(workspaceId)).costUsd - before.costUsd).toBeCloseTo(
      stopped.costUsd!,
      12,
    );
  });

  it("shares what the daily quota leaves among this process's executions, counting a recorded step once", async () => {
    const quotas = new QuotaService({ db: server.outrun.db });
    const used = (await quotas.usage(workspaceId)).tokens;
    await quotas.set(workspaceId, { tokensPerDay: used + 1_000 });
    try {
      const first = await quotas.allowance(workspaceId);
      expect(first.tokens).toBe(1_000);
      // What the first execution spent and has not recorded counts against one that begins now.
      first.add(30, 0);
      const second = await quotas.allowance(workspaceId);
      expect(second.tokens).toBe(1_000);
      expect(second.spentSince().tokens).toBe(30);
      second.add(5, 0);
      expect(first.spentSince().tokens).toBe(35);

      // The first execution's step is recorded (a real run's steps stand in for it): an execution that
      // begins after reads it from run_steps, and does not count it again.
      const run = await server.waitForRun(
        (await server.startRun(await server.createChat(), { tokens: 4 })).id,
      );
      const recorded = (await quotas.usage(workspaceId)).tokens - used;
      expect(recorded).toBeGreaterThan(0);
      first.add(recorded - 30, 0);
      first.recorded(recorded, 0);
      const third = await quotas.allowance(workspaceId);
      expect(third.tokens).toBe(1_000 - recorded);
      expect(third.spentSince().tokens).toBe(5);
      expect(run.status).toBe('succeeded');

      // Once every execution is over, nothing is held: a new one counts from nothing.
      for (const allowance of [first, second, third]) allowance.close();
      expect((await quotas.allowance(workspaceId)).spentSince().tokens).toBe(0);
    } finally {
      await quotas.set(workspaceId, null);
    }
  });

  it('reads the quota setting once for a start and its run, and applies a change made here at once', async () => {
    const quotas = new QuotaService({ db: server.outrun.db });
    const reads = vi.spyOn(quotas, 'get');
    await quotas.assertCanStart(workspaceId);
    await quotas.remaining(workspaceId);
    await quotas.assertCanStart(workspaceId);
    expect(reads).toHaveBeenCalledTimes(1);

    // A change through this service is seen by the next start, not a second later.
    await quotas.set(workspaceId, { runsPerMinute: 1 });
    await server.api(
      `/v1/chats/${(await server.api('/v1/chats', { method: 'POST', body: {} })).body.chat.id}/runs`,
      {
        method: 'POST',
        body: { input: { text: 'one' } },
      },
    );
    await expect(quotas.assertCanStart(workspaceId)).rejects.toBeInstanceOf(QuotaExceededError);
    expect(reads).toHaveBeenCalledTimes(2);
    await quotas.set(workspaceId, null);
    await expect(quotas.assertCanStart(workspaceId)).resolves.toBeNull();
    reads.mockRestore();
  });

  it('shares one read of the setting among starts that miss the cache together', async () => {
    const quotas = new QuotaService({ db: server.outrun.db });
    const reads = vi.spyOn(quotas, 'get');
    await Promise.all(Array.from({ length: 50 }, () => quotas.assertCanStart(workspaceId)));
    expect(reads).toHaveBeenCalledTimes(1);

    // A change made while a read is under way is not hidden by it: the starts after the change read again.
    const cold = new QuotaService({ db: server.outrun.db });
    const coldReads = vi.spyOn(cold, 'get');
    const before = cold.assertCanStart(workspaceId);
    await cold.set(workspaceId, { runsPerMinute: 1 });
    await expect(cold.assertCanStart(workspaceId)).rejects.toBeInstanceOf(QuotaExceededError);
    await before;
    expect(coldReads).toHaveBeenCalledTimes(2);
    await cold.set(workspaceId, null);
    await expect(cold.assertCanStart(workspaceId)).resolves.toBeNull();
  });
});

describe('quota_exceeded over HTTP', () => {
  it('maps to 429 with Retry-After and the quota in the body', () => {
    const response = toErrorResponse(
      new QuotaExceededError({ quota: 'tokensPerDay', limit: 10, used: 12, retryAfterSeconds: 3600 }),
    );
    expect(response.status).toBe(429);
    expect(response.headers).toEqual({ 'retry-after': '3600' });
    expect(response.body.error).toMatchObject({
      code: 'quota_exceeded',
      quota: 'tokensPerDay',
      limit: 10,
      used: 12,
      retryAfterSeconds: 3600,
    });
  });
});
