import { Ajv2020 } from 'ajv/dist/2020.js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registeredRoutes, toOpenApiPath } from '../src/http/openapi.ts';
import { script } from './support/sse.ts';
import { startTestServer, type ApiResponse, type TestServer } from './support/test-server.ts';

type OpenApiDocument = {
  openapi: string;
  paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
};

/** The paths the document must describe: the API and the operations endpoints, not the web app. */
const DESCRIBED = /^(\/v1\/|\/healthz$|\/readyz$|\/metrics$|\/openapi\.json$)/;

describe('the OpenAPI description', () => {
  let server: TestServer;
  let document: OpenApiDocument;
  let ajv: Ajv2020;

  beforeAll(async () => {
    server = await startTestServer('pglite', { logger: pino({ level: 'silent' }) });
    const response = await fetch(`${server.url}/openapi.json`);
    expect(response.status).toBe(200);
    document = (await response.json()) as OpenApiDocument;
    ajv = new Ajv2020({ strict: false, allErrors: true });
    ajv.addSchema(document, 'openapi');
  });
  afterAll(async () => {
    await server?.close();
  });

  /** Validates a real answer against the schema the document gives for that route and status. */
  function expectDescribed(method: string, path: string, response: ApiResponse): void {
    const operation = document.paths[toOpenApiPath(path)]?.[method.toLowerCase()];
    expect(operation, `${method} ${path} is described`).toBeDefined();
    expect(
      operation!.responses[String(response.status)],
      `${method} ${path} describes status ${response.status}`,
    ).toBeDefined();
    const pointer = ['paths', toOpenApiPath(path), method.toLowerCase(), 'responses', String(response.status)]
      .map((segment) => segment.replaceAll('~', '~0').replaceAll('/', '~1'))
      .join('/');
    const validate = ajv.getSchema(`openapi#/${pointer}/content/application~1json/schema`);
    expect(validate, `${method} ${path} ${response.status} has a JSON schema`).toBeDefined();
    const valid = validate!(response.body);
    expect(valid, `${method} ${path} ${response.status}: ${ajv.errorsText(validate!.errors)}`).toBe(true);
  }

  it('is served without a key as OpenAPI 3.1', () => {
    expect(document.openapi).toBe('3.1.0');
  });

  it('describes every route the server registers under /v1 and the operations endpoints, and no other', () => {
    const onServer = new Set(
      registeredRoutes(server.outrun.server)
        .filter((route) => route.method !== 'HEAD' && DESCRIBED.test(route.path))
        .map((route) => `${route.method} ${toOpenApiPath(route.path)}`),
    );
    const inDocument = new Set(
      Object.entries(document.paths).flatMap(([path, operations]) =>
        Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`),
      ),
    );
    expect(
      [...onServer].filter((route) => !inDocument.has(route)),
      'routes missing from the document',
    ).toEqual([]);
    expect(
      [...inDocument].filter((route) => !onServer.has(route)),
      'described routes the server lacks',
    ).toEqual([]);
  });

  it('validates real responses: chats, runs, messages, steps, agents, the caller and errors', async () => {
    const created = await server.api('/v1/chats', { method: 'POST', body: { title: 'openapi' } });
    expectDescribed('POST', '/v1/chats', created);
    const chatId = created.body.chat.id as string;
    expectDescribed('GET', '/v1/chats/:chatId', await server.api(`/v1/chats/${chatId}`));
    expectDescribed('GET', '/v1/chats', await server.api('/v1/chats'));

    const run = await server.startRun(chatId, { steps: 2, tokens: 3 });
    await server.waitForRun(run.id);
    expectDescribed('GET', '/v1/runs/:runId', await server.api(`/v1/runs/${run.id}`));
    expectDescribed('GET', '/v1/chats/:chatId/runs', await server.api(`/v1/chats/${chatId}/runs`));
    expectDescribed(
      'GET',
      '/v1/chats/:chatId/runs/latest',
      await server.api(`/v1/chats/${chatId}/runs/latest`),
    );
    expectDescribed('GET', '/v1/runs/:runId/steps', await server.api(`/v1/runs/${run.id}/steps`));
    const messages = await server.api(`/v1/chats/${chatId}/messages`);
    expect(messages.body.items.length).toBeGreaterThanOrEqual(2);
    expectDescribed('GET', '/v1/chats/:chatId/messages', messages);
    expectDescribed(
      'POST',
      '/v1/chats/:chatId/stop',
      await server.api(`/v1/chats/${chatId}/stop`, { method: 'POST' }),
    );

    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'Described',
        instructions: 'Be brief.',
        tools: [{ name: 'echo', needsApproval: true }],
        budget: { maxSteps: 3 },
      },
    });
    expectDescribed('POST', '/v1/agents', agent);
    expectDescribed('GET', '/v1/agents/:agentId', await server.api(`/v1/agents/${agent.body.agent.id}`));
    expectDescribed('GET', '/v1/agents', await server.api('/v1/agents'));
    expectDescribed('GET', '/v1/me', await server.api('/v1/me'));
    expectDescribed('GET', '/healthz', await server.api('/healthz', { key: null }));
    expectDescribed('GET', '/readyz', await server.api('/readyz', { key: null }));

    const notFound = await server.api(`/v1/runs/run_${'0'.repeat(32)}`);
    expect(notFound.status).toBe(404);
    expectDescribed('GET', '/v1/runs/:runId', notFound);
    const invalid = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: {} } });
    expect(invalid.status).toBe(400);
    expectDescribed('POST', '/v1/chats/:chatId/runs', invalid);
    const unauthorized = await server.api('/v1/chats', { key: null });
    expect(unauthorized.status).toBe(401);
    expectDescribed('GET', '/v1/chats', unauthorized);
  });

  it('describes the status and content type of every stream a route answers with', async () => {
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: {} })).body.chat.id as string;
    const streams = [
      [
        'post',
        '/v1/chats/{chatId}/runs',
        `/v1/chats/${chatId}/runs`,
        { input: { text: script({ steps: 1, tokens: 1 }) } },
      ],
      [
        'post',
        '/v1/ui/chats',
        '/v1/ui/chats',
        {
          id: chatId,
          messages: [
            { id: 'm1', role: 'user', parts: [{ type: 'text', text: script({ steps: 1, tokens: 1 }) }] },
          ],
        },
      ],
    ] as const;
    for (const [method, template, path, body] of streams) {
      const response = await server.fetch(path, {
        method: method.toUpperCase(),
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify(body),
      });
      await response.text();
      const described = document.paths[template]![method]!.responses[String(response.status)] as
        { content?: Record<string, unknown> } | undefined;
      expect(described?.content, `${template} ${response.status}`).toHaveProperty(['text/event-stream']);
      expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
      await server.waitForRun((await server.api(`/v1/chats/${chatId}/runs/latest`)).body.run.id);
    }
  });

  it('takes each request body schema from the zod schema the route validates with', () => {
    const start = document.paths['/v1/chats/{chatId}/runs']!.post as unknown as {
      requestBody: { content: { 'application/json': { schema: { properties: Record<string, unknown> } } } };
    };
    const properties = start.requestBody.content['application/json'].schema.properties;
    expect(Object.keys(properties)).toEqual(
      expect.arrayContaining(['input', 'model', 'multitask', 'budget']),
    );
  });
});
