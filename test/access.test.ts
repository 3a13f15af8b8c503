import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutrunClient } from '../src/client/index.ts';
import { STORE_KINDS } from './support/databases.ts';
import { readSse, script } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

const ALLOWED_ORIGIN = 'http://app.example.test';
const METRICS_TOKEN = 'metrics-token-0123456789';

describe.each(STORE_KINDS)('access and tenancy on %s', (kind) => {
  let server: TestServer;
  let defaultWorkspaceId: string;
  let otherWorkspaceId: string;
  let otherAdminKey: string;
  let aliceKey: string;
  let bobKey: string;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      config: { corsOrigins: [ALLOWED_ORIGIN], metricsToken: METRICS_TOKEN },
    });
    defaultWorkspaceId = (await server.api('/v1/me')).body.workspace.id;
    const workspace = await server.api('/v1/admin/workspaces', {
      method: 'POST',
      body: { name: 'Other', quota: { tokensPerDay: 1000 } },
    });
    expect(workspace.status).toBe(201);
    otherWorkspaceId = workspace.body.workspace.id;
    const otherAdmin = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: otherWorkspaceId, email: 'boss@other.test', role: 'admin' },
    });
    otherAdminKey = otherAdmin.body.apiKey;
    aliceKey = await server.createUser('alice@example.com');
    bobKey = await server.createUser('bob@example.com');
  });
  afterAll(async () => {
    await server?.close();
  });

  describe('roles', () => {
    it('shows the seeded key as the instance owner', async () => {
      const me = await server.api('/v1/me');
      expect(me.body.user.role).toBe('owner');
    });

    it('lets the owner create and change workspaces with a quota', async () => {
      const created = await server.api('/v1/admin/workspaces', {
        method: 'POST',
        body: { name: 'Quota', quota: { runsPerMinute: 5 } },
      });
      expect(created.body.workspace).toMatchObject({ name: 'Quota', quota: { runsPerMinute: 5 } });
      const changed = await server.api(`/v1/admin/workspaces/${created.body.workspace.id}`, {
        method: 'PATCH',
        body: { name: 'Renamed', quota: null },
      });
      expect(changed.status).toBe(200);
      expect(changed.body.workspace).toMatchObject({ name: 'Renamed', quota: null });
      // An empty patch (or none) changes nothing and returns the workspace; an unknown id is still a 404.
      for (const request of [{ body: {} }, {}]) {
        const unchanged = await server.api(`/v1/admin/workspaces/${created.body.workspace.id}`, {
          method: 'PATCH',
          ...request,
        });
        expect(unchanged.status).toBe(200);
        expect(unchanged.body.workspace).toEqual(changed.body.workspace);
      }
      const missing = await server.api(`/v1/admin/workspaces/ws_${'0'.repeat(32)}`, {
        method: 'PATCH',
        body: {},
      });
      expect(missing.status).toBe(404);
    });

    it('refuses workspace management to a workspace admin with 403', async () => {
      const create = await server.api('/v1/admin/workspaces', {
        method: 'POST',
        body: { name: 'Mine' },
        key: otherAdminKey,
      });
      expect(create.status).toBe(403);
      const patch = await server.api(`/v1/admin/workspaces/${otherWorkspaceId}`, {
        method: 'PATCH',
        body: { quota: null },
        key: otherAdminKey,
      });
      expect(patch.status).toBe(403);
    });

    it('does not let the admin of one workspace create users in another', async () => {
      for (const role of ['admin', 'member']) {
        const response = await server.api('/v1/admin/users', {
          method: 'POST',
          body: { workspaceId: defaultWorkspaceId, email: `intruder-${role}@other.test`, role },
          key: otherAdminKey,
        });
        expect(response.status).toBe(404);
        expect(response.body.error.code).toBe('workspace_not_found');
      }
      const own = await server.api('/v1/admin/users', {
        method: 'POST',
        body: { workspaceId: otherWorkspaceId, email: 'colleague@other.test' },
        key: otherAdminKey,
      });
      expect(own.status).toBe(201);
      expect(own.body.user.workspaceId).toBe(otherWorkspaceId);
    });

    it('refuses a second user whose email differs only in case, even when both are created at once', async () => {
      const create = (email: string) =>
        server.api('/v1/admin/users', {
          method: 'POST',
          body: { workspaceId: otherWorkspaceId, email },
          key: otherAdminKey,
        });
      expect((await create('Twin@Other.test')).status).toBe(201);
      const again = await create('twin@other.test');
      expect(again.status).toBe(409);
      expect(again.body.error.code).toBe('user_exists');
      const racing = await Promise.all(
        ['Racer@other.test', 'racer@OTHER.test', 'RACER@other.test'].map(create),
      );
      expect(racing.map((response) => response.status).sort()).toEqual([201, 409, 409]);
    });

    it('refuses user management to a member with 403', async () => {
      const response = await server.api('/v1/admin/users', {
        method: 'POST',
        body: { workspaceId: defaultWorkspaceId, email: 'friend@example.com' },
        key: aliceKey,
      });
      expect(response.status).toBe(403);
    });

    it('revokes every key of a removed user, and only an admin of their workspace may remove them', async () => {
      const created = await server.api('/v1/admin/users', {
        method: 'POST',
        body: { workspaceId: otherWorkspaceId, email: 'leaver@other.test' },
        key: otherAdminKey,
      });
      const leaverKey = created.body.apiKey as string;
      const second = await server.api('/v1/api-keys', {
        method: 'POST',
        body: { name: 'ci' },
        key: leaverKey,
      });
      expect(second.status).toBe(201);
      const userId = created.body.user.id as string;

      const byOutsider = await server.api(`/v1/admin/users/${userId}`, { method: 'DELETE', key: aliceKey });
      expect(byOutsider.status).toBe(403);
      const me = (await server.api('/v1/me', { key: aliceKey })).body.user.id;
      const notTheirs = await server.api(`/v1/admin/users/${me}`, { method: 'DELETE', key: otherAdminKey });
      expect(notTheirs.status).toBe(404);

      const removed = await server.api(`/v1/admin/users/${userId}`, { method: 'DELETE', key: otherAdminKey });
      expect(removed.status).toBe(204);
      expect((await server.api('/v1/me', { key: leaverKey })).status).toBe(401);
      expect((await server.api('/v1/me', { key: second.body.key })).status).toBe(401);
    });
  });

  describe('API keys', () => {
    it('creates a named key shown once, lists it without the key, and revokes it at once', async () => {
      const created = await server.api('/v1/api-keys', {
        method: 'POST',
        body: { name: 'laptop' },
        key: aliceKey,
      });
      expect(created.status).toBe(201);
      expect(created.headers.get('cache-control')).toBe('no-store');
      expect(created.headers.get('x-content-type-options')).toBe('nosniff');
      const { key, apiKey } = created.body;
      expect(key).toMatch(/^or_/);
      expect((await server.api('/v1/me', { key })).status).toBe(200);

      const list = await server.api('/v1/api-keys', { key: aliceKey });
      const listed = list.body.items.find((item: { id: string }) => item.id === apiKey.id);
      expect(listed).toMatchObject({ name: 'laptop', revokedAt: null });
      expect(JSON.stringify(list.body)).not.toContain(key);

      expect((await server.api(`/v1/api-keys/${apiKey.id}`, { method: 'DELETE', key: bobKey })).status).toBe(
        404,
      );
      const revoked = await server.api(`/v1/api-keys/${apiKey.id}`, { method: 'DELETE', key: aliceKey });
      expect(revoked.status).toBe(200);
      expect(revoked.body.apiKey.revokedAt).not.toBeNull();
      expect((await server.api('/v1/me', { key })).status).toBe(401);
    });

    it('keeps the owner’s keys from an admin of the owner’s own workspace', async () => {
      const admin = await server.api('/v1/admin/users', {
        method: 'POST',
        body: { workspaceId: defaultWorkspaceId, email: 'deputy@example.com', role: 'admin' },
      });
      expect(admin.status).toBe(201);
      const deputyKey = admin.body.apiKey as string;
      const owner = (await server.api('/v1/me')).body.user.id as string;
      const listed = await server.api(`/v1/api-keys?userId=${owner}`, { key: deputyKey });
      expect(listed.status).toBe(403);
      const seeded = (await server.api('/v1/api-keys')).body.items[0].id as string;
      const revoked = await server.api(`/v1/api-keys/${seeded}`, { method: 'DELETE', key: deputyKey });
      expect(revoked.status).toBe(404);
      expect(revoked.body.error.code).toBe('api_key_not_found');
      expect((await server.api('/v1/me')).status).toBe(200);
      // The deputy still administers the workspace's other users' keys.
      const alice = (await server.api('/v1/me', { key: aliceKey })).body.user.id;
      expect((await server.api(`/v1/api-keys?userId=${alice}`, { key: deputyKey })).status).toBe(200);
    });

    it('lets an admin list the keys of a user of their workspace only', async () => {
      const alice = (await server.api('/v1/me', { key: aliceKey })).body.user.id;
      expect((await server.api(`/v1/api-keys?userId=${alice}`)).status).toBe(200);
      expect((await server.api(`/v1/api-keys?userId=${alice}`, { key: otherAdminKey })).status).toBe(404);
      expect((await server.api(`/v1/api-keys?userId=${alice}`, { key: bobKey })).status).toBe(403);
    });
  });

  describe('scoped tokens', () => {
    let chatId: string;
    let otherChatId: string;
    let otherRunId: string;

    const token = async (scopes: string[], chat = chatId, key = aliceKey) => {
      const response = await server.api('/v1/tokens', {
        method: 'POST',
        body: { chatId: chat, scopes },
        key,
      });
      return response;
    };

    beforeAll(async () => {
      chatId = await server.createChat(aliceKey);
      otherChatId = await server.createChat(aliceKey);
      otherRunId = (await server.startRun(otherChatId, { steps: 1, tokens: 2 }, aliceKey)).id;
      await server.waitForRun(otherRunId, undefined, aliceKey);
    });

    it('issues a token for the caller’s own chat only, for at most a day', async () => {
      const issued = await token(['read']);
      expect(issued.status).toBe(201);
      expect(issued.body.token).toMatch(/^ors_/);
      expect(Date.parse(issued.body.expiresAt)).toBeGreaterThan(Date.now());
      expect((await token(['read'], chatId, bobKey)).status).toBe(404);
      const tooLong = await server.api('/v1/tokens', {
        method: 'POST',
        body: { chatId, scopes: ['read'], ttlSeconds: 86_401 },
        key: aliceKey,
      });
      expect(tooLong.status).toBe(400);
      // It lives at least as long as asked (its expiry is rounded up to a whole second, not down).
      const asked = Date.now();
      const short = await server.api('/v1/tokens', {
        method: 'POST',
        body: { chatId, scopes: ['read'], ttlSeconds: 2 },
        key: aliceKey,
      });
      expect(Date.parse(short.body.expiresAt)).toBeGreaterThanOrEqual(asked + 2_000);
      // A token cannot mint tokens.
      expect((await token(['read'], chatId, issued.body.token)).status).toBe(403);
    });

    it('reads its own chat but not another chat of the same owner (404)', async () => {
      const read = (await token(['read'])).body.token as string;
      expect((await server.api(`/v1/chats/${chatId}`, { key: read })).status).toBe(200);
      expect((await server.api(`/v1/chats/${chatId}/messages`, { key: read })).status).toBe(200);
      expect((await server.api(`/v1/chats/${chatId}/runs`, { key: read })).status).toBe(200);
      for (const path of [
        `/v1/chats/${otherChatId}`,
        `/v1/chats/${otherChatId}/messages`,
        `/v1/runs/${otherRunId}`,
        `/v1/runs/${otherRunId}/steps`,
        `/v1/runs/${otherRunId}/stream`,
      ]) {
        expect((await server.api(path, { key: read })).status, path).toBe(404);
      }
      const inQuery = await fetch(`${server.url}/v1/runs/${otherRunId}/stream?access_token=${read}`);
      expect(inQuery.status).toBe(404);
      expect((await inQuery.json()).error.code).toBe('run_not_found');
      const write = (await token(['write'])).body.token as string;
      const stop = await server.api(`/v1/runs/${otherRunId}/stop`, { method: 'POST', key: write });
      expect(stop.status).toBe(404);
      // Routes outside a chat are not a token's.
      expect((await server.api('/v1/chats', { key: read })).status).toBe(403);
      expect((await server.api('/v1/me', { key: read })).status).toBe(403);
      expect((await server.api('/v1/api-keys', { key: read })).status).toBe(403);
    });

    it('refuses a write with a read token (403) and allows it with a write token', async () => {
      const read = (await token(['read'])).body.token as string;
      const body = { input: { text: script({ steps: 1, tokens: 2 }) } };
      const refused = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, key: read });
      expect(refused.status).toBe(403);
      expect((await server.api(`/v1/chats/${chatId}/runs`, { key: aliceKey })).body.items).toHaveLength(0);

      const write = (await token(['read', 'write'])).body.token as string;
      const started = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, key: write });
      expect(started.status).toBe(201);
      expect(started.body.run.chatId).toBe(chatId);
      const run = await server.waitForRun(started.body.run.id, undefined, read);
      expect(run.status).toBe('succeeded');
    });

    it('accepts ?access_token= with a scoped token on stream routes only, and never an API key', async () => {
      const read = (await token(['read'])).body.token as string;
      const runs = await server.api(`/v1/chats/${chatId}/runs`, { key: read });
      const runId = runs.body.items[0].id as string;

      const stream = await fetch(`${server.url}/v1/runs/${runId}/stream?access_token=${read}`);
      expect(stream.status).toBe(200);
      expect(stream.headers.get('content-type')).toContain('text/event-stream');
      expect(stream.headers.get('cache-control')).toContain('no-store');
      expect(stream.headers.get('x-content-type-options')).toBe('nosniff');
      const frames: string[] = [];
      for await (const frame of readSse(stream.body!)) frames.push(frame.data ?? '');
      expect(frames.at(-1)).toBe('[DONE]');

      const withKey = await fetch(`${server.url}/v1/runs/${runId}/stream?access_token=${aliceKey}`);
      expect(withKey.status).toBe(401);
      await withKey.body?.cancel();
      const elsewhere = await fetch(`${server.url}/v1/chats/${chatId}?access_token=${read}`);
      expect(elsewhere.status).toBe(401);
      await elsewhere.body?.cancel();
    });

    it('lets the typed client follow a run with a token, fetching a new one when the server refuses it', async () => {
      const tokens = ['ors_expired.token', (await token(['read'])).body.token as string];
      let calls = 0;
      const client = createOutrunClient({ baseUrl: server.url, auth: { getToken: () => tokens[calls++]! } });
      const runs = await client.listRuns(chatId);
      expect(calls).toBe(2);
      const events = [];
      for await (const event of client.followRun(runs.items[0]!.id)) events.push(event);
      expect(events.length).toBeGreaterThan(0);
      expect(calls).toBe(2);
    });

    it('stops working once the key that issued it is revoked', async () => {
      const created = await server.api('/v1/api-keys', {
        method: 'POST',
        body: { name: 'tokens' },
        key: aliceKey,
      });
      const issued = await token(['read'], chatId, created.body.key);
      expect((await server.api(`/v1/chats/${chatId}`, { key: issued.body.token })).status).toBe(200);
      await server.api(`/v1/api-keys/${created.body.apiKey.id}`, { method: 'DELETE', key: aliceKey });
      expect((await server.api(`/v1/chats/${chatId}`, { key: issued.body.token })).status).toBe(401);
    });
  });

  describe('CORS, headers and metrics', () => {
    it('answers a preflight from an allowed origin without credentials', async () => {
      const response = await fetch(`${server.url}/v1/chats`, {
        method: 'OPTIONS',
        headers: {
          origin: ALLOWED_ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization, content-type',
        },
      });
      expect(response.status).toBe(204);
      expect(response.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN);
      expect(response.headers.get('access-control-allow-headers')).toContain('authorization');
      expect(response.headers.get('access-control-allow-credentials')).toBeNull();
    });

    it('gives a disallowed origin no CORS headers', async () => {
      const preflight = await fetch(`${server.url}/v1/chats`, {
        method: 'OPTIONS',
        headers: { origin: 'http://evil.example.test', 'access-control-request-method': 'GET' },
      });
      expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
      const get = await fetch(`${server.url}/v1/me`, {
        headers: { origin: 'http://evil.example.test', authorization: `Bearer ${ADMIN_KEY}` },
      });
      expect(get.headers.get('access-control-allow-origin')).toBeNull();
      await get.body?.cancel();
    });

    it('lets an allowed origin read even a 401', async () => {
      const response = await fetch(`${server.url}/v1/me`, { headers: { origin: ALLOWED_ORIGIN } });
      expect(response.status).toBe(401);
      expect(response.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN);
      await response.body?.cancel();
    });

    it('sends nosniff everywhere and no-store on /v1', async () => {
      const me = await server.api('/v1/me');
      expect(me.headers.get('x-content-type-options')).toBe('nosniff');
      expect(me.headers.get('cache-control')).toBe('no-store');
      const unauthorized = await server.api('/v1/me', { key: null });
      expect(unauthorized.headers.get('x-content-type-options')).toBe('nosniff');
      expect(unauthorized.headers.get('cache-control')).toBe('no-store');
      const page = await fetch(`${server.url}/`, { headers: { accept: 'text/html' } });
      expect(page.headers.get('x-content-type-options')).toBe('nosniff');
      expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
      await page.body?.cancel();
      const health = await fetch(`${server.url}/healthz`);
      expect(health.headers.get('x-content-type-options')).toBe('nosniff');
      await health.body?.cancel();
    });

    it('sends the same security headers on every answer: the API, its errors, the page and health', async () => {
      const read = async (response: Response) => {
        await response.text();
        return response;
      };
      const answers = [
        await server.api('/v1/me'),
        await server.api('/v1/me', { key: null }),
        await server.api('/v1/no-such-route'),
        await read(await fetch(`${server.url}/`, { headers: { accept: 'text/html' } })),
        await read(await fetch(`${server.url}/healthz`)),
      ];
      const names = [
        'content-security-policy',
        'cross-origin-opener-policy',
        'cross-origin-resource-policy',
        'origin-agent-cluster',
        'referrer-policy',
        'strict-transport-security',
        'x-content-type-options',
        'x-dns-prefetch-control',
        'x-download-options',
        'x-frame-options',
        'x-permitted-cross-domain-policies',
        'x-xss-protection',
      ];
      // The page's policy is written by the page's route, the same directives spaced differently.
      const directives = (policy: string | null) => policy?.split(';').map((directive) => directive.trim());
      const headersOf = (response: { headers: Headers }) => ({
        ...Object.fromEntries(names.map((name) => [name, response.headers.get(name)])),
        'content-security-policy': directives(response.headers.get('content-security-policy')),
      });
      const first = headersOf(answers[0]!);
      expect(first).toMatchObject({
        'cross-origin-resource-policy': 'cross-origin',
        'strict-transport-security': 'max-age=31536000; includeSubDomains',
        'x-frame-options': 'SAMEORIGIN',
        'referrer-policy': 'no-referrer',
      });
      expect(first['content-security-policy']).toContain("frame-ancestors 'none'");
      expect(first['content-security-policy']).toContain("default-src 'self'");
      for (const answer of answers) {
        expect(headersOf(answer)).toEqual(first);
        expect(answer.headers.get('x-powered-by')).toBeNull();
      }
    });

    it('requires OUTRUN_METRICS_TOKEN for /metrics when it is set', async () => {
      expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
      const wrong = await fetch(`${server.url}/metrics`, {
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      });
      expect(wrong.status).toBe(401);
      const right = await fetch(`${server.url}/metrics`, {
        headers: { authorization: `Bearer ${METRICS_TOKEN}` },
      });
      expect(right.status).toBe(200);
      expect(await right.text()).toContain('# HELP');
    });

    it('serves the web app’s scripts compressed', async () => {
      const assets = fileURLToPath(new URL('../web/dist/assets/', import.meta.url));
      const script = existsSync(assets)
        ? readdirSync(assets).find((name) => name.endsWith('.js'))
        : undefined;
      if (!script) return;
      const response = await fetch(`${server.url}/assets/${script}`, {
        headers: { 'accept-encoding': 'br, gzip' },
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-encoding')).toMatch(/^(br|gzip)$/);
      await response.body?.cancel();
    });

    it('serves no source maps, even one a build left behind', async () => {
      const assets = join(fileURLToPath(new URL('../web/dist/assets/', import.meta.url)));
      const map = existsSync(assets) ? readdirSync(assets).find((name) => name.endsWith('.map')) : undefined;
      const response = await fetch(`${server.url}/assets/${map ?? 'index.js.map'}`);
      expect(response.status).toBe(404);
      await response.body?.cancel();
    });
  });
});
