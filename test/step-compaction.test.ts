import { randomUUID } from 'node:crypto';
import type { LanguageModelV3CallOptions, LanguageModelV3Prompt } from '@ai-sdk/provider';
import { tool, wrapLanguageModel, zodSchema } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createScriptedModel } from '../src/agent/scripted-model.ts';
import { ToolRegistry } from '../src/agent/tools.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

const MAX_TOKENS = 2_000;
const PAGE = 'All about ducks. '.repeat(2_400); // 40,800 characters: about 10,200 tokens

/**
 * Invariant 15 within a run: a step's prompt holds what the run's earlier steps added (their tool outputs),
 * and is fitted into `context.maxTokens` before each call, not only the first. The scripted model is the
 * real one, wrapped to keep each prompt it was sent; the tool returns a page far over the budget.
 */
describe.each(STORE_KINDS)('a later step over the context budget on %s', (kind) => {
  let server: TestServer;
  const prompts: LanguageModelV3Prompt[] = [];
  /** The tools offered with each prompt, as the provider gets them. */
  const offered: LanguageModelV3CallOptions['tools'][] = [];
  let pagesRead = 0;

  beforeAll(async () => {
    const readPage = tool({
      description: 'Reads a web page.',
      inputSchema: zodSchema(z.record(z.string(), z.unknown())),
      execute: async () => {
        pagesRead++;
        return { page: PAGE };
      },
    });
    // A tool whose definition alone is about 500 tokens: sent with every call, as a real MCP server's long
    // descriptions and schemas are.
    const lookUp = tool({
      description: 'Looks a term up in the glossary of the project. '.repeat(40),
      inputSchema: zodSchema(z.object({ term: z.string() })),
      execute: async () => ({ found: false }),
    });
    server = await startTestServer(kind, {
      tools: new ToolRegistry().register('read_page', readPage).register('look_up', lookUp),
      resolveModel: () =>
        wrapLanguageModel({
          model: createScriptedModel(),
          middleware: {
            specificationVersion: 'v3',
            transformParams: async ({ params }) => {
              prompts.push(params.prompt);
              offered.push(params.tools);
              return params;
            },
          },
        }),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /**
   * Starts a run of `steps` steps, each but the last reading the page, for a new chat of an agent with the
   * given budget; the prompts recorded are this run's only. Returns the started run's id.
   */
  async function startReading(options: {
    steps: number;
    maxTokens: number;
    needsApproval?: boolean;
    instructions?: string;
    toolInput?: Record<string, string>;
    contextWindow?: number;
    /** Words of text each step streams. @default 2 */
    tokens?: number;
    /** Offers `look_up` too, a tool with a long definition. */
    withLookUp?: boolean;
  }): Promise<string> {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: `reader ${options.maxTokens}${options.needsApproval ? ', careful' : ''} ${randomUUID()}`,
        tools: [
          { name: 'read_page', needsApproval: options.needsApproval ?? false },
          ...(options.withLookUp ? [{ name: 'look_up' }] : []),
        ],
        context: { maxTokens: options.maxTokens },
        ...(options.instructions ? { instructions: options.instructions } : {}),
      },
    });
    expect(agent.status).toBe(201);
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    prompts.length = 0;
    offered.length = 0;
    const script = {
      script: {
        steps: options.steps,
        tokens: options.tokens ?? 2,
        tool: 'read_page',
        toolInput: options.toolInput,
        contextWindow: options.contextWindow,
      },
    };
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: JSON.stringify(script) } },
    });
    expect(started.status).toBe(201);
    return started.body.run.id as string;
  }

  /**
   * Waits for `runId` to fail for a prompt compaction could not fit, unsent: `model_error` with the message
   * that says so (against the budget, or half a prompt the provider refused), after `stepCount` steps, and one
   * `error` event in its stream.
   */
  async function expectNotSent(runId: string, expected: { stepCount: number; afterOverflow?: boolean }) {
    const run = await server.waitForRun(runId);
    expect(run).toMatchObject({
      status: 'failed',
      stepCount: expected.stepCount,
      error: { code: 'model_error' },
    });
    expect((run.error as { message: string }).message).toMatch(
      expected.afterOverflow
        ? /more than \d+, half of what the provider refused as too long.*not sent/
        : /more than the context budget of \d+ \(context\.maxTokens.*not sent/,
    );
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    expect(events.filter((event) => event.chunk.type === 'error')).toHaveLength(1);
    return run;
  }

  it("shortens the run's own tool outputs before each later step, reports it, and stores them whole", async () => {
    const runId = await startReading({ steps: 3, maxTokens: MAX_TOKENS });
    const run = await server.waitForRun(runId);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 3 });

    // Three calls; the second and third each carry the page's output (one, then two), shortened to fit.
    expect(prompts).toHaveLength(3);
    for (const prompt of prompts.slice(1)) {
      const size = JSON.stringify(prompt).length;
      expect(Math.ceil(size / 4)).toBeLessThanOrEqual(MAX_TOKENS);
      expect(JSON.stringify(prompt)).toContain('characters trimmed');
    }

    // Each compaction is an event, just before the step it fitted.
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    const types = events.map((event) => event.chunk.type);
    const compactions = events.filter((event) => event.chunk.type === 'data-compaction');
    expect(compactions).toHaveLength(2);
    for (const compaction of compactions) {
      expect(types[events.indexOf(compaction) + 1]).toBe('start-step');
      const data = compaction.chunk.data as { tokensBefore: number; tokensAfter: number; trigger: string };
      expect(data.trigger).toBe('threshold');
      expect(data.tokensBefore).toBeGreaterThan(MAX_TOKENS);
      expect(data.tokensAfter).toBeLessThanOrEqual(MAX_TOKENS);
    }

    // Stored messages are never changed: the run's message holds both outputs whole.
    const latest = await server.api(`/v1/chats/${run.chatId}/runs/latest`);
    const outputs = (latest.body.message.parts as { type: string; output?: { page: string } }[]).filter(
      (part) => part.type === 'tool-read_page',
    );
    expect(outputs.map((part) => part.output?.page.length)).toEqual([PAGE.length, PAGE.length]);
  });

  it('fits the prompt of an execution resumed after an approval, which the approved call’s output grew', async () => {
    const runId = await startReading({ steps: 2, maxTokens: MAX_TOKENS, needsApproval: true });
    const waiting = await server.waitForRun(runId, (run) => run.status === 'waiting');
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    const answered = await server.api(`/v1/runs/${waiting.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    expect(answered.status).toBe(200);
    const run = await server.waitForRun(waiting.id);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 2 });

    // The page was read after the approval, in the resumed execution, before its first call: fitted there.
    expect(prompts).toHaveLength(2);
    expect(Math.ceil(JSON.stringify(prompts[1]).length / 4)).toBeLessThanOrEqual(MAX_TOKENS);
    expect(JSON.stringify(prompts[1])).toContain('characters trimmed');
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    const compaction = events.findIndex((event) => event.chunk.type === 'data-compaction');
    expect(compaction).toBeGreaterThan(-1);
    expect(events[compaction + 1]!.chunk.type).toBe('start-step');
  });

  it("counts the agent's instructions, sent with every step, in the budget", async () => {
    // 5,950 characters: about 1,500 tokens of the 2,000, so the page, shortened, leaves no room for both.
    const instructions = 'Read carefully and answer briefly. '.repeat(170);
    const runId = await startReading({ steps: 2, maxTokens: MAX_TOKENS, instructions });
    const run = await server.waitForRun(runId);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 2 });
    expect(JSON.stringify(prompts[1])).toContain(instructions);
    expect(Math.ceil(JSON.stringify(prompts[1]).length / 4)).toBeLessThanOrEqual(MAX_TOKENS);
  });

  it("counts the tools' definitions, sent with every step, in the budget", async () => {
    // The page shortened (about 515 tokens) fits 1,000 by itself, not beside the tools' 530.
    const runId = await startReading({ steps: 2, maxTokens: 1_000, withLookUp: true });
    const run = await server.waitForRun(runId);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 2 });
    expect(offered[1]!.map((definition) => definition.name)).toEqual(['read_page', 'look_up']);
    const toolsLength = JSON.stringify(offered[1]).length;
    expect(toolsLength).toBeGreaterThan(2_000);
    expect(Math.ceil((JSON.stringify(prompts[1]).length + toolsLength) / 4)).toBeLessThanOrEqual(1_000);
    expect(JSON.stringify(prompts[1])).toContain('[tool output left out to fit the context budget]');
  });

  it('leaves out the outputs of its own tool calls when shortened ones are still over, and goes on', async () => {
    // A page shortened to its head and tail is about 500 tokens, over a 400 budget by itself; a step with
    // its output left out is about 90 tokens, so the fourth step's prompt holds three.
    const runId = await startReading({ steps: 4, maxTokens: 400 });
    const run = await server.waitForRun(runId);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 4 });
    expect(prompts).toHaveLength(4);
    for (const prompt of prompts) {
      expect(Math.ceil(JSON.stringify(prompt).length / 4)).toBeLessThanOrEqual(400);
    }
    // The calls stay, each with a notice for its output: the model still sees what it did.
    const last = JSON.stringify(prompts.at(-1));
    expect(last.match(/\[tool output left out to fit the context budget\]/g)).toHaveLength(3);
    for (const step of [1, 2, 3]) expect(last).toContain(`"step":${step}`);
  });

  it("fails the run, sending nothing over the budget, when the run's own calls are over it", async () => {
    // Each tool input is 2,400 characters (about 600 tokens): by the third step the calls alone are over 2,000.
    const runId = await startReading({
      steps: 4,
      maxTokens: MAX_TOKENS,
      toolInput: { text: 'w'.repeat(2_400) },
    });
    await expectNotSent(runId, { stepCount: 2 });
    // Two steps were sent, the third never was, and no prompt was over the budget.
    expect(prompts).toHaveLength(2);
    for (const prompt of prompts) {
      expect(Math.ceil(JSON.stringify(prompt).length / 4)).toBeLessThanOrEqual(MAX_TOKENS);
    }
  });

  it('fails the run with its own message when a later step the provider refused cannot be fitted to half', async () => {
    // The provider's window (600, counting the prompt's text) is under the budget (2,000): the second step,
    // with the first's 300 words, is refused; half of its prompt cannot hold the message, those words and the
    // model's own 1,000-character call, even with the page left out.
    const runId = await startReading({
      steps: 3,
      maxTokens: MAX_TOKENS,
      tokens: 300,
      toolInput: { text: 'w'.repeat(1_000) },
      contextWindow: 600,
    });
    await expectNotSent(runId, { stepCount: 1, afterOverflow: true });
    // The refused prompt was sent once; no retry was, since none could fit.
    expect(prompts).toHaveLength(2);
  });

  it('does not send a refused first prompt again when half of it cannot hold the instructions', async () => {
    // 1,200 characters of instructions; the provider's window (200) refuses the first prompt, and half of it
    // (about 170) is under the instructions alone.
    const runId = await startReading({
      steps: 1,
      maxTokens: MAX_TOKENS,
      instructions: 'Be brief. '.repeat(120),
      contextWindow: 200,
    });
    await expectNotSent(runId, { stepCount: 0, afterOverflow: true });
    expect(prompts).toHaveLength(1);
  });

  it('runs an approved call once when the provider refuses the resumed execution’s first prompt as too long', async () => {
    // The provider's window (500, counting the prompt's text) holds the message but not the first step's 300
    // words: the step after the approval is refused, and retried from the prompt that holds the page.
    const runId = await startReading({
      steps: 2,
      maxTokens: 100_000,
      needsApproval: true,
      tokens: 300,
      contextWindow: 500,
    });
    const waiting = await server.waitForRun(runId, (run) => run.status === 'waiting');
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    pagesRead = 0;
    const answered = await server.api(`/v1/runs/${runId}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    expect(answered.status).toBe(200);
    const run = await server.waitForRun(runId);
    // The retry was refused too (the words are the run's own), but the page was read once.
    expect(run).toMatchObject({ status: 'failed', error: { code: 'model_error' } });
    expect(pagesRead).toBe(1);
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    expect(events.filter((event) => event.chunk.type === 'tool-output-available')).toHaveLength(1);
    // The retry's prompt was compacted to half of what was refused: the page shortened.
    expect(prompts.length).toBeGreaterThanOrEqual(3);
    expect(JSON.stringify(prompts.at(-1))).toContain('characters trimmed');
  });

  it('leaves a later step that fits as it is, with no compaction', async () => {
    const runId = await startReading({ steps: 2, maxTokens: 100_000 });
    const run = await server.waitForRun(runId);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 2 });
    expect(JSON.stringify(prompts[1])).toContain(PAGE);
    const events = (await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).events;
    expect(events.some((event) => event.chunk.type === 'data-compaction')).toBe(false);
  });
});
