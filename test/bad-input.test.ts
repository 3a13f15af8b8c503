import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countEvents } from './support/event-count.ts';
import { script } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

/** Bad input gets a 4xx with a stable code, never a 5xx, and changes nothing (invariant 10). */
describe('bad input', () => {
  let server: TestServer;
  let chatId: string;
  let runId: string;

  beforeAll(async () => {
    server = await startTestServer('pglite', { config: { bodyLimitBytes: 64 * 1024 } });
    chatId = await server.createChat();
    runId = (await server.startRun(chatId, { steps: 1, tokens: 2 })).id;
    await server.waitForRun(runId);
  });
  afterAll(async () => {
    await server?.close();
  });

  async function snapshot() {
    const count = async (table: 'chats' | 'runs' | 'messages' | 'schedules') =>
      Number(
        (
          await server.outrun.db
            .selectFrom(table)
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );
    return {
      chats: await count('chats'),
      runs: await count('runs'),
      messages: await count('messages'),
      schedules: await count('schedules'),
      events: await countEvents(server.outrun.db),
      titles: await server.outrun.db.selectFrom('chats').select(['id', 'title']).orderBy('id').execute(),
    };
  }

  const runsPath = () => `/v1/chats/${chatId}/runs`;
  const cases: {
    name: string;
    status: number;
    code: string;
    request: () => Promise<{ status: number; body: any }>;
  }[] = [
    {
      name: 'malformed JSON',
      status: 400,
      code: 'invalid_json',
      request: () => server.api(runsPath(), { method: 'POST', raw: '{"input": {"text": "hi"' }),
    },
    {
      name: 'a body nested 10,000 levels deep',
      status: 400,
      code: 'invalid_json',
      request: () =>
        server.api(runsPath(), {
          method: 'POST',
          raw: `{"input":{"text":"hi"},"metadata":{"x":${'['.repeat(10_000)}${']'.repeat(10_000)}}}`,
        }),
    },
    {
      name: 'a missing input',
      status: 400,
      code: 'invalid_request',
      request: () => server.api(runsPath(), { method: 'POST', body: {} }),
    },
    {
      name: 'a wrongly typed input',
      status: 400,
      code: 'invalid_request',
      request: () => server.api(runsPath(), { method: 'POST', body: { input: { text: 42 } } }),
    },
    {
      name: 'an empty text',
      status: 400,
      code: 'invalid_request',
      request: () => server.api(runsPath(), { method: 'POST', body: { input: { text: '' } } }),
    },
    {
      name: 'unknown part types',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(runsPath(), { method: 'POST', body: { input: { parts: [{ type: 'video' }] } } }),
    },
    {
      name: 'an unknown field in an input part',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(runsPath(), {
          method: 'POST',
          body: { input: { parts: [{ type: 'text', text: 'hi', colour: 'red' }] } },
        }),
    },
    {
      name: 'an unknown field in a file part',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(runsPath(), {
          method: 'POST',
          body: {
            input: { parts: [{ type: 'file', mediaType: 'text/plain', url: 'data:text/plain,hi', size: 2 }] },
          },
        }),
    },
    ...['javascript:alert(1)', 'file:///etc/passwd', 'not a url', 'ftp://example.com/a.txt'].map((url) => ({
      name: `a file part whose url is ${url}`,
      status: 400,
      code: 'invalid_request',
      request: async () => {
        const response = await server.api(runsPath(), {
          method: 'POST',
          body: { input: { parts: [{ type: 'file', mediaType: 'text/plain', url }] } },
        });
        expect(response.body.error.issues).toEqual([
          expect.objectContaining({ path: ['input', 'parts', 0, 'url'] }),
        ]);
        return response;
      },
    })),
    {
      name: 'a useChat message with a javascript: file part',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api('/v1/ui/chats', {
          method: 'POST',
          body: {
            id: chatId,
            messages: [
              {
                id: 'm1',
                role: 'user',
                parts: [{ type: 'file', mediaType: 'text/html', url: 'javascript:alert(1)' }],
              },
            ],
          },
        }),
    },
    {
      name: 'a schedule whose input has a file part with a malformed url',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(`/v1/chats/${chatId}/schedules`, {
          method: 'POST',
          body: {
            cron: '0 9 * * *',
            input: { parts: [{ type: 'file', mediaType: 'text/plain', url: 'not a url' }] },
          },
        }),
    },
    {
      name: 'a chat deletion with a body field (the route takes no body)',
      status: 400,
      code: 'invalid_request',
      request: () => server.api(`/v1/chats/${chatId}`, { method: 'DELETE', body: { bogus: 1 } }),
    },
    {
      name: 'a budget out of range',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(runsPath(), { method: 'POST', body: { input: { text: 'hi' }, budget: { maxSteps: -1 } } }),
    },
    {
      name: 'an unknown model',
      status: 400,
      code: 'model_unavailable',
      request: () =>
        server.api(runsPath(), { method: 'POST', body: { input: { text: 'hi' }, model: 'nope:x' } }),
    },
    {
      name: 'a provider without its key',
      status: 400,
      code: 'model_unavailable',
      request: () =>
        server.api(runsPath(), {
          method: 'POST',
          body: { input: { text: 'hi' }, model: 'anthropic:claude-x' },
        }),
    },
    {
      name: 'a body over the limit',
      status: 413,
      code: 'body_too_large',
      request: () =>
        server.api(runsPath(), { method: 'POST', body: { input: { text: 'x'.repeat(100 * 1024) } } }),
    },
    {
      name: 'a non-JSON content type',
      status: 415,
      code: 'unsupported_media_type',
      request: () =>
        server.api(runsPath(), { method: 'POST', raw: 'hello', headers: { 'content-type': 'text/plain' } }),
    },
    {
      name: 'a malformed chat id',
      status: 400,
      code: 'invalid_id',
      request: () =>
        server.api('/v1/chats/not-an-id/runs', { method: 'POST', body: { input: { text: 'hi' } } }),
    },
    {
      name: 'an unknown chat id',
      status: 404,
      code: 'chat_not_found',
      request: () =>
        server.api(`/v1/chats/chat_${'0'.repeat(32)}/runs`, {
          method: 'POST',
          body: { input: { text: 'hi' } },
        }),
    },
    {
      name: 'a malformed run id',
      status: 400,
      code: 'invalid_id',
      request: () => server.api('/v1/runs/run_xyz'),
    },
    {
      name: 'an unknown run id',
      status: 404,
      code: 'run_not_found',
      request: () => server.api(`/v1/runs/run_${'a'.repeat(32)}/stream`),
    },
    {
      name: 'a negative after',
      status: 400,
      code: 'invalid_cursor',
      request: () => server.api(`/v1/runs/${runId}/stream?after=-1`),
    },
    {
      name: 'a non-numeric after',
      status: 400,
      code: 'invalid_cursor',
      request: () => server.api(`/v1/runs/${runId}/stream?after=abc`),
    },
    {
      name: 'a non-numeric Last-Event-ID',
      status: 400,
      code: 'invalid_cursor',
      request: () => server.api(`/v1/runs/${runId}/stream`, { headers: { 'last-event-id': '1.5' } }),
    },
    {
      name: 'a bad page limit',
      status: 400,
      code: 'invalid_request',
      request: () => server.api('/v1/chats?limit=0'),
    },
    {
      name: 'a bad cursor',
      status: 400,
      code: 'invalid_id',
      request: () => server.api('/v1/chats?cursor=%27%3B%20drop'),
    },
    {
      name: 'a wrongly typed title',
      status: 400,
      code: 'invalid_request',
      request: () => server.api(`/v1/chats/${chatId}`, { method: 'PATCH', body: { title: ['x'] } }),
    },
    {
      name: 'an unknown field beside a title',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(`/v1/chats/${chatId}`, { method: 'PATCH', body: { title: 'renamed', pinned: true } }),
    },
    {
      name: 'an admin user with a bad email',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api('/v1/admin/users', {
          method: 'POST',
          body: { workspaceId: `ws_${'0'.repeat(32)}`, email: 'x' },
        }),
    },
    {
      name: 'an admin user for an unknown workspace',
      status: 404,
      code: 'workspace_not_found',
      request: () =>
        server.api('/v1/admin/users', {
          method: 'POST',
          body: { workspaceId: `ws_${'0'.repeat(32)}`, email: 'x@example.com' },
        }),
    },
    {
      name: 'a malformed run id on the steps route',
      status: 400,
      code: 'invalid_id',
      request: () => server.api('/v1/runs/nope/steps'),
    },
    {
      name: 'a useChat body without messages',
      status: 400,
      code: 'invalid_request',
      request: () => server.api('/v1/ui/chats', { method: 'POST', body: { id: chatId } }),
    },
    {
      name: 'a useChat body whose last message is not the user’s',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api('/v1/ui/chats', {
          method: 'POST',
          body: { id: chatId, messages: [{ role: 'assistant', parts: [{ type: 'text', text: 'hi' }] }] },
        }),
    },
    {
      name: 'a useChat body with a field the route does not take',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api('/v1/ui/chats', {
          method: 'POST',
          body: {
            id: chatId,
            messages: [{ id: 'm1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }],
            agentId: 'agt_x',
          },
        }),
    },
    {
      name: 'a useChat body with malformed JSON',
      status: 400,
      code: 'invalid_json',
      request: () => server.api('/v1/ui/chats', { method: 'POST', raw: '{"id":' }),
    },
    {
      name: 'a useChat resume for a malformed chat id',
      status: 400,
      code: 'invalid_id',
      request: () => server.api('/v1/ui/chats/nope/stream'),
    },
    {
      name: 'a start with a query parameter the route does not take',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(`${runsPath()}?multitask=interrupt`, { method: 'POST', body: { input: { text: 'hi' } } }),
    },
    {
      name: 'a misspelt page size',
      status: 400,
      code: 'invalid_request',
      request: () => server.api('/v1/chats?limt=1'),
    },
    {
      name: 'a __proto__ key in metadata',
      status: 400,
      code: 'invalid_request',
      request: () =>
        server.api(runsPath(), {
          method: 'POST',
          raw: '{"input": {"text": "hi"}, "metadata": {"__proto__": {"isAdmin": true}}}',
        }),
    },
    {
      name: 'a metadata key of 30,000 characters (the answer repeats 80 of them)',
      status: 400,
      code: 'invalid_request',
      request: async () => {
        const response = await server.api(runsPath(), {
          method: 'POST',
          body: { input: { text: 'hi' }, metadata: { ['k'.repeat(30_000)]: 1 } },
        });
        expect(JSON.stringify(response.body).length).toBeLessThan(1_000);
        return response;
      },
    },
    {
      name: 'an unknown route',
      status: 404,
      code: 'route_not_found',
      request: () => server.api('/v1/nothing-here'),
    },
    {
      name: 'no key',
      status: 401,
      code: 'unauthorized',
      request: () => server.api(runsPath(), { method: 'POST', body: { input: { text: 'hi' } }, key: null }),
    },
    {
      name: 'a wrong key',
      status: 401,
      code: 'unauthorized',
      request: () =>
        server.api(runsPath(), { method: 'POST', body: { input: { text: 'hi' } }, key: `${ADMIN_KEY}x` }),
    },
  ];

  for (const testCase of cases) {
    it(`answers ${testCase.status} ${testCase.code} to ${testCase.name}, changing nothing`, async () => {
      const before = await snapshot();
      const response = await testCase.request();
      expect(response.status).toBe(testCase.status);
      expect(response.body.error.code).toBe(testCase.code);
      expect(typeof response.body.error.message).toBe('string');
      expect(JSON.stringify(response.body)).not.toMatch(/at .*\.ts:\d+/);
      expect(await snapshot()).toEqual(before);
    });
  }

  it('accepts a stop with an empty JSON body', async () => {
    const response = await server.api(`/v1/chats/${chatId}/stop`, { method: 'POST', raw: '' });
    expect(response.status).toBe(200);
    expect(response.body.stopped).toBe(false);
  });

  it('accepts a run started with parts', async () => {
    const response = await server.api(runsPath(), {
      method: 'POST',
      body: { input: { parts: [{ type: 'text', text: script({ steps: 1, tokens: 1 }) }] } },
    });
    expect(response.status).toBe(201);
    await server.waitForRun(response.body.run.id);
  });
});
