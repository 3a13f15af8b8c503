import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

export interface TestMcpServer {
  /** The Streamable HTTP endpoint, `http://127.0.0.1:<port>/mcp`. */
  url: string;
  /** The headers of every request received, in order. */
  requests: IncomingHttpHeaders[];
  /** The JSON-RPC method of every POST received, in order (`initialize` opens a client's session). */
  methods: string[];
  close(): Promise<void>;
}

/**
 * A real MCP server (the official TypeScript SDK, stateless Streamable HTTP) with `add` and `wait` tools, on
 * `port` (a restart on the same address) or any free one.
 */
export async function startTestMcpServer(options: { port?: number } = {}): Promise<TestMcpServer> {
  const requests: IncomingHttpHeaders[] = [];
  const methods: string[] = [];
  const http = createServer(async (request, response) => {
    requests.push(request.headers);
    if (request.method !== 'POST' || request.url !== '/mcp') {
      response.writeHead(405, { allow: 'POST' }).end();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    for (const message of Array.isArray(body) ? body : [body]) {
      const method = (message as { method?: unknown } | null)?.method;
      if (typeof method === 'string') methods.push(method);
    }
    // Stateless mode: a fresh server and transport per request, as the SDK's stateless example does.
    const server = new McpServer({ name: 'test-math', version: '1.0.0' });
    server.registerTool(
      'add',
      { description: 'Adds two numbers.', inputSchema: { a: z.number(), b: z.number() } },
      async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
    );
    server.registerTool(
      'step',
      { description: 'Says which step called it.', inputSchema: { step: z.number() } },
      async ({ step }) => ({ content: [{ type: 'text', text: `called at step ${step}` }] }),
    );
    server.registerTool(
      'wait',
      { description: 'Answers after `ms` milliseconds.', inputSchema: { ms: z.number() } },
      async ({ ms }) => {
        await new Promise((resolve) => setTimeout(resolve, ms));
        return { content: [{ type: 'text', text: `waited ${ms} ms` }] };
      },
    );
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    response.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(request, response, body);
  });
  await new Promise<void>((resolve) => http.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    requests,
    methods,
    close: () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
}

/** A loopback URL nothing listens on. */
export async function unusedLocalUrl(): Promise<string> {
  const http = createServer();
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  await new Promise<void>((resolve) => http.close(() => resolve()));
  return `http://127.0.0.1:${port}/mcp`;
}
