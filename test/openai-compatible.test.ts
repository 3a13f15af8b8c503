import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveModel } from '../src/agent/providers.ts';
import { STORE_KINDS } from './support/databases.ts';
import { startOpenAICompatibleServer } from './support/openai-compatible-server.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

const ANSWER = 'Ducks paddle across the pond at dawn. ';
const WORDS = ANSWER.split(/(?<= )/).length;

/**
 * Runs on a `compatible:` model served by a real local OpenAI-compatible server over HTTP: the provider path
 * a self-hosted model (Ollama, vLLM) takes, with and without the server reporting token usage.
 */
describe.each(STORE_KINDS)('an OpenAI-compatible model on %s', (kind) => {
  let server: TestServer;
  let workspaceId: string;
  let reporting: Awaited<ReturnType<typeof startOpenAICompatibleServer>>;
  let silent: Awaited<ReturnType<typeof startOpenAICompatibleServer>>;

  beforeAll(async () => {
    reporting = await startOpenAICompatibleServer({
      answer: ANSWER,
      reportsUsage: true,
      usage: { promptTokens: 11, completionTokens: 7 },
    });
    silent = await startOpenAICompatibleServer({ answer: ANSWER, reportsUsage: false });
    server = await startTestServer(kind, {
      // `compatible:reporting` is served by the server that reports usage, `compatible:silent` by the other.
      resolveModel: (modelId) =>
        resolveModel({
          modelId,
          env: {
            OUTRUN_COMPATIBLE_BASE_URL: modelId === 'compatible:silent' ? silent.baseUrl : reporting.baseUrl,
          },
        }),
    });
    workspaceId = (await server.api('/v1/me')).body.workspace.id;
  });
  afterAll(async () => {
    await server?.close();
    await reporting?.close();
    await silent?.close();
  });

  async function runOn(model: string) {
    const chatId = await server.createChat();
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: 'Tell me about ducks.' }, model },
    });
    expect(started.status).toBe(201);
    const run = await server.waitForRun(started.body.run.id);
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 1 });
    const messages = await server.api(`/v1/chats/${chatId}/messages`);
    const text = messages.body.items
      .at(-1)
      .parts.filter((part: { type: string }) => part.type === 'text')
      .map((part: { text: string }) => part.text)
      .join('');
    const steps = await server.api(`/v1/runs/${run.id}/steps`);
    return { run, text, steps: steps.body.items };
  }

  it('streams the answer, asks for token usage and records what the server reports', async () => {
    const before = reporting.requests.length;
    const { run, text, steps } = await runOn('compatible:reporting');
    expect(text).toBe(ANSWER);
    expect(reporting.requests.slice(before)).toEqual([
      expect.objectContaining({ model: 'reporting', stream: true, stream_options: { include_usage: true } }),
    ]);
    expect(run.usage).toMatchObject({ inputTokens: 11, outputTokens: 7 });
    expect(steps).toHaveLength(1);
    expect(steps[0].usage).toMatchObject({ inputTokens: 11, outputTokens: 7 });
  });

  it('counts a step whose server reports no usage by its estimate: in the step, the run and the day', async () => {
    const dayBefore = await server.outrun.quotas.usage(workspaceId);
    const { run, text, steps } = await runOn('compatible:silent');
    expect(text).toBe(ANSWER);
    // One token per streamed delta, and the prompt's characters / 4.
    expect(run.usage!.outputTokens).toBe(WORDS);
    expect(run.usage!.inputTokens).toBeGreaterThan(0);
    expect(steps).toHaveLength(1);
    expect(steps[0].usage).toMatchObject({
      inputTokens: run.usage!.inputTokens,
      outputTokens: run.usage!.outputTokens,
    });
    // The workspace's daily usage (what `tokensPerDay` is held to) counts them too.
    const dayAfter = await server.outrun.quotas.usage(workspaceId);
    expect(dayAfter.tokens - dayBefore.tokens).toBe(run.usage!.inputTokens! + run.usage!.outputTokens!);
  });
});
