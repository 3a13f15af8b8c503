import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STORE_KINDS } from './support/databases.ts';
import { countEvents } from './support/event-count.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/** Text PostgreSQL refuses to store in `text` or `jsonb`: a NUL, and a UTF-16 surrogate without its partner. */
const UNSTORABLE_VALUES: Record<string, string> = {
  'a NUL': 'a\u0000b',
  'a lone high surrogate': 'x\ud800',
  'a lone low surrogate': '\udfffy',
};

const TABLES = ['workspaces', 'users', 'api_keys', 'chats', 'messages', 'runs'] as const;

/**
 * Every text field of every body route, with a body that is valid apart from that field; `field` is the
 * name the 400 must give (the field's path in the body).
 */
interface FieldCase {
  route: string;
  field: string;
  method: string;
  path: () => string;
  body: (value: string) => unknown;
}

describe.each(STORE_KINDS)('unstorable text on %s', (kind) => {
  let server: TestServer;
  let chatId: string;
  let runId: string;
  let workspaceId: string;

  beforeAll(async () => {
    server = await startTestServer(kind);
    chatId = await server.createChat();
    runId = (await server.startRun(chatId, { steps: 1, tokens: 1 })).id;
    await server.waitForRun(runId);
    workspaceId = (await server.api<{ workspace: { id: string } }>('/v1/me')).body.workspace.id;
  });
  afterAll(async () => {
    await server?.close();
  });

  async function rowCounts(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const table of TABLES) {
      const row = await server.outrun.db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow();
      counts[table] = Number(row.n);
    }
    counts.events = await countEvents(server.outrun.db);
    const chat = await server.api<{ chat: { title: string } }>(`/v1/chats/${chatId}`);
    counts[`title:${chat.body.chat.title}`] = 1;
    return counts;
  }

  const runs = () => `/v1/chats/${chatId}/runs`;
  const text = (value: string) => ({ input: { text: value } });
  const textPart = (value: string) => ({ input: { parts: [{ type: 'text', text: value }] } });
  const filePart = (fields: Record<string, string>) => ({
    input: {
      parts: [{ type: 'file', mediaType: 'text/plain', url: 'data:text/plain;base64,aGk=', ...fields }],
    },
  });
  const useChat = (overrides: { text?: string; role?: string; [key: string]: unknown }) => {
    const { text: message = 'hi', role = 'user', ...rest } = overrides;
    return { id: chatId, messages: [{ role, parts: [{ type: 'text', text: message }] }], ...rest };
  };

  const fields: FieldCase[] = [
    {
      route: 'POST /v1/chats',
      field: 'title',
      method: 'POST',
      path: () => '/v1/chats',
      body: (v) => ({ title: v }),
    },
    {
      route: 'PATCH /v1/chats/:chatId',
      field: 'title',
      method: 'PATCH',
      path: () => `/v1/chats/${chatId}`,
      body: (v) => ({ title: v }),
    },
    {
      route: 'POST /v1/admin/workspaces',
      field: 'name',
      method: 'POST',
      path: () => '/v1/admin/workspaces',
      body: (v) => ({ name: v }),
    },
    {
      route: 'POST /v1/admin/users',
      field: 'email',
      method: 'POST',
      path: () => '/v1/admin/users',
      body: (v) => ({ workspaceId, email: `a${v}@example.com` }),
    },
    {
      route: 'POST /v1/admin/users',
      field: 'workspaceId',
      method: 'POST',
      path: () => '/v1/admin/users',
      body: (v) => ({ workspaceId: `${workspaceId}${v}`, email: 'a@example.com' }),
    },
    { route: 'POST /v1/chats/:chatId/runs', field: 'input.text', method: 'POST', path: runs, body: text },
    {
      route: 'POST /v1/chats/:chatId/runs',
      field: 'input.parts.0.text',
      method: 'POST',
      path: runs,
      body: textPart,
    },
    {
      route: 'POST /v1/chats/:chatId/runs',
      field: 'input.parts.0.filename',
      method: 'POST',
      path: runs,
      body: (v) => filePart({ filename: v }),
    },
    {
      route: 'POST /v1/chats/:chatId/runs',
      field: 'input.parts.0.url',
      method: 'POST',
      path: runs,
      body: (v) => filePart({ url: `data:text/plain,${v}` }),
    },
    {
      route: 'POST /v1/chats/:chatId/runs',
      field: 'input.parts.0.mediaType',
      method: 'POST',
      path: runs,
      body: (v) => filePart({ mediaType: `text/${v}` }),
    },
    {
      route: 'POST /v1/chats/:chatId/runs',
      field: 'model',
      method: 'POST',
      path: runs,
      body: (v) => ({ ...text('hi'), model: `scripted${v}` }),
    },
    {
      route: 'POST /v1/ui/chats',
      field: 'id',
      method: 'POST',
      path: () => '/v1/ui/chats',
      body: (v) => useChat({ id: `${chatId}${v}` }),
    },
    {
      route: 'POST /v1/ui/chats',
      field: 'messages.0.parts.0.text',
      method: 'POST',
      path: () => '/v1/ui/chats',
      body: (v) => useChat({ text: v }),
    },
    {
      route: 'POST /v1/ui/chats',
      field: 'messages.0.role',
      method: 'POST',
      path: () => '/v1/ui/chats',
      body: (v) => useChat({ role: `user${v}` }),
    },
    {
      route: 'POST /v1/ui/chats',
      field: 'messageId',
      method: 'POST',
      path: () => '/v1/ui/chats',
      body: (v) => useChat({ messageId: v }),
    },
    {
      route: 'POST /v1/ui/chats',
      field: 'model',
      method: 'POST',
      path: () => '/v1/ui/chats',
      body: (v) => useChat({ model: `scripted${v}` }),
    },
    {
      route: 'POST /v1/chats/:chatId/stop',
      field: 'includeQueued',
      method: 'POST',
      path: () => `/v1/chats/${chatId}/stop`,
      body: (v) => ({ includeQueued: v }),
    },
    {
      route: 'POST /v1/runs/:runId/stop',
      field: 'reason',
      method: 'POST',
      path: () => `/v1/runs/${runId}/stop`,
      body: (v) => ({ reason: v }),
    },
  ];

  for (const testCase of fields) {
    for (const [label, value] of Object.entries(UNSTORABLE_VALUES)) {
      it(`refuses ${label} in ${testCase.field} of ${testCase.route} with 400, writing nothing`, async () => {
        const before = await rowCounts();
        const response = await server.api(testCase.path(), {
          method: testCase.method,
          body: testCase.body(value),
        });
        expect(response.status).toBe(400);
        expect(response.body.error.code).toBe('invalid_request');
        expect(response.body.error.field).toBe(testCase.field);
        expect(response.body.error.message).toContain(testCase.field);
        expect(await rowCounts()).toEqual(before);
      });
    }
  }

  it('refuses an unstorable key in a body, writing nothing', async () => {
    const before = await rowCounts();
    const response = await server.api('/v1/chats', { method: 'POST', body: { 'ti\u0000tle': 'x' } });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_request');
    expect(await rowCounts()).toEqual(before);
  });

  const queries: [string, () => string, string][] = [
    ['a chat list cursor', () => '/v1/chats?cursor=chat_%00', 'cursor'],
    ['a chat list limit', () => '/v1/chats?limit=1%00', 'limit'],
    ['a message list cursor', () => `/v1/chats/${chatId}/messages?cursor=%ED%A0%80`, 'cursor'],
    ['a stream position', () => `/v1/runs/${runId}/stream?after=%00`, 'after'],
    ['a chat id in the path', () => '/v1/chats/chat_%00', 'chatId'],
    ['a run id in the path', () => `/v1/runs/${runId}%00`, 'runId'],
  ];
  for (const [name, path] of queries) {
    it(`answers 4xx, never 5xx, to a NUL or bad UTF-8 in ${name}`, async () => {
      const before = await rowCounts();
      const response = await server.api(path());
      expect(response.status).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
      expect(typeof response.body.error.code).toBe('string');
      expect(await rowCounts()).toEqual(before);
    });
  }

  it('still accepts text with paired surrogates (emoji) and other control characters', async () => {
    const response = await server.api('/v1/chats', { method: 'POST', body: { title: 'hi 😀\u0001\tthere' } });
    expect(response.status).toBe(201);
    expect(response.body.chat.title).toBe('hi 😀\u0001\tthere');
  });
});
