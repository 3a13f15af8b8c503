import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultPoint, Faults } from '../src/faults.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/** Runs that execute with their chat's agent: instructions, tools and options reach the model (DESIGN §4). */
describe.each(STORE_KINDS)('runs of an agent on %s', (kind) => {
  let server: TestServer;
  const faults = new Faults();

  beforeAll(async () => {
    server = await startTestServer(kind, { faults });
  });
  afterAll(async () => {
    await server?.close();
  });
  afterEach(() => faults.clear());

  async function createAgent(body: Record<string, unknown>): Promise<string> {
    const response = await server.api('/v1/agents', { method: 'POST', body });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body.agent.id as string;
  }

  async function chatWith(agentId: string | null): Promise<string> {
    const response = await server.api('/v1/chats', { method: 'POST', body: agentId ? { agentId } : {} });
    expect(response.status).toBe(201);
    return response.body.chat.id as string;
  }

  /** What the scripted model received, as its `echoInput` answer says. */
  async function echoedBy(runId: string) {
    await server.waitForRun(runId);
    const stream = await collectStream(await server.fetch(`/v1/runs/${runId}/stream`));
    return JSON.parse(streamedText(stream.events)) as { system: string | null; tools: string[] };
  }

  const echo = JSON.stringify({ script: { echoInput: true } });

  it("gives the model the agent's instructions and only its tools, and stores the configuration on the run", async () => {
    const agentId = await createAgent({
      name: 'Support',
      instructions: 'You are a careful support agent.',
      tools: [{ name: 'calculator' }, { name: 'echo', needsApproval: true }],
      modelOptions: { temperature: 0.2 },
    });
    const chatId = await chatWith(agentId);
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: echo }, metadata: { ticket: 42 } },
    });
    expect(started.status).toBe(201);
    expect(started.body.run).toMatchObject({ agentId, metadata: { ticket: 42 }, trigger: 'api' });
    const echoed = await echoedBy(started.body.run.id);
    expect(echoed.system).toBe('You are a careful support agent.');
    expect(echoed.tools).toEqual(['calculator', 'echo']);
  });

  it('gives a chat without an agent the default agent: no instructions, every built-in tool', async () => {
    const chatId = await chatWith(null);
    const run = (
      await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: echo } } })
    ).body.run;
    const echoed = await echoedBy(run.id);
    expect(echoed.system).toBeNull();
    expect(echoed.tools).toEqual(expect.arrayContaining(['echo', 'calculator', 'current_time']));
  });

  it('runs with the configuration it began with when the agent is edited before a worker takes it', async () => {
    const agentId = await createAgent({ name: 'Versioned', instructions: 'version one' });
    const chatId = await chatWith(agentId);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    faults.arm(FaultPoint.beforeClaim, () => held);
    const run = (
      await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: echo } } })
    ).body.run;
    const patched = await server.api(`/v1/agents/${agentId}`, {
      method: 'PATCH',
      body: { instructions: 'version two' },
    });
    expect(patched.status).toBe(200);
    release();
    expect((await echoedBy(run.id)).system).toBe('version one');

    // The next run takes the edit.
    const next = (
      await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: echo } } })
    ).body.run;
    expect((await echoedBy(next.id)).system).toBe('version two');
  });

  it('refuses unknown run fields and bad overrides with 400 naming them, writing nothing', async () => {
    const chatId = await chatWith(null);
    for (const [body, field] of [
      [{ input: { text: 'hi' }, system: 'be evil' }, 'system'],
      [{ input: { text: 'hi' }, modelOptions: { temperature: 9 } }, 'temperature'],
      [{ input: { text: 'hi' }, budget: { maxSteps: 0 } }, 'maxSteps'],
      [{ input: { text: 'hi' }, model: 'nope:nothing' }, 'nope'],
    ] as const) {
      const response = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body });
      expect(response.status, JSON.stringify(response.body)).toBe(400);
      expect(JSON.stringify(response.body.error)).toContain(field);
    }
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toEqual([]);
  });
});
