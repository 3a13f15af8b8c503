import { stepCountIs, streamText } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedModel } from '../src/agent/scripted-model.ts';
import { buildToolSet } from '../src/agents/agent-service.ts';
import { STORE_KINDS } from './support/databases.ts';
import { startTestMcpServer, unusedLocalUrl, type TestMcpServer } from './support/mcp-server.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

const echoScript = JSON.stringify({ script: { echoInput: true } });

describe.each(STORE_KINDS)('agents on %s', (kind) => {
  let server: TestServer;
  let mcpServer: TestMcpServer;
  let memberKey: string;
  let outsiderKey: string;

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { allowPrivateUrls: true } });
    mcpServer = await startTestMcpServer();
    memberKey = await server.createUser('member@example.com');
    const workspace = await server.api('/v1/admin/workspaces', { method: 'POST', body: { name: 'Other' } });
    const outsider = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: 'other-admin@example.com', role: 'admin' },
    });
    outsiderKey = outsider.body.apiKey;
  });
  afterAll(async () => {
    await server?.close();
    await mcpServer?.close();
  });

  const countAgents = async () =>
    Number(
      (
        await server.outrun.db
          .selectFrom('agents')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  it('creates, reads, lists, updates and archives an agent', async () => {
    const created = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'Helper',
        instructions: 'Be brief.',
        model: 'scripted',
        modelOptions: { temperature: 0.2, topP: 0.9, maxOutputTokens: 500 },
        tools: [{ name: 'calculator', needsApproval: true }, { name: 'echo' }],
        budget: { maxSteps: 5, onExceeded: 'abort' },
        multitask: 'enqueue',
        context: { keepLastTurns: 4 },
        autostart: { text: 'Hello' },
        continuation: { maxRuns: 2 },
      },
    });
    expect(created.status).toBe(201);
    expect(created.body.warnings).toEqual([]);
    const agent = created.body.agent;
    expect(agent).toMatchObject({
      name: 'Helper',
      instructions: 'Be brief.',
      model: 'scripted',
      modelOptions: { temperature: 0.2, topP: 0.9, maxOutputTokens: 500 },
      tools: [{ name: 'calculator', needsApproval: true }, { name: 'echo' }],
      mcpServers: [],
      budget: { maxSteps: 5, onExceeded: 'abort' },
      multitask: 'enqueue',
      context: { keepLastTurns: 4 },
      autostart: { text: 'Hello' },
      continuation: { maxRuns: 2 },
    });
    expect(agent.id).toMatch(/^agt_/);

    expect((await server.api(`/v1/agents/${agent.id}`)).body.agent).toEqual(agent);
    // Members of the workspace read agents too.
    expect((await server.api(`/v1/agents/${agent.id}`, { key: memberKey })).status).toBe(200);
    const list = await server.api('/v1/agents', { key: memberKey });
    expect(list.body.items.map((item: { id: string }) => item.id)).toContain(agent.id);

    const updated = await server.api(`/v1/agents/${agent.id}`, {
      method: 'PATCH',
      body: { instructions: null, tools: [{ name: 'echo' }] },
    });
    expect(updated.status).toBe(200);
    expect(updated.body.agent).toMatchObject({
      name: 'Helper',
      instructions: null,
      tools: [{ name: 'echo' }],
    });

    expect((await server.api(`/v1/agents/${agent.id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await server.api(`/v1/agents/${agent.id}`)).status).toBe(404);
    const after = await server.api('/v1/agents');
    expect(after.body.items.map((item: { id: string }) => item.id)).not.toContain(agent.id);
  });

  it.each([
    [{ name: 'x', tools: [{ name: 'rm_rf' }] }, 'tools.0.name', 'invalid_request'],
    [{ name: 'x', tools: [{ name: 'mcp:nowhere/add' }] }, 'tools.0.name', 'invalid_request'],
    [{ name: 'x', tools: [{ name: 'echo' }, { name: 'echo' }] }, 'tools.1.name', 'invalid_request'],
    [{ name: 'x', model: 'gpt-5' }, 'model', 'model_unavailable'],
    [{ name: 'x', model: 'openai:gpt-4.1' }, 'model', 'model_unavailable'],
    [{ name: 'x', modelOptions: { temperature: 3 } }, 'modelOptions.temperature', 'invalid_request'],
    [{ name: 'x', modelOptions: { topP: 1.5 } }, 'modelOptions.topP', 'invalid_request'],
    [{ name: 'x', modelOptions: { maxOutputTokens: 0 } }, 'modelOptions.maxOutputTokens', 'invalid_request'],
    [{ name: 'x', budget: { maxSteps: 1.5 } }, 'budget.maxSteps', 'invalid_request'],
    [{ name: 'x', multitask: 'sometimes' }, 'multitask', 'invalid_request'],
    [{ name: 'x', system: 'hi' }, 'system', 'invalid_request'],
    [{ name: 'x', modelOptions: { temprature: 1 } }, 'temprature', 'invalid_request'],
    [{ name: '' }, 'name', 'invalid_request'],
    [
      { name: 'x', mcpServers: [{ name: 'a', url: 'ftp://example.com/' }] },
      'mcpServers.0.url',
      'invalid_request',
    ],
    [
      { name: 'x', mcpServers: [{ name: 'a', url: 'https://user:secret@example.com/mcp' }] },
      'mcpServers.0.url',
      'invalid_request',
    ],
    [
      { name: 'x', mcpServers: [{ name: 'bad name', url: 'https://example.com/' }] },
      'mcpServers.0.name',
      'invalid_request',
    ],
  ])('rejects %j with a 400 naming %s and writes nothing', async (body, field, code) => {
    const before = await countAgents();
    const response = await server.api('/v1/agents', { method: 'POST', body });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe(code);
    expect(response.body.error.message).toContain(field);
    expect(await countAgents()).toBe(before);
  });

  it('rejects a bad update naming the field and leaves the agent as it was', async () => {
    const created = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'Stable', tools: [{ name: 'echo' }] },
    });
    const id = created.body.agent.id;
    const response = await server.api(`/v1/agents/${id}`, {
      method: 'PATCH',
      body: { name: 'Changed', tools: [{ name: 'no_such_tool' }] },
    });
    expect(response.status).toBe(400);
    expect(response.body.error.message).toContain('tools.0.name');
    expect((await server.api(`/v1/agents/${id}`)).body.agent).toEqual(created.body.agent);
  });

  it('answers 404 for another workspace’s agent and 403 for a member’s write, changing nothing', async () => {
    const created = await server.api('/v1/agents', { method: 'POST', body: { name: 'Ours' } });
    const id = created.body.agent.id;
    for (const [method, body] of [
      ['GET', undefined],
      ['PATCH', { name: 'theirs' }],
      ['DELETE', undefined],
    ] as const) {
      const response = await server.api(`/v1/agents/${id}`, { method, body, key: outsiderKey });
      expect(response.status, method).toBe(404);
      expect(response.body.error.code).toBe('agent_not_found');
    }
    const theirs = await server.api('/v1/agents', { key: outsiderKey });
    expect(theirs.body.items.map((item: { id: string }) => item.id)).not.toContain(id);

    const before = await countAgents();
    const create = await server.api('/v1/agents', { method: 'POST', body: { name: 'Mine' }, key: memberKey });
    expect(create.status).toBe(403);
    expect(create.body.error.code).toBe('forbidden');
    for (const [method, body] of [
      ['PATCH', { name: 'renamed' }],
      ['DELETE', undefined],
    ] as const) {
      expect((await server.api(`/v1/agents/${id}`, { method, body, key: memberKey })).status).toBe(403);
    }
    expect(await countAgents()).toBe(before);
    expect((await server.api(`/v1/agents/${id}`)).body.agent).toEqual(created.body.agent);
  });

  it('answers 400 invalid_id for a malformed agent id', async () => {
    const response = await server.api('/v1/agents/nope');
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_id');
  });

  it('creates a chat with an agent; another workspace’s or an archived agent is 404 agent_not_found', async () => {
    const agent = (await server.api('/v1/agents', { method: 'POST', body: { name: 'Chatty' } })).body.agent;
    const chat = await server.api('/v1/chats', {
      method: 'POST',
      body: { title: 'with agent', agentId: agent.id },
    });
    expect(chat.status).toBe(201);
    expect(chat.body.chat).toMatchObject({ title: 'with agent', agentId: agent.id });
    expect((await server.api(`/v1/chats/${chat.body.chat.id}`)).body.chat.agentId).toBe(agent.id);
    expect((await server.api('/v1/chats', { method: 'POST', body: {} })).body.chat.agentId).toBeNull();

    const chatsBefore = Number(
      (
        await server.outrun.db
          .selectFrom('chats')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
    const foreign = await server.api('/v1/chats', {
      method: 'POST',
      body: { agentId: agent.id },
      key: outsiderKey,
    });
    expect(foreign.status).toBe(404);
    expect(foreign.body.error.code).toBe('agent_not_found');
    await server.api(`/v1/agents/${agent.id}`, { method: 'DELETE' });
    const archived = await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.id } });
    expect(archived.status).toBe(404);
    const malformed = await server.api('/v1/chats', { method: 'POST', body: { agentId: 'x' } });
    expect(malformed.status).toBe(400);
    const unknownField = await server.api('/v1/chats', { method: 'POST', body: { agent: agent.id } });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.error.message).toContain('agent');
    const chatsAfter = Number(
      (
        await server.outrun.db
          .selectFrom('chats')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
    expect(chatsAfter).toBe(chatsBefore);
  });

  it('passes an agent’s instructions, tools and options to the model', async () => {
    const created = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'Echoer',
        instructions: 'You are a careful assistant.',
        modelOptions: { temperature: 0.5 },
        tools: [{ name: 'calculator', needsApproval: true }, { name: 'mcp:math/add' }],
        mcpServers: [{ name: 'math', url: mcpServer.url }],
      },
    });
    expect(created.status).toBe(201);
    expect(created.body.warnings).toEqual([]);
    const me = await server.api('/v1/me');
    const config = await server.outrun.agents.runConfig({
      workspaceId: me.body.workspace.id,
      agentId: created.body.agent.id,
      overrides: { modelOptions: { topP: 0.5 } },
    });
    expect(config).toMatchObject({
      agentId: created.body.agent.id,
      instructions: 'You are a careful assistant.',
      model: 'scripted',
      modelOptions: { temperature: 0.5, topP: 0.5 },
      tools: [
        { name: 'calculator', needsApproval: true },
        { name: 'mcp:math/add', needsApproval: false },
      ],
    });
    expect(JSON.parse(JSON.stringify(config))).toEqual(config);

    const tools = await buildToolSet({ config, registry: server.outrun.tools, mcp: server.outrun.mcp });
    const result = streamText({
      model: server.outrun.resolveModel(config.model),
      system: config.instructions ?? undefined,
      tools,
      ...config.modelOptions,
      stopWhen: stepCountIs(3),
      prompt: echoScript,
    });
    const echoed = JSON.parse(await result.text);
    expect(echoed).toMatchObject({
      system: 'You are a careful assistant.',
      messages: 1,
      tools: ['calculator', 'mcp_math_add'],
      approvals: [],
    });
  });

  it('runs a chat without an agent as the workspace default agent: default model, built-in tools', async () => {
    const me = await server.api('/v1/me');
    const config = await server.outrun.agents.runConfig({ workspaceId: me.body.workspace.id, agentId: null });
    expect(config).toMatchObject({
      agentId: null,
      instructions: null,
      model: server.outrun.config.defaultModel,
      tools: server.outrun.tools.defaultNames().map((name) => ({ name, needsApproval: false })),
      mcpServers: [],
      multitask: 'reject',
    });
    const result = streamText({
      model: createScriptedModel(),
      tools: await buildToolSet({ config, registry: server.outrun.tools, mcp: server.outrun.mcp }),
      prompt: echoScript,
    });
    expect(JSON.parse(await result.text)).toMatchObject({
      system: null,
      tools: server.outrun.tools.defaultNames(),
    });
  });

  it('asks approval for an MCP tool under its mcp: name, then calls the server once approved', async () => {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'MCP, carefully',
        tools: [{ name: 'mcp:math/step', needsApproval: true }],
        mcpServers: [{ name: 'math', url: mcpServer.url }],
      },
    });
    expect(agent.status, JSON.stringify(agent.body)).toBe(201);
    const chat = await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
    const started = await server.api(`/v1/chats/${chat.body.chat.id}/runs`, {
      method: 'POST',
      body: { input: { text: JSON.stringify({ script: { steps: 2, tokens: 2, tool: 'mcp_math_step' } }) } },
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const runId = started.body.run.id as string;
    const waiting = await server.waitForRun(runId, (run) => run.status === 'waiting');
    expect(waiting.waiting).toMatchObject({
      reason: 'approval',
      approvals: [{ toolName: 'mcp_math_step', title: 'mcp:math/step', input: { step: 1 } }],
    });
    const { approvalId } = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!;
    const answered = await server.api(`/v1/runs/${runId}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    expect(answered.status).toBe(200);
    expect((await server.waitForRun(runId)).status).toBe('succeeded');
    const messages = await server.api(`/v1/chats/${chat.body.chat.id}/messages`);
    const answer = messages.body.items.at(-1);
    expect(JSON.stringify(answer.parts)).toContain('called at step 1');
  });

  it('warns, without failing, when an MCP server does not answer at creation', async () => {
    const response = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'Hopeful',
        tools: [{ name: 'mcp:later/add' }],
        mcpServers: [{ name: 'later', url: await unusedLocalUrl() }],
      },
    });
    expect(response.status).toBe(201);
    expect(response.body.warnings).toHaveLength(1);
    expect(response.body.warnings[0]).toMatch(/^MCP server "later" is unreachable: /);
  });

  it('redacts MCP header values and keeps them when a redacted value is sent back', async () => {
    const created = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'Keyed',
        tools: [{ name: 'mcp:math/add' }],
        mcpServers: [{ name: 'math', url: mcpServer.url, headers: { authorization: 'Bearer s3cret' } }],
      },
    });
    expect(created.status).toBe(201);
    expect(JSON.stringify(created.body)).not.toContain('s3cret');
    const shown = created.body.agent.mcpServers;
    expect(shown[0].headers.authorization).toBe('[redacted]');
    const patched = await server.api(`/v1/agents/${created.body.agent.id}`, {
      method: 'PATCH',
      body: { mcpServers: shown },
    });
    expect(patched.status).toBe(200);
    const row = await server.outrun.db
      .selectFrom('agents')
      .select('mcp_servers')
      .where('id', '=', created.body.agent.id)
      .executeTakeFirstOrThrow();
    expect(row.mcp_servers[0]!.headers).toEqual({ authorization: 'Bearer s3cret' });

    // Moved to another origin, the redacted value is refused: the secret is never sent where it was not given.
    const moved = new URL(mcpServer.url);
    moved.port = String(Number(moved.port) + 1);
    const leaked = await server.api(`/v1/agents/${created.body.agent.id}`, {
      method: 'PATCH',
      body: { mcpServers: [{ ...shown[0], url: moved.toString() }] },
    });
    expect(leaked.status).toBe(400);
    expect(leaked.body.error.message).toContain('mcpServers.0.headers.authorization');
    const after = await server.outrun.db
      .selectFrom('agents')
      .select('mcp_servers')
      .where('id', '=', created.body.agent.id)
      .executeTakeFirstOrThrow();
    expect(after.mcp_servers[0]!.url).toBe(mcpServer.url);
  });

  it('refuses a private MCP server URL when private URLs are not allowed', async () => {
    const strict = await startTestServer(kind);
    try {
      const response = await strict.api('/v1/agents', {
        method: 'POST',
        body: { name: 'Sneaky', mcpServers: [{ name: 'meta', url: 'http://169.254.169.254/latest' }] },
        key: ADMIN_KEY,
      });
      expect(response.status).toBe(400);
      expect(response.body.error.message).toContain('mcpServers.0.url');
      expect(response.body.error.message).toContain('OUTRUN_ALLOW_PRIVATE_URLS');
    } finally {
      await strict.close();
    }
  });
});
