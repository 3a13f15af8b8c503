import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunObject } from '../src/protocol/run.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, scriptedText, streamedText } from './support/sse.ts';
import { ADMIN_KEY, startOtherInstance, startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** Invariant 15 (the model never gets more than its context budget) and workspace quotas, end to end. */
describe.each(STORE_KINDS)('context budgets and quotas on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  const padded = (tokens: number) =>
    JSON.stringify({ script: { tokens }, padding: 'lorem ipsum '.repeat(60) });

  it('compacts a long chat under context.maxTokens, reports it in the stream, and keeps stored messages whole', async () => {
    // The default keepLastTurns (4): four of these turns are over 300 tokens, and the budget comes first.
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'short memory', context: { maxTokens: 300 } },
    });
    expect(agent.status).toBe(201);
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    for (let turn = 0; turn < 5; turn++) {
      const run = (
        await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: padded(3) } } })
      ).body.run;
      expect((await server.waitForRun(run.id)).status).toBe('succeeded');
    }
    const echo = (
      await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: JSON.stringify({ script: { echoInput: true } }) } },
      })
    ).body.run;
    await server.waitForRun(echo.id);
    const events = (await collectStream(await server.fetch(`/v1/runs/${echo.id}/stream`))).events;
    const compaction = events.find((event) => event.chunk.type === 'data-compaction');
    expect(compaction?.chunk.data).toMatchObject({ trigger: 'threshold' });
    const data = compaction!.chunk.data as { tokensBefore: number; tokensAfter: number };
    expect(data.tokensBefore).toBeGreaterThan(300);
    expect(data.tokensAfter).toBeLessThanOrEqual(300);
    const echoed = JSON.parse(streamedText(events)) as { chars: number };
    expect(Math.ceil(echoed.chars / 4)).toBeLessThanOrEqual(300);

    // Stored messages are never changed: the first one still holds all of its padding.
    const messages = (await server.api(`/v1/chats/${chatId}/messages`)).body.items as {
      role: string;
      parts: { type: string; text?: string }[];
    }[];
    expect(messages[0]!.parts[0]!.text).toBe(padded(3));
  });

  /** A chat whose agent summarizes its history past 400 tokens, keeping the last turn whole. */
  async function summarizingChat(name: string): Promise<string> {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name, context: { maxTokens: 400, keepLastTurns: 1, summarize: true } },
    });
    const chat = await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
    return chat.body.chat.id as string;
  }

  it('summarizes old turns with the run’s model and reuses the stored summary in the next run', async () => {
    const chatId = await summarizingChat('summarizer');
    const say = async (text: string) => {
      const run = (
        await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text } } })
      ).body.run;
      expect((await server.waitForRun(run.id)).status).toBe('succeeded');
      return run.id as string;
    };
    for (let turn = 0; turn < 5; turn++) await say(padded(3));
    const echo = JSON.stringify({ script: { echoInput: true } });
    const first = await say(echo);
    const compaction = (await collectStream(await server.fetch(`/v1/runs/${first}/stream`))).events.find(
      (event) => event.chunk.type === 'data-compaction',
    );
    expect((compaction?.chunk.data as { summarized: number }).summarized).toBeGreaterThan(0);
    const stored = () =>
      server.outrun.db.selectFrom('compactions').selectAll().where('chat_id', '=', chatId).execute();
    const summaries = await stored();
    expect(summaries.length).toBeGreaterThan(0);
    expect(summaries.at(-1)!.summary).toMatch(/summary of \d+ messages/i);

    // The next run starts from the stored summary instead of summarizing the same turns again.
    const second = await say(echo);
    const echoed = JSON.parse(
      streamedText((await collectStream(await server.fetch(`/v1/runs/${second}/stream`))).events),
    ) as { chars: number };
    expect(Math.ceil(echoed.chars / 4)).toBeLessThanOrEqual(400);
    expect(await stored()).toHaveLength(summaries.length);
  });

  it('counts a context summary’s model call in its run’s usage and in the day’s', async () => {
    const chatId = await summarizingChat('summarizer, counted');
    const usedBefore = (await server.outrun.quotas.usage(await workspaceOf())).tokens;
    const runs: RunObject[] = [];
    for (let turn = 0; turn < 5; turn++) {
      const started = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: padded(3) } },
      });
      runs.push(await server.waitForRun(started.body.run.id as string));
    }
    const made = await server.outrun.db
      .selectFrom('compactions')
      .select('run_id')
      .where('chat_id', '=', chatId)
      .execute();
    expect(made.length).toBeGreaterThan(0);
    const summarizer = runs.find((run) => run.id === made[0]!.run_id)!;
    const steps = (await server.api(`/v1/runs/${summarizer.id}/steps`)).body.items as {
      usage: { inputTokens: number; outputTokens: number };
    }[];
    const inSteps = steps.reduce((sum, step) => sum + step.usage.inputTokens + step.usage.outputTokens, 0);
    const outside = await server.outrun.db
      .selectFrom('spend_outside_steps')
      .select(['tokens', 'cost_usd'])
      .where('run_id', '=', summarizer.id)
      .execute();
    // The summary's call: outside the run's steps, yet in its totals and its cost.
    expect(outside).toHaveLength(1);
    expect(outside[0]!.tokens).toBeGreaterThan(0);
    const total = summarizer.usage!.inputTokens! + summarizer.usage!.outputTokens!;
    expect(total).toBe(inSteps + outside[0]!.tokens);
    // And the day counts every token the five runs spent, the summary's included.
    const spent = runs.reduce((sum, run) => sum + run.usage!.inputTokens! + run.usage!.outputTokens!, 0);
    expect((await server.outrun.quotas.usage(await workspaceOf())).tokens - usedBefore).toBe(spent);
  });

  it('asks for no summary that the run’s budget cannot afford, and compacts without one', async () => {
    // A history over the agent's 2,000 tokens (twelve turns of about 200), made while it does not summarize.
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'summarizer, on a budget',
        context: { maxTokens: 2_000, keepLastTurns: 1, summarize: false },
      },
    });
    const agentId = agent.body.agent.id as string;
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId } })).body.chat
      .id as string;
    const say = async (budget?: Record<string, unknown>) => {
      const started = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: padded(3) }, ...(budget ? { budget } : {}) },
      });
      return server.waitForRun(started.body.run.id as string);
    };
    for (let turn = 0; turn < 12; turn++) expect((await say()).status).toBe('succeeded');
    await server.api(`/v1/agents/${agentId}`, {
      method: 'PATCH',
      body: { context: { maxTokens: 2_000, keepLastTurns: 1, summarize: true } },
    });
    const summaries = () =>
      server.outrun.db.selectFrom('compactions').select('run_id').where('chat_id', '=', chatId).execute();

    // A summary's request may take the context budget (2,000) and its answer a quarter of it (500), and it
    // cannot be cut mid-way: 2,200 cannot afford it. The history is compacted without it, and the step, which
    // fits, is made.
    const budgeted = await say({ maxTokens: 2_200 });
    expect(budgeted.status).toBe('succeeded');
    expect(await summaries()).toEqual([]);
    const compaction = (
      await collectStream(await server.fetch(`/v1/runs/${budgeted.id}/stream`))
    ).events.find((event) => event.chunk.type === 'data-compaction');
    expect(compaction).toBeDefined();
    const outside = await server.outrun.db
      .selectFrom('spend_outside_steps')
      .select('tokens')
      .where('run_id', '=', budgeted.id)
      .execute();
    expect(outside).toEqual([]);
    expect(budgeted.usage!.inputTokens! + budgeted.usage!.outputTokens!).toBeLessThanOrEqual(2_200);

    // Without the budget the same history is summarized.
    const unbudgeted = await say();
    expect(unbudgeted.status).toBe('succeeded');
    expect(await summaries()).toEqual([{ run_id: unbudgeted.id }]);
  });

  it('retries a step once, compacted to half, when the model says the context is too long', async () => {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'keeps one turn', context: { keepLastTurns: 1 } },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    for (let turn = 0; turn < 4; turn++) {
      const run = (
        await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: padded(2) } } })
      ).body.run;
      await server.waitForRun(run.id);
    }
    // The scripted model refuses prompts over 400 tokens; the history is well over that.
    const text = JSON.stringify({ script: { tokens: 3, contextWindow: 400 } });
    const run = (await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text } } }))
      .body.run;
    const final = await server.waitForRun(run.id);
    expect(final.status, JSON.stringify(final.error)).toBe('succeeded');
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.some((event) => event.chunk.type === 'error')).toBe(false);
    const compaction = events.find((event) => event.chunk.type === 'data-compaction');
    expect(compaction?.chunk.data).toMatchObject({ trigger: 'context_overflow' });
    expect(streamedText(events)).toBe('s1t0 s1t1 s1t2 ');
  });

  it('retries a later step once, its own prompt compacted to half, when the model says it is too long', async () => {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'keeps one turn, later', tools: [{ name: 'echo' }], context: { keepLastTurns: 1 } },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    for (let turn = 0; turn < 2; turn++) {
      const run = (
        await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: padded(2) } } })
      ).body.run;
      await server.waitForRun(run.id);
    }
    // The first step's prompt (about 420 tokens) fits the model's 480; the second, with the first step's 100
    // tokens of text, does not: the provider refuses it, under the agent's own budget (the default, 100k).
    const text = JSON.stringify({ script: { steps: 2, tokens: 100, tool: 'echo', contextWindow: 480 } });
    const run = (await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text } } }))
      .body.run;
    const final = await server.waitForRun(run.id);
    expect(final.status, JSON.stringify(final.error)).toBe('succeeded');
    expect(final.stepCount).toBe(2);
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.some((event) => event.chunk.type === 'error')).toBe(false);
    // Refused before it streamed anything: the compaction, then the step again.
    const compaction = events.findIndex((event) => event.chunk.type === 'data-compaction');
    expect(events[compaction]!.chunk.data).toMatchObject({ trigger: 'context_overflow' });
    expect(events.slice(compaction - 2, compaction + 2).map((event) => event.chunk.type)).toEqual([
      'finish-step',
      'data-budget',
      'data-compaction',
      'start-step',
    ]);
    expect(events.some((event) => event.chunk.type === 'tool-output-available')).toBe(true);
    expect(streamedText(events)).toBe(scriptedText(2, 100));
    const steps = (await server.api(`/v1/runs/${run.id}/steps`)).body.items as { step: number }[];
    expect(steps.map((step) => step.step)).toEqual([1, 2]);
  });

  it('refuses a message whose text alone is over the context budget with 400, writing nothing', async () => {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'small window', context: { maxTokens: 300 } },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    const tooLong = 'lorem ipsum '.repeat(120); // 1,440 characters: 360 tokens, and the message's form
    const refused = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: tooLong } },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'invalid_request', field: 'input', maxTokens: 300 });
    expect(refused.body.error.tokens).toBeGreaterThan(360);
    // useChat's route starts runs the same way.
    const viaUseChat = await server.api('/v1/ui/chats', {
      method: 'POST',
      body: { id: chatId, messages: [{ id: 'm1', role: 'user', parts: [{ type: 'text', text: tooLong }] }] },
    });
    expect(viaUseChat.status).toBe(400);
    expect(viaUseChat.body.error).toMatchObject({ code: 'invalid_request', field: 'input' });
    // The message is counted as the model gets it: 100 short parts are more than their text.
    const manyParts = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { parts: Array.from({ length: 100 }, () => ({ type: 'text', text: 'ab' })) } },
    });
    expect(manyParts.status).toBe(400);
    expect(manyParts.body.error).toMatchObject({ code: 'invalid_request', field: 'input', maxTokens: 300 });
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toEqual([]);
    expect((await server.api(`/v1/chats/${chatId}/messages`)).body.items).toEqual([]);

    // A message that fits starts as usual: a one-step script, padded to about 250 tokens.
    const padded = JSON.stringify({
      script: { tool: false, tokens: 3, toolInput: { pad: 'x'.repeat(950) } },
    });
    const fits = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: padded } },
    });
    expect(fits.status).toBe(201);
    expect((await server.waitForRun(fits.body.run.id)).status).toBe('succeeded');

    // An autostart text over the agent's budget would refuse every chat of the agent: refused on the agent.
    const autostarting = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'long opener', context: { maxTokens: 300 }, autostart: { text: tooLong } },
    });
    expect(autostarting.status).toBe(400);
    expect(autostarting.body.error).toMatchObject({ code: 'invalid_request', field: 'autostart.text' });
    const patched = await server.api(`/v1/agents/${agent.body.agent.id}`, {
      method: 'PATCH',
      body: { autostart: { text: tooLong } },
    });
    expect(patched.status).toBe(400);
    expect(patched.body.error).toMatchObject({ field: 'autostart.text' });
    expect((await server.api(`/v1/agents/${agent.body.agent.id}`)).body.agent.autostart).toBeNull();
  });

  it("counts the agent's instructions with the message, and refuses instructions alone over the budget", async () => {
    const instructions = 'Answer in French. '.repeat(40); // 720 characters: about 190 tokens of 300
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'small window, long instructions', instructions, context: { maxTokens: 300 } },
    });
    expect(agent.status).toBe(201);
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    // 480 characters: 120 tokens, under the budget alone, over it with the instructions.
    const refused = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: 'lorem ipsum '.repeat(40) } },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'invalid_request', field: 'input', maxTokens: 300 });
    expect(refused.body.error.message).toContain("the message and the agent's instructions");
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toEqual([]);
    const fits = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: '{"script": {"tool": false, "tokens": 3}}' } },
    });
    expect(fits.status).toBe(201);
    expect((await server.waitForRun(fits.body.run.id)).status).toBe('succeeded');

    // Instructions over the budget would fail every run of the agent: refused on create and on update.
    const tooLong = 'Answer in French. '.repeat(80);
    const created = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'longer instructions', instructions: tooLong, context: { maxTokens: 300 } },
    });
    expect(created.status).toBe(400);
    expect(created.body.error).toMatchObject({
      code: 'invalid_request',
      field: 'instructions',
      maxTokens: 300,
    });
    expect(created.body.error.tokens).toBeGreaterThan(300);
    const patched = await server.api(`/v1/agents/${agent.body.agent.id}`, {
      method: 'PATCH',
      body: { context: { maxTokens: 150 } },
    });
    expect(patched.status).toBe(400);
    expect(patched.body.error).toMatchObject({ code: 'invalid_request', field: 'instructions' });
    expect((await server.api(`/v1/agents/${agent.body.agent.id}`)).body.agent.context.maxTokens).toBe(300);
  });

  it("keeps the calls of a follow-up's parent turn under pressure, leaving out their outputs first", async () => {
    // The parent runs out of its one step after calling echo with the 4,000 characters its script gave it,
    // which echo returns: its follow-up's prompt (the parent's turn, then "Continue where you left off.") is
    // about 3,200 tokens whole, 2,700 with the output shortened, 2,200 with it left out and 1,200 collapsed;
    // the budget holds the last two.
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'persistent, small window',
        tools: [{ name: 'echo' }, { name: 'current_time' }],
        budget: { maxSteps: 1, onExceeded: 'continue' },
        continuation: { maxRuns: 1 },
        context: { maxTokens: 2_500 },
      },
    });
    expect(agent.status).toBe(201);
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    const text = JSON.stringify({
      script: { steps: 2, tokens: 2, tool: 'echo', toolInput: { pad: 'x'.repeat(4_000) } },
    });
    const parent = (
      await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text } } })
    ).body.run as RunObject;
    expect((await server.waitForRun(parent.id)).status).toBe('succeeded');
    const runs = await pollUntil(
      async () => (await server.api(`/v1/chats/${chatId}/runs`)).body.items as RunObject[],
      (items) => items.some((run) => run.parentRunId === parent.id),
    );
    const follow = runs.find((run) => run.parentRunId === parent.id)!;
    expect(follow).toMatchObject({ trigger: 'continue' });
    await server.waitForRun(follow.id);
    const events = (await collectStream(await server.fetch(`/v1/runs/${follow.id}/stream`))).events;
    const compaction = events.find((event) => event.chunk.type === 'data-compaction')?.chunk.data as
      { trimmed: number; tokensAfter: number } | undefined;
    // One message changed, the tool output (left out); collapsed, the parent's turn would have lost its call
    // and the call's 4,000 characters of input, three messages changed.
    expect(compaction).toMatchObject({ trimmed: 1 });
    expect(compaction!.tokensAfter).toBeLessThanOrEqual(2_500);
    expect(compaction!.tokensAfter).toBeGreaterThan(2_000);
  });

  it("counts the agent's built-in tool definitions with the message, and refuses tools alone over the budget", async () => {
    const tools = [
      { name: 'echo' },
      { name: 'current_time' },
      { name: 'calculator' },
      { name: 'schedule_followup' },
    ];
    // Their definitions alone are over a budget of 20: refused on create, the refusal saying how many tokens.
    const tooSmall = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'tools over the budget', tools, context: { maxTokens: 20 } },
    });
    expect(tooSmall.status).toBe(400);
    expect(tooSmall.body.error).toMatchObject({ code: 'invalid_request', field: 'tools', maxTokens: 20 });
    const definitions = tooSmall.body.error.tokens as number;
    // Each definition's name, description and input schema: far more than their names.
    expect(definitions).toBeGreaterThan(150);

    const maxTokens = definitions + 80;
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'tools near the budget', tools, context: { maxTokens } },
    });
    expect(agent.status).toBe(201);
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    // About 110 tokens: under the budget alone, over it with the tools' definitions.
    const text = 'lorem ipsum '.repeat(36);
    const refused = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text } },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'invalid_request', field: 'input', maxTokens });
    expect(refused.body.error.tokens).toBeGreaterThan(definitions + 100);
    expect(refused.body.error.message).toContain("the message and the agent's tool definitions are");
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toEqual([]);
    // A schedule's input is refused the same way, on create.
    const scheduled = await server.api(`/v1/chats/${chatId}/schedules`, {
      method: 'POST',
      body: { cron: '0 9 * * *', input: { text } },
    });
    expect(scheduled.status).toBe(400);
    expect(scheduled.body.error).toMatchObject({ code: 'invalid_request', field: 'input', maxTokens });

    // A short message fits beside them, and its run, which sends the same definitions, succeeds.
    const fits = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: '{"script": {"tool": false, "tokens": 3}}' } },
    });
    expect(fits.status).toBe(201);
    expect((await server.waitForRun(fits.body.run.id)).status).toBe('succeeded');

    // A budget lowered under the definitions is refused on update, and changes nothing.
    const patched = await server.api(`/v1/agents/${agent.body.agent.id}`, {
      method: 'PATCH',
      body: { context: { maxTokens: definitions - 10 } },
    });
    expect(patched.status).toBe(400);
    expect(patched.body.error).toMatchObject({ code: 'invalid_request', field: 'tools' });
    expect((await server.api(`/v1/agents/${agent.body.agent.id}`)).body.agent.context.maxTokens).toBe(
      maxTokens,
    );
  });

  it('refuses a start beyond the workspace quota with 429 quota_exceeded and Retry-After, writing nothing', async () => {
    await withQuota({ runsPerMinute: 1 }, async () => {
      const chatId = await server.createChat();
      const first = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: padded(1) } },
      });
      // Earlier tests may have used the minute already; either way the next start is refused.
      const refused = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: padded(1) }, multitask: 'enqueue' },
      });
      expect(refused.status).toBe(429);
      expect(refused.body.error.code).toBe('quota_exceeded');
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      const runs = (await server.api(`/v1/chats/${chatId}/runs`)).body.items as unknown[];
      expect(runs).toHaveLength(first.status === 201 ? 1 : 0);
    });
  });

  it('ends a run aborted/quota_exceeded when the daily token quota runs out mid-way, keeping its output', async () => {
    const chatId = await server.createChat();
    const warmup = await server.startRun(chatId, { tokens: 1 });
    await server.waitForRun(warmup.id);
    const used = (await server.outrun.quotas.usage(await workspaceOf())).tokens;
    await withQuota({ tokensPerDay: used + 60 }, async () => {
      const run = await server.startRun(chatId, { tokens: 400 });
      const final = await server.waitForRun(run.id);
      expect(final).toMatchObject({ status: 'aborted', error: { code: 'quota_exceeded' } });
      const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
      expect(streamedText(events).length).toBeGreaterThan(0);
    });
  });

  it('holds runs executing at the same time to the daily token quota together, not each to all of it', async () => {
    const chats = await Promise.all([1, 2, 3].map(() => server.createChat()));
    const used = (await server.outrun.quotas.usage(await workspaceOf())).tokens;
    // One run alone fits (about 25 prompt tokens and 60 output); three at once do not.
    const quota = 100;
    await withQuota({ tokensPerDay: used + quota }, async () => {
      const first = await server.startRun(chats[0]!, { tokens: 60, delayMs: 10 });
      // The others begin while the first is half-way through its step, which is not recorded yet.
      await collectStream(await server.fetch(`/v1/runs/${first.id}/stream`), { stopAfter: 30 });
      const others = await Promise.all(
        chats.slice(1).map((chatId) => server.startRun(chatId, { tokens: 60, delayMs: 10 })),
      );
      const finals = await Promise.all([first, ...others].map((run) => server.waitForRun(run.id)));
      expect(finals.filter((run) => run.error?.code === 'quota_exceeded').length).toBeGreaterThan(0);
      const spent = finals.reduce((sum, run) => sum + run.usage!.inputTokens! + run.usage!.outputTokens!, 0);
      // A call the quota cannot afford is not made, and a step is cut at the chunk that crossed it: over the
      // quota by at most one chunk a run.
      expect(spent).toBeLessThanOrEqual(quota + finals.length);
    });
  });

  it('holds a run to the daily quota that a run on another instance spent from while it ran', async () => {
    const { outrun: other, url: otherUrl } = await startOtherInstance(server);
    const used = (await server.outrun.quotas.usage(await workspaceOf())).tokens;
    // Four steps of about 175 tokens each fit alone; with the other instance's 221 tokens, three do.
    const quota = 800;
    try {
      await withQuota({ tokensPerDay: used + quota }, async () => {
        const run = await server.startRun(await server.createChat(), {
          steps: 4,
          tokens: 5,
          delayMs: 200,
          tool: true,
        });
        await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`), { stopAfter: 5 });
        const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
        const chat = await fetch(`${otherUrl}/v1/chats`, { method: 'POST', headers, body: '{}' });
        const chatId = ((await chat.json()) as { chat: { id: string } }).chat.id;
        const started = await fetch(`${otherUrl}/v1/chats/${chatId}/runs`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ input: { text: JSON.stringify({ script: { tokens: 200 } }) } }),
        });
        const otherRun = ((await started.json()) as { run: { id: string } }).run;
        expect((await server.waitForRun(otherRun.id)).status).toBe('succeeded');

        const final = await server.waitForRun(run.id);
        expect(final).toMatchObject({ status: 'aborted', error: { code: 'quota_exceeded' } });
        expect(final.stepCount).toBeLessThan(4);
        // The step the quota could not afford was not begun: the day stays within it.
        const spent = (await server.outrun.quotas.usage(await workspaceOf())).tokens - used;
        expect(spent).toBeLessThanOrEqual(quota);
      });
    } finally {
      await other.close({ graceMs: 0 });
    }
  });

  /** Runs `body` with the workspace's quota set, and removes the quota after, whatever happened. */
  async function withQuota(quota: Record<string, number>, body: () => Promise<void>): Promise<void> {
    const set = await server.api('/v1/workspaces/current/quota', { method: 'PATCH', body: { quota } });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    try {
      await body();
    } finally {
      await server.api('/v1/workspaces/current/quota', { method: 'PATCH', body: { quota: null } });
    }
  }

  async function workspaceOf(): Promise<string> {
    return (await server.api('/v1/me')).body.workspace.id as string;
  }
});
