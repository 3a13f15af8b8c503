import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STORE_KINDS } from './support/databases.ts';
import { script } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

describe.each(STORE_KINDS)('auth and tenancy on %s', (kind) => {
  let server: TestServer;
  let aliceKey: string;
  let bobKey: string;
  let outsiderKey: string;
  let chatId: string;
  let runId: string;

  beforeAll(async () => {
    server = await startTestServer(kind);
    aliceKey = await server.createUser('alice@example.com');
    bobKey = await server.createUser('bob@example.com');
    const workspace = await server.api('/v1/admin/workspaces', { method: 'POST', body: { name: 'Other' } });
    const outsider = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: 'eve@example.com', role: 'admin' },
    });
    outsiderKey = outsider.body.apiKey;
    chatId = await server.createChat(aliceKey);
    runId = (await server.startRun(chatId, { steps: 1, tokens: 2 }, aliceKey)).id;
    await server.waitForRun(runId, undefined, aliceKey);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('shows a user their own identity and workspace', async () => {
    const me = await server.api('/v1/me', { key: aliceKey });
    expect(me.status).toBe(200);
    expect(me.body.user).toMatchObject({ email: 'alice@example.com', role: 'member' });
    expect(me.body.workspace.name).toBe('Default');
  });

  it('answers 404 on every chat and run route for another user of the same workspace and of another one', async () => {
    const routes: [string, string, unknown?][] = [
      ['GET', `/v1/chats/${chatId}`],
      ['PATCH', `/v1/chats/${chatId}`, { title: 'mine now' }],
      ['DELETE', `/v1/chats/${chatId}`],
      ['GET', `/v1/chats/${chatId}/messages`],
      ['POST', `/v1/chats/${chatId}/runs`, { input: { text: script({ steps: 1 }) } }],
      ['GET', `/v1/chats/${chatId}/runs`],
      ['GET', `/v1/chats/${chatId}/runs/latest`],
      ['POST', `/v1/chats/${chatId}/stop`],
      ['GET', `/v1/runs/${runId}`],
      ['GET', `/v1/runs/${runId}/stream`],
      ['POST', `/v1/runs/${runId}/stop`],
      ['GET', `/v1/runs/${runId}/steps`],
      ['GET', `/v1/ui/chats/${chatId}/stream`],
      [
        'POST',
        '/v1/ui/chats',
        { id: chatId, messages: [{ role: 'user', parts: [{ type: 'text', text: 'hi' }] }] },
      ],
    ];
    for (const key of [bobKey, outsiderKey, ADMIN_KEY]) {
      for (const [method, path, body] of routes) {
        const response = await server.api(path, { method, body, key });
        expect(response.status, `${method} ${path}`).toBe(404);
        expect(response.body.error.code).toMatch(/^(chat|run)_not_found$/);
      }
    }
    // Nothing changed for the owner.
    const chat = await server.api(`/v1/chats/${chatId}`, { key: aliceKey });
    expect(chat.body.chat.title).toBe('test');
    expect((await server.api(`/v1/chats/${chatId}/runs`, { key: aliceKey })).body.items).toHaveLength(1);
  });

  it('lists only the caller’s own chats', async () => {
    const bobChat = await server.createChat(bobKey);
    const alice = await server.api('/v1/chats', { key: aliceKey });
    const bob = await server.api('/v1/chats', { key: bobKey });
    expect(alice.body.items.map((chat: { id: string }) => chat.id)).toEqual([chatId]);
    expect(bob.body.items.map((chat: { id: string }) => chat.id)).toEqual([bobChat]);
  });

  it('answers 403 on admin routes for a member', async () => {
    const me = await server.api('/v1/me', { key: aliceKey });
    const workspace = await server.api('/v1/admin/workspaces', {
      method: 'POST',
      body: { name: 'x' },
      key: aliceKey,
    });
    expect(workspace.status).toBe(403);
    expect(workspace.body.error.code).toBe('forbidden');
    const user = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: me.body.workspace.id, email: 'mallory@example.com' },
      key: aliceKey,
    });
    expect(user.status).toBe(403);
  });

  it('answers 401 without a key, with a wrong key, and with a malformed header', async () => {
    const attempts: Record<string, string>[] = [
      {},
      { authorization: 'Bearer or_wrong' },
      { authorization: 'Basic abc' },
    ];
    for (const headers of attempts) {
      const response = await server.api('/v1/chats', { key: null, headers });
      expect(response.status).toBe(401);
      expect(response.body.error.code).toBe('unauthorized');
    }
  });

  it('stores API keys only as hashes', async () => {
    const rows = await server.outrun.db.selectFrom('api_keys').select(['hash', 'prefix']).execute();
    for (const row of rows) {
      expect(row.hash).toMatch(/^[0-9a-f]{64}$/);
      expect([aliceKey, bobKey, outsiderKey, ADMIN_KEY]).not.toContain(row.hash);
    }
  });

  it('pages chats newest first with a cursor', async () => {
    const key = await server.createUser('pager@example.com');
    const ids: string[] = [];
    for (let index = 0; index < 5; index++) ids.push(await server.createChat(key));
    const first = await server.api('/v1/chats?limit=2', { key });
    expect(first.body.items.map((chat: { id: string }) => chat.id)).toEqual([ids[4], ids[3]]);
    const second = await server.api(`/v1/chats?limit=2&cursor=${first.body.nextCursor}`, { key });
    expect(second.body.items.map((chat: { id: string }) => chat.id)).toEqual([ids[2], ids[1]]);
    const third = await server.api(`/v1/chats?limit=2&cursor=${second.body.nextCursor}`, { key });
    expect(third.body).toMatchObject({ items: [{ id: ids[0] }], nextCursor: null });
  });

  it('renames and deletes a chat; delete stops its active run first', async () => {
    const key = await server.createUser('deleter@example.com');
    const id = await server.createChat(key);
    const renamed = await server.api(`/v1/chats/${id}`, { method: 'PATCH', body: { title: 'Renamed' }, key });
    expect(renamed.body.chat.title).toBe('Renamed');
    const run = await server.startRun(id, { steps: 1, tokens: 500, delayMs: 10 }, key);
    const deleted = await server.api(`/v1/chats/${id}`, { method: 'DELETE', key });
    expect(deleted.status).toBe(204);
    expect((await server.api(`/v1/chats/${id}`, { key })).status).toBe(404);
    const row = await server.outrun.runs.get(run.id);
    expect(row?.stop_requested_at).not.toBeNull();
  });
});
