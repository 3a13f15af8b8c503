import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { AuthService } from '../src/auth/auth-service.ts';
import { ChatService } from '../src/chats/chat-service.ts';
import { newId } from '../src/ids.ts';
import { startRowsOf } from './support/chat-rows.ts';
import { STORE_KINDS } from './support/databases.ts';
import { captureLogger } from './support/logger.ts';
import { collectStream, script } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/**
 * A start or a stream resume with an API key this instance authenticated lately checks the key in its own
 * statement (the begin, the ownership read) instead of reading it first
 * (docs/decisions/0012-key-checked-in-the-statement.md). A key revoked since, here or on an instance whose
 * announcement never arrived, still answers 401 before anything else, and a start writes nothing.
 */
describe.each(STORE_KINDS)('a key checked in the statement on %s', (kind) => {
  let server: TestServer;
  let authentications: MockInstance<AuthService['authenticate']>;

  const { logger, records } = captureLogger();

  beforeAll(async () => {
    authentications = vi.spyOn(AuthService.prototype, 'authenticate');
    server = await startTestServer(kind, { logger });
  });
  afterAll(async () => {
    authentications.mockRestore();
    await server?.close();
  });

  /** A user with a chat, whose key this instance has authenticated (by reading the chat). */
  async function userWithChat(email: string) {
    const key = await server.createUser(email);
    const chat = await server.api('/v1/chats', { method: 'POST', body: {}, key });
    const keyId = (await server.api('/v1/api-keys', { key })).body.items[0].id as string;
    return { key, keyId, chatId: chat.body.chat.id as string };
  }

  const start = (chatId: string, key: string, body: unknown, headers?: Record<string, string>) =>
    server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, key, headers });

  const rowsOf = (chatId: string) => startRowsOf(server.outrun.db, chatId);

  it('starts a run with a key it knows without authenticating it again, answering JSON or the stream', async () => {
    const user = await userWithChat(`known-${kind}@example.com`);
    const authenticated = () => authentications.mock.calls.filter(([credential]) => credential === user.key);

    authentications.mockClear();
    const started = await start(user.chatId, user.key, { input: { text: script({ tokens: 2 }) } });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    expect(authenticated()).toHaveLength(0);
    await server.waitForRun(started.body.run.id, undefined, user.key);

    authentications.mockClear();
    const streamed = await server.fetch(`/v1/chats/${user.chatId}/runs`, {
      key: user.key,
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ input: { text: script({ tokens: 2 }) } }),
    });
    expect(streamed.status).toBe(200);
    expect((await collectStream(streamed)).done).toBe(true);
    expect(authenticated()).toHaveLength(0);
    // A resume from the middle of the first run.
    const resumed = await server.fetch(`/v1/runs/${started.body.run.id}/stream`, {
      key: user.key,
      headers: { 'last-event-id': '2' },
    });
    expect(resumed.status).toBe(200);
    expect((await collectStream(resumed)).events[0]!.seq).toBe(3);
    expect(authenticated()).toHaveLength(0);
    // useChat's resume: the chat has no active run now.
    expect((await server.fetch(`/v1/ui/chats/${user.chatId}/stream`, { key: user.key })).status).toBe(204);
    expect(authenticated()).toHaveLength(0);
    // Every other route still authenticates.
    await server.api(`/v1/chats/${user.chatId}/runs`, { key: user.key });
    expect(authenticated()).toHaveLength(1);
  });

  it('takes a scoped token at its signature, and refuses it with 401 once its issuing key is revoked', async () => {
    const user = await userWithChat(`token-${kind}@example.com`);
    const finished = (await start(user.chatId, user.key, { input: { text: script({ tokens: 2 }) } })).body
      .run;
    await server.waitForRun(finished.id, undefined, user.key);
    const issued = await server.api('/v1/tokens', {
      method: 'POST',
      key: user.key,
      body: { chatId: user.chatId, scopes: ['write'] },
    });
    const token = issued.body.token as string;
    const resumes = [
      () => fetch(`${server.url}/v1/runs/${finished.id}/stream?access_token=${token}`),
      () => server.fetch(`/v1/runs/${finished.id}/stream`, { key: token }),
      () => fetch(`${server.url}/v1/ui/chats/${user.chatId}/stream?access_token=${token}`),
    ];

    authentications.mockClear();
    for (const resume of resumes) expect([200, 204]).toContain((await resume()).status);
    const started = await start(user.chatId, token, { input: { text: script({ tokens: 2 }) } });
    expect(started.status).toBe(201);
    expect(authentications.mock.calls.filter(([credential]) => credential === token)).toHaveLength(0);
    await server.waitForRun(started.body.run.id, undefined, user.key);

    const before = await rowsOf(user.chatId);
    await keyRow(user.keyId, true);
    const refused = { error: { code: 'unauthorized', message: 'The token was revoked; request a new one.' } };
    for (const resume of resumes) {
      const answer = await resume();
      expect(answer.status).toBe(401);
      expect(await answer.json()).toEqual(refused);
    }
    expect(await start(user.chatId, token, { input: { text: 'hi' } })).toMatchObject({
      status: 401,
      body: refused,
    });
    expect(await rowsOf(user.chatId)).toEqual(before);
    expect(records.filter((record) => record.msg.includes('before it checked'))).toEqual([]);
  });

  /** Sets or clears a key's revocation, or its user's removal, in the row: as another instance would. */
  const keyRow = (keyId: string, revoked: boolean) =>
    sql`update api_keys set revoked_at = ${revoked ? new Date() : null} where id = ${keyId}`.execute(
      server.outrun.db,
    );
  const userRow = (keyId: string, removed: boolean) =>
    sql`update users set deleted_at = ${removed ? new Date() : null}
      where id = (select user_id from api_keys where id = ${keyId})`.execute(server.outrun.db);

  for (const [what, change] of [
    ['a key revoked on another instance', keyRow],
    ['the key of a removed user', userRow],
  ] as const) {
    it(`answers ${what} with 401 first on every start and resume, and writes nothing`, async () => {
      const user = await userWithChat(`${what.split(' ').at(-1)}-${kind}@example.com`);
      const bobsChat = await server.createChat();
      const agent = await server.api('/v1/agents', { method: 'POST', body: { name: 'Agent' } });
      const agentChat = (
        await server.api('/v1/chats', {
          method: 'POST',
          body: { agentId: agent.body.agent.id },
          key: user.key,
        })
      ).body.chat.id as string;
      const ownRun = (await start(user.chatId, user.key, { input: { text: script({ tokens: 2 }) } })).body
        .run;
      await server.waitForRun(ownRun.id, undefined, user.key);
      const bobsRun = await server.startRun(bobsChat, { tokens: 2 });
      const before = await rowsOf(user.chatId);
      const bobsBefore = await rowsOf(bobsChat);
      const requests: [string, () => Promise<{ status: number; body: any }>][] = [
        ['a start', () => start(user.chatId, user.key, { input: { text: 'hi' } })],
        [
          'a streaming start',
          () => start(user.chatId, user.key, { input: { text: 'hi' } }, { accept: 'text/event-stream' }),
        ],
        [
          'a start with a bad model',
          () => start(user.chatId, user.key, { input: { text: 'hi' }, model: 'nope:x' }),
        ],
        [
          'a start with an unknown field',
          () => start(user.chatId, user.key, { input: { text: 'hi' }, x: 1 }),
        ],
        ['a start on a missing chat', () => start(newId('chat'), user.key, { input: { text: 'hi' } })],
        [
          'a start on a chat whose agent this instance has not seen',
          async () => {
            const forgotten = vi.spyOn(ChatService.prototype, 'agentOf').mockReturnValue(undefined);
            try {
              return await start(agentChat, user.key, { input: { text: 'hi' } });
            } finally {
              forgotten.mockRestore();
            }
          },
        ],
        ["a start on someone else's chat", () => start(bobsChat, user.key, { input: { text: 'hi' } })],
        [
          'a start with an idempotency key',
          () => start(user.chatId, user.key, { input: { text: 'hi' } }, { 'idempotency-key': 'k-1' }),
        ],
        ['a stream resume', () => server.api(`/v1/runs/${ownRun.id}/stream`, { key: user.key })],
        [
          'a stream resume after an event',
          () =>
            server.api(`/v1/runs/${ownRun.id}/stream`, { key: user.key, headers: { 'last-event-id': '1' } }),
        ],
        ["useChat's resume", () => server.api(`/v1/ui/chats/${user.chatId}/stream`, { key: user.key })],
        [
          "useChat's resume of someone else's chat",
          () => server.api(`/v1/ui/chats/${bobsChat}/stream`, { key: user.key }),
        ],
        [
          "a stream resume of someone else's run",
          () => server.api(`/v1/runs/${bobsRun.id}/stream`, { key: user.key }),
        ],
        [
          "useChat's start",
          () =>
            server.api('/v1/ui/chats', {
              method: 'POST',
              key: user.key,
              body: { id: user.chatId, messages: [{ role: 'user', parts: [{ type: 'text', text: 'hi' }] }] },
            }),
        ],
        [
          "useChat's answer to an approval",
          () =>
            server.api('/v1/ui/chats', {
              method: 'POST',
              key: user.key,
              body: {
                id: user.chatId,
                messages: [
                  {
                    role: 'assistant',
                    parts: [
                      {
                        type: 'tool-echo',
                        state: 'approval-responded',
                        approval: { id: 'a', approved: true },
                      },
                    ],
                  },
                ],
              },
            }),
        ],
      ];
      for (const [name, request] of requests) {
        // This instance authenticates the key, then the change comes and its announcement never arrives.
        await change(user.keyId, false);
        expect((await server.api('/v1/me', { key: user.key })).status).toBe(200);
        await change(user.keyId, true);
        const answer = await request();
        expect(answer, `${name}: ${JSON.stringify(answer.body)}`).toMatchObject({
          status: 401,
          body: { error: { code: 'unauthorized', message: 'The API key is not valid.' } },
        });
      }
      expect(await rowsOf(user.chatId)).toEqual(before);
      expect(await rowsOf(agentChat)).toEqual({ runs: 0, messages: 0 });
      // Each answer checked the key where it should: none needed the server's backstop.
      expect(records.filter((record) => record.msg.includes('before it checked'))).toEqual([]);
      expect(await rowsOf(bobsChat)).toEqual(bobsBefore);
    });
  }
});
