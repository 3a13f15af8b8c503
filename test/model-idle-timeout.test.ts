import { tool, zodSchema } from 'ai';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { resolveModel } from '../src/agent/providers.ts';
import { ToolRegistry } from '../src/agent/tools.ts';
import { STORE_KINDS } from './support/databases.ts';
import { startOpenAICompatibleServer } from './support/openai-compatible-server.ts';
import { collectStream, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

const IDLE_MS = 400;
const TOOL_MS = 1_200;

/**
 * A model call that sends nothing for `OUTRUN_MODEL_IDLE_TIMEOUT_MS` is ended and its run fails (decision
 * 0025): against a real OpenAI-compatible server over HTTP that stops sending mid-answer while it keeps the
 * connection alive with SSE comments (which Node's fetch counts as traffic, so only Outrun's limit ends it).
 * A tool slower than the limit, and a model slower than it in total but never silent that long, are not cut.
 */
describe.each(STORE_KINDS)('a silent model call on %s', (kind) => {
  let server: TestServer;
  let stalling: Awaited<ReturnType<typeof startOpenAICompatibleServer>>;

  beforeAll(async () => {
    stalling = await startOpenAICompatibleServer({
      answer: 'Ducks paddle across the pond at dawn. ',
      reportsUsage: true,
      stallAfterWords: 2,
      keepAliveMs: 50,
    });
    // The scripted model's `echo`, taking longer than the model may stay silent.
    const slowEcho = tool({
      description: 'Returns its input, slowly.',
      inputSchema: zodSchema(z.record(z.string(), z.unknown())),
      execute: async (input) => {
        await sleep(TOOL_MS);
        return input;
      },
    });
    server = await startTestServer(kind, {
      config: { modelIdleTimeoutMs: IDLE_MS },
      tools: new ToolRegistry().register('echo', slowEcho),
      resolveModel: (modelId) =>
        resolveModel({ modelId, env: { OUTRUN_COMPATIBLE_BASE_URL: stalling.baseUrl } }),
    });
  });
  afterAll(async () => {
    await server?.close();
    await stalling?.close();
  });

  it('ends a call that stops sending mid-answer: the run fails model_error, the provider connection is closed', async () => {
    const chatId = await server.createChat();
    const startedAt = Date.now();
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: 'Tell me about ducks.' }, model: 'compatible:wedged' },
    });
    expect(started.status).toBe(201);
    const run = await server.waitForRun(started.body.run.id);
    const elapsedMs = Date.now() - startedAt;
    const message = 'The model sent nothing for 400 ms; the call was ended.';
    expect(run).toMatchObject({ status: 'failed', error: { code: 'model_error', message } });
    expect(elapsedMs).toBeGreaterThanOrEqual(IDLE_MS);
    expect(elapsedMs).toBeLessThan(IDLE_MS * 10);

    // What the model sent stays; the stream ends with one `error` chunk (not a stop's `abort`), then the ending.
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(streamedText(stream.events)).toBe('Ducks paddle ');
    const types = stream.events.map((event) => event.chunk.type);
    expect(types).not.toContain('abort');
    expect(types.filter((type) => type === 'error')).toHaveLength(1);
    expect(stream.events.slice(-2).map((event) => event.chunk)).toEqual([
      { type: 'error', errorText: message },
      expect.objectContaining({ type: 'data-run', data: expect.objectContaining({ status: 'failed' }) }),
    ]);
    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    expect(latest.body.message.status).toBe('error');
    // The call was really ended: the provider saw its connection closed.
    await expect.poll(() => stalling.stallsEnded(), { timeout: 5_000 }).toBeGreaterThanOrEqual(1);

    // The chat is free again: the next message runs.
    const next = await server.startRun(chatId, { tokens: 2 });
    expect((await server.waitForRun(next.id)).status).toBe('succeeded');
  });

  it('does not count a tool that runs longer than the limit', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 2, tokens: 2 });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'succeeded', stepCount: 2, error: null });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(streamedText(stream.events)).toBe(scriptedText(2, 2));
  });

  it('does not cut a model that is slower in total than the limit but never silent that long', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { tokens: 8, delayMs: IDLE_MS / 4, tool: false });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'succeeded', error: null });
  });

  it('cuts the scripted model too, when it pauses longer than the limit', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { tokens: 3, delayMs: IDLE_MS * 3, tool: false });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'failed', error: { code: 'model_error' } });
  });
});
