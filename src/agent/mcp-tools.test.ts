import { stepCountIs, streamText, type UIMessageChunk } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestMcpServer, unusedLocalUrl, type TestMcpServer } from '../../test/support/mcp-server.ts';
import { pollUntil } from '../../test/support/wait.ts';
import { McpClientPool, modelToolName, parseMcpToolName } from './mcp-tools.ts';
import { createScriptedModel } from './scripted-model.ts';
import { buildToolSet } from './tool-set.ts';
import { createDefaultToolRegistry } from './tools.ts';

async function run(options: { tools: Awaited<ReturnType<typeof buildToolSet>>; text: string }) {
  const result = streamText({
    model: createScriptedModel(),
    tools: options.tools,
    stopWhen: stepCountIs(5),
    prompt: options.text,
    onError: () => {},
  });
  const chunks: UIMessageChunk[] = [];
  // Tool errors reach the stream with their message, as the run executor's onError passes them.
  const stream = result.toUIMessageStream({
    onError: (error) => (error instanceof Error ? error.message : String(error)),
  });
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const script = (value: Record<string, unknown>) => JSON.stringify({ script: value });

describe('modelToolName', () => {
  it('keeps registry names and maps mcp:<server>/<tool> to a provider-valid name', () => {
    expect(modelToolName('calculator')).toBe('calculator');
    expect(modelToolName('mcp:srv/add')).toBe('mcp_srv_add');
    expect(parseMcpToolName('mcp:srv/add')).toEqual({ server: 'srv', tool: 'add' });
    expect(parseMcpToolName('calculator')).toBeNull();
    const odd = modelToolName('mcp:srv/some.tool name');
    expect(odd).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(odd).not.toBe(modelToolName('mcp:srv/some_tool_name'));
    expect(modelToolName(`mcp:srv/${'x'.repeat(100)}`)).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
  });
});

describe('MCP tools', () => {
  let mcpServer: TestMcpServer;
  let pool: McpClientPool;

  beforeAll(async () => {
    mcpServer = await startTestMcpServer();
    pool = new McpClientPool({ allowPrivateUrls: true, connectTimeoutMs: 5_000 });
  });
  afterAll(async () => {
    await pool?.close();
    await mcpServer?.close();
  });

  it('calls an MCP tool and streams its result, under the mapped name with the mcp: name as title', async () => {
    const tools = await buildToolSet({
      config: {
        tools: [{ name: 'mcp:math/add', needsApproval: false }],
        mcpServers: [{ name: 'math', url: mcpServer.url, headers: { 'x-api-key': 'secret-1' } }],
      },
      registry: createDefaultToolRegistry(),
      mcp: pool,
    });
    expect(Object.keys(tools)).toEqual(['mcp_math_add']);
    const chunks = await run({
      tools,
      text: script({ steps: 2, tokens: 1, tool: 'mcp_math_add', toolInput: { a: 2, b: 3 } }),
    });
    const call = chunks.find((chunk) => chunk.type === 'tool-input-available');
    expect(call).toMatchObject({
      toolName: 'mcp_math_add',
      input: { a: 2, b: 3 },
      title: 'mcp:math/add',
      dynamic: true,
    });
    const output = chunks.find((chunk) => chunk.type === 'tool-output-available');
    expect(output).toMatchObject({ output: { content: [{ type: 'text', text: '5' }] } });
    expect(chunks.at(-1)).toMatchObject({ type: 'finish' });
    expect(mcpServer.requests.some((headers) => headers['x-api-key'] === 'secret-1')).toBe(true);
  });

  it('reuses one client per server URL and headers', async () => {
    const server = { name: 'math', url: mcpServer.url, headers: { 'x-api-key': 'secret-1' } };
    const before = pool.size;
    await pool.tools(server);
    await pool.tools({ ...server });
    expect(pool.size).toBe(before === 0 ? 1 : before);
    await pool.tools({ ...server, headers: { 'x-api-key': 'secret-2' } });
    expect(pool.size).toBe((before === 0 ? 1 : before) + 1);
  });

  it('puts needsApproval on the AI SDK tool definition of marked tools, MCP and built-in alike', async () => {
    const tools = await buildToolSet({
      config: {
        tools: [
          { name: 'mcp:math/add', needsApproval: true },
          { name: 'calculator', needsApproval: true },
          { name: 'echo', needsApproval: false },
        ],
        mcpServers: [{ name: 'math', url: mcpServer.url }],
      },
      registry: createDefaultToolRegistry(),
      mcp: pool,
    });
    expect(Object.keys(tools)).toEqual(['mcp_math_add', 'calculator', 'echo']);
    expect(tools.mcp_math_add!.needsApproval).toBe(true);
    expect(tools.calculator!.needsApproval).toBe(true);
    expect(tools.echo!.needsApproval).toBe(false);
    const chunks = await run({
      tools,
      text: script({ steps: 2, tokens: 1, tool: 'mcp_math_add', toolInput: { a: 1, b: 1 } }),
    });
    expect(chunks.find((chunk) => chunk.type === 'tool-approval-request')).toMatchObject({
      type: 'tool-approval-request',
    });
    expect(chunks.some((chunk) => chunk.type === 'tool-output-available')).toBe(false);
  });

  it('turns a server that is down into a clear tool error, and the process goes on', async () => {
    const downUrl = await unusedLocalUrl();
    const tools = await buildToolSet({
      config: {
        tools: [{ name: 'mcp:gone/add', needsApproval: false }],
        mcpServers: [{ name: 'gone', url: downUrl }],
      },
      registry: createDefaultToolRegistry(),
      mcp: pool,
    });
    expect(Object.keys(tools)).toEqual(['mcp_gone_add']);
    const chunks = await run({
      tools,
      text: script({ steps: 2, tokens: 1, tool: 'mcp_gone_add', toolInput: { a: 1, b: 2 } }),
    });
    const call = chunks.find((chunk) => chunk.type === 'tool-input-available');
    // The same kind of call as when the server answers: a `dynamic-tool` part in the message.
    expect(call).toMatchObject({ toolName: 'mcp_gone_add', title: 'mcp:gone/add', dynamic: true });
    const error = chunks.find((chunk) => chunk.type === 'tool-output-error');
    expect(error).toMatchObject({ toolCallId: call?.type === 'tool-input-available' ? call.toolCallId : '' });
    expect(error?.type === 'tool-output-error' && error.errorText).toMatch(
      /^MCP server "gone" is unreachable: /,
    );
    // The step records the error and the model goes on to its last step.
    expect(chunks.at(-1)).toMatchObject({ type: 'finish' });
  });

  it('fails a call as unreachable when the server goes down after connecting, and drops the client', async () => {
    const flaky = await startTestMcpServer();
    const local = new McpClientPool({ allowPrivateUrls: true, connectTimeoutMs: 5_000 });
    try {
      const server = { name: 'flaky', url: flaky.url };
      const tools = await local.tools(server);
      await flaky.close();
      const add = tools.add!;
      await expect(add.execute!({ a: 1, b: 2 }, { toolCallId: 'call-1', messages: [] })).rejects.toThrow(
        /^MCP server "flaky" is unreachable: /,
      );
      await expect(local.tools(server)).rejects.toThrow(/^MCP server "flaky" is unreachable: /);
      expect(local.size).toBe(0);
    } finally {
      await local.close();
    }
  });

  it('connects again for a call after a failed one, once the server is back', async () => {
    let flaky = await startTestMcpServer();
    const port = Number(new URL(flaky.url).port);
    const local = new McpClientPool({ allowPrivateUrls: true, connectTimeoutMs: 5_000 });
    try {
      const tools = await local.tools({ name: 'flaky', url: flaky.url });
      await flaky.close();
      const add = tools.add!;
      await expect(add.execute!({ a: 1, b: 2 }, { toolCallId: 'call-1', messages: [] })).rejects.toThrow(
        /^MCP server "flaky" is unreachable: /,
      );
      flaky = await startTestMcpServer({ port });
      // The same run's tool: its client was dropped with the failure, and a new one answers.
      expect(await add.execute!({ a: 2, b: 2 }, { toolCallId: 'call-2', messages: [] })).toMatchObject({
        content: [{ type: 'text', text: '4' }],
      });
      expect(flaky.methods).toContain('initialize');
    } finally {
      await local.close();
      await flaky.close();
    }
  });

  it('fails a call at once when the server drops its connection mid-call, not after the call timeout', async () => {
    const dying = await startTestMcpServer();
    const local = new McpClientPool({ allowPrivateUrls: true, callTimeoutMs: 10_000 });
    try {
      const tools = await local.tools({ name: 'dying', url: dying.url });
      const started = Date.now();
      const call = tools.wait!.execute!({ ms: 5_000 }, { toolCallId: 'call-1', messages: [] });
      const failed = expect(call).rejects.toThrow(/^MCP server "dying" is unreachable: /);
      setTimeout(() => void dying.close(), 300);
      await failed;
      await expect(call).rejects.not.toThrow(/had no answer within/);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(local.size).toBe(0);
    } finally {
      await local.close();
      await dying.close();
    }
  });

  it('fails a call the server does not answer in time as a tool error, and keeps the client', async () => {
    const impatient = new McpClientPool({ allowPrivateUrls: true, callTimeoutMs: 300 });
    try {
      const tools = await impatient.tools({ name: 'math', url: mcpServer.url });
      const started = Date.now();
      await expect(
        tools.wait!.execute!({ ms: 3_000 }, { toolCallId: 'call-1', messages: [] }),
      ).rejects.toThrow('MCP server "math" is unreachable: the call to wait had no answer within 300 ms');
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(impatient.size).toBe(1);
      expect(await tools.wait!.execute!({ ms: 1 }, { toolCallId: 'call-2', messages: [] })).toMatchObject({
        content: [{ type: 'text', text: 'waited 1 ms' }],
      });
    } finally {
      await impatient.close();
    }
  });

  it('closes a client no run has used for idleMs; a tool listed before connects again when called', async () => {
    const own = await startTestMcpServer();
    const idle = new McpClientPool({ allowPrivateUrls: true, idleMs: 200 });
    try {
      const tools = await idle.tools({ name: 'math', url: own.url });
      const sessions = () => own.methods.filter((method) => method === 'initialize').length;
      expect([idle.size, sessions()]).toEqual([1, 1]);
      await pollUntil(
        () => idle.size,
        (size) => size === 0,
        { timeoutMs: 3_000 },
      );
      expect(await tools.add!.execute!({ a: 1, b: 2 }, { toolCallId: 'call-1', messages: [] })).toMatchObject(
        {
          content: [{ type: 'text', text: '3' }],
        },
      );
      expect([idle.size, sessions()]).toEqual([1, 2]);
    } finally {
      await idle.close();
      await own.close();
    }
  });

  it('keeps a client whose call outlasts idleMs', async () => {
    const own = await startTestMcpServer();
    const idle = new McpClientPool({ allowPrivateUrls: true, idleMs: 100 });
    try {
      const tools = await idle.tools({ name: 'math', url: own.url });
      const call = tools.wait!.execute!({ ms: 800 }, { toolCallId: 'call-1', messages: [] });
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(idle.size).toBe(1);
      expect(await call).toMatchObject({ content: [{ type: 'text', text: 'waited 800 ms' }] });
      expect(own.methods.filter((method) => method === 'initialize')).toHaveLength(1);
    } finally {
      await idle.close();
      await own.close();
    }
  });

  it('refuses a loopback MCP server unless private URLs are allowed', async () => {
    const strict = new McpClientPool({ allowPrivateUrls: false });
    try {
      await expect(strict.tools({ name: 'math', url: mcpServer.url })).rejects.toThrow(
        /MCP server "math" is unreachable: .*private, loopback or link-local/,
      );
    } finally {
      await strict.close();
    }
  });

  it('does not connect to a server whose name resolved public when checked and loopback when dialled', async () => {
    // DNS rebinding: the check is told a public address; the connection resolves `localhost` itself.
    const strict = new McpClientPool({ allowPrivateUrls: false, resolve: async () => ['93.184.216.34'] });
    const before = mcpServer.requests.length;
    try {
      await expect(
        strict.tools({ name: 'math', url: mcpServer.url.replace('127.0.0.1', 'localhost') }),
      ).rejects.toThrow(/MCP server "math" is unreachable: .*private, loopback or link-local/);
      expect(mcpServer.requests.length).toBe(before);
    } finally {
      await strict.close();
    }
  });

  it('fails calls as unreachable after close', async () => {
    const closing = new McpClientPool({ allowPrivateUrls: true });
    await closing.tools({ name: 'math', url: mcpServer.url });
    await closing.close();
    expect(closing.size).toBe(0);
    await expect(closing.tools({ name: 'math', url: mcpServer.url })).rejects.toThrow(/is unreachable/);
  });
});
