import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createOutrunClient,
  OutrunApiError,
  type Me,
  type OutrunClient,
  type WebhookPayload,
} from '../../src/client/index.ts';
import { STORE_KINDS } from '../support/databases.ts';
import { script } from '../support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from '../support/test-server.ts';
import { pollUntil } from '../support/wait.ts';
import { startReceiver } from '../support/webhooks.ts';

/** The rejection of `promise`, which must be an `OutrunApiError`. */
async function apiError(promise: Promise<unknown>): Promise<OutrunApiError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(OutrunApiError);
  return error as OutrunApiError;
}

describe.each(STORE_KINDS)('the typed client on workspace routes on %s', (kind) => {
  let server: TestServer;
  let admin: OutrunClient;
  let member: OutrunClient;
  let adminMe: Me;
  let memberMe: Me;

  beforeAll(async () => {
    // The webhook receiver listens on loopback.
    server = await startTestServer(kind, { config: { allowPrivateUrls: true } });
    admin = createOutrunClient({ baseUrl: server.url, apiKey: ADMIN_KEY });
    member = createOutrunClient({
      baseUrl: server.url,
      apiKey: await server.createUser('member@example.com'),
    });
    adminMe = await admin.me();
    memberMe = await member.me();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('mints a scoped token that a browser client uses for that chat and nothing else', async () => {
    const chat = await admin.createChat({ title: 'shared with a browser' });
    const before = Date.now();
    const minted = await admin.createToken({ chatId: chat.id, scopes: ['read'], ttlSeconds: 600 });
    expect(minted.chatId).toBe(chat.id);
    expect(minted.scopes).toEqual(['read']);
    expect(minted.token).toMatch(/^ors_/);
    const after = Date.now();
    // The server rounds its clock up to the second before adding the 600 s: the token lives at least that.
    expect(Date.parse(minted.expiresAt)).toBeGreaterThanOrEqual(before + 600_000);
    expect(Date.parse(minted.expiresAt)).toBeLessThanOrEqual(after + 1_000 + 600_000);

    const browser = createOutrunClient({ baseUrl: server.url, auth: { token: minted.token } });
    expect(await browser.getChat(chat.id)).toMatchObject({ id: chat.id, title: 'shared with a browser' });
    expect((await browser.listMessages(chat.id)).items).toEqual([]);
    // A read token starts nothing, and reaches no route outside its chat.
    const write = await apiError(browser.startRun(chat.id, { input: { text: 'hi' } }));
    expect({ status: write.status, code: write.code }).toEqual({ status: 403, code: 'forbidden' });
    const other = await apiError(browser.me());
    expect({ status: other.status, code: other.code }).toEqual({ status: 403, code: 'forbidden' });

    const both = await admin.createToken({ chatId: chat.id, scopes: ['write', 'read'] });
    expect(both.scopes).toEqual(['write', 'read']);
    // Without `ttlSeconds` the token lives an hour.
    expect(Date.parse(both.expiresAt) - Date.now()).toBeGreaterThan(3_500_000);
  });

  it('reads a schedule by id exactly as createSchedule made it', async () => {
    const chat = await admin.createChat();
    const schedule = await admin.createSchedule(chat.id, {
      cron: '0 9 * * 1',
      timezone: 'Europe/Berlin',
      input: { text: 'weekly report' },
      enabled: false,
    });
    expect(schedule).toMatchObject({ chatId: chat.id, cron: '0 9 * * 1', timezone: 'Europe/Berlin' });
    expect(await admin.getSchedule(schedule.id)).toEqual(schedule);

    await admin.deleteSchedule(schedule.id);
    const gone = await apiError(admin.getSchedule(schedule.id));
    expect({ status: gone.status, code: gone.code }).toEqual({ status: 404, code: 'schedule_not_found' });
  });

  it('creates, lists and reads a webhook, delivers a finished run to it, and deletes it', async () => {
    const receiver = await startReceiver();
    try {
      const created = await admin.createWebhook({ url: receiver.url, events: ['run.succeeded'] });
      expect(created.secret).toMatch(/^whsec_/);
      expect(created.webhook).toMatchObject({ url: receiver.url, events: ['run.succeeded'], enabled: true });
      const webhookId = created.webhook.id;

      expect((await admin.listWebhooks({ limit: 100 })).items).toContainEqual(created.webhook);
      expect(await admin.getWebhook(webhookId)).toEqual(created.webhook);
      // Only admins read webhooks: a delivery carries another user's run.
      await expect(member.getWebhook(webhookId)).rejects.toMatchObject({ status: 403, code: 'forbidden' });
      expect(await admin.listWebhookDeliveries(webhookId)).toEqual({ items: [], nextCursor: null });

      const chat = await admin.createChat();
      const run = await admin.startRun(chat.id, { input: { text: script({ steps: 1, tokens: 2 }) } });
      expect((await server.waitForRun(run.id)).status).toBe('succeeded');
      const deliveries = await pollUntil(
        () => admin.listWebhookDeliveries(webhookId, { limit: 10 }),
        (page) => page.items[0]?.status === 'delivered',
      );
      expect(deliveries.items).toHaveLength(1);
      const delivery = deliveries.items[0]!;
      expect(delivery).toMatchObject({
        webhookId,
        runId: run.id,
        event: 'run.succeeded',
        attempts: 1,
        lastStatusCode: 200,
        lastError: null,
        nextAttemptAt: null,
      });
      const payload = delivery.payload as WebhookPayload;
      expect(payload.type).toBe('run.succeeded');
      expect((payload.data.run as { id: string }).id).toBe(run.id);

      // The receiver got that payload, signed with the secret createWebhook showed.
      expect(receiver.received).toHaveLength(1);
      const { headers, body } = receiver.received[0]!;
      const signed = new Webhook(created.secret).verify(body, {
        'webhook-id': String(headers['webhook-id']),
        'webhook-timestamp': String(headers['webhook-timestamp']),
        'webhook-signature': String(headers['webhook-signature']),
      });
      expect(signed).toMatchObject({ type: 'run.succeeded', data: { run: { id: run.id } } });

      expect(await admin.deleteWebhook(webhookId)).toBeUndefined();
      const gone = await apiError(admin.getWebhook(webhookId));
      expect({ status: gone.status, code: gone.code }).toEqual({ status: 404, code: 'webhook_not_found' });
      expect((await admin.listWebhooks()).items.map((webhook) => webhook.id)).not.toContain(webhookId);
    } finally {
      await receiver.close();
    }
  });

  it('changes a webhook, rotates its secret and sends a delivery again with the same id', async () => {
    const receiver = await startReceiver();
    const headersOf = (index: number) => {
      const { headers } = receiver.received[index]!;
      return {
        'webhook-id': String(headers['webhook-id']),
        'webhook-timestamp': String(headers['webhook-timestamp']),
        'webhook-signature': String(headers['webhook-signature']),
      };
    };
    try {
      const created = await admin.createWebhook({ url: receiver.url, events: ['run.failed'] });
      const webhookId = created.webhook.id;
      const updated = await admin.updateWebhook(webhookId, { events: ['run.succeeded'] });
      expect(updated).toEqual({ ...created.webhook, events: ['run.succeeded'] });
      const forbidden = await apiError(member.updateWebhook(webhookId, { enabled: false }));
      expect({ status: forbidden.status, code: forbidden.code }).toEqual({ status: 403, code: 'forbidden' });

      const rotated = await admin.rotateWebhookSecret(webhookId);
      expect(rotated.secret).toMatch(/^whsec_/);
      expect(rotated.secret).not.toBe(created.secret);
      expect(Date.parse(rotated.webhook.previousSecretExpiresAt ?? '')).toBeGreaterThan(Date.now());
      expect(await admin.getWebhook(webhookId)).toEqual(rotated.webhook);

      const chat = await admin.createChat();
      const run = await admin.startRun(chat.id, { input: { text: script({ steps: 1, tokens: 2 }) } });
      expect((await server.waitForRun(run.id)).status).toBe('succeeded');
      const [delivery] = (
        await pollUntil(
          () => admin.listWebhookDeliveries(webhookId),
          (page) => page.items[0]?.status === 'delivered',
        )
      ).items;
      // Either secret verifies it while the previous one still signs.
      for (const secret of [created.secret, rotated.secret]) {
        expect(new Webhook(secret).verify(receiver.received[0]!.body, headersOf(0))).toMatchObject({
          data: { run: { id: run.id } },
        });
      }

      const retried = await admin.retryDelivery(webhookId, delivery!.id);
      expect(retried).toMatchObject({ id: delivery!.id, status: 'pending', attempts: 0 });
      await pollUntil(
        () => receiver.received.length,
        (count) => count === 2,
      );
      expect(headersOf(1)['webhook-id']).toBe(delivery!.id);

      await admin.updateWebhook(webhookId, { enabled: false });
      const disabled = await apiError(admin.retryDelivery(webhookId, delivery!.id));
      expect({ status: disabled.status, code: disabled.code }).toEqual({
        status: 409,
        code: 'webhook_disabled',
      });
      await admin.deleteWebhook(webhookId);
    } finally {
      await receiver.close();
    }
  });

  it('sets, reads and clears the workspace quota', async () => {
    const set = await admin.setQuota({ tokensPerDay: 5_000 });
    expect(set.quota).toEqual({ tokensPerDay: 5_000 });
    expect(set.remaining).toEqual({ tokens: Math.max(0, 5_000 - set.usage.tokens), costUsd: null });
    expect(set.resetsInSeconds).toBeGreaterThan(0);
    expect(set.resetsInSeconds).toBeLessThanOrEqual(86_400);

    const read = await admin.getQuota();
    expect(read.quota).toEqual({ tokensPerDay: 5_000 });
    expect(read.usage.tokens).toBe(set.usage.tokens);
    // Any member of the workspace reads it.
    expect((await member.getQuota()).quota).toEqual({ tokensPerDay: 5_000 });

    const cleared = await admin.setQuota(null);
    expect(cleared.quota).toBeNull();
    expect(cleared.remaining).toEqual({ tokens: null, costUsd: null });
    expect((await admin.getQuota()).quota).toBeNull();
  });

  it('refuses a member setting the quota or creating a webhook with 403 forbidden, changing nothing', async () => {
    const quota = await apiError(member.setQuota({ tokensPerDay: 1 }));
    expect({ status: quota.status, code: quota.code }).toEqual({ status: 403, code: 'forbidden' });
    expect((await admin.getQuota()).quota).toBeNull();

    const url = 'https://93.184.216.34/member-hook';
    const webhook = await apiError(member.createWebhook({ url }));
    expect({ status: webhook.status, code: webhook.code }).toEqual({ status: 403, code: 'forbidden' });
    expect((await admin.listWebhooks()).items.map((item) => item.url)).not.toContain(url);
  });

  it('creates an API key that works at once, lists it, and revokes it so its client gets 401', async () => {
    const created = await admin.createApiKey({ name: 'deploy bot' });
    expect(created.apiKey).toMatchObject({ userId: adminMe.user.id, name: 'deploy bot', revokedAt: null });
    expect(created.key.startsWith(created.apiKey.prefix)).toBe(true);

    const bot = createOutrunClient({ baseUrl: server.url, apiKey: created.key });
    expect((await bot.me()).user).toEqual(adminMe.user);

    const listed = (await admin.listApiKeys()).find((key) => key.id === created.apiKey.id);
    expect(listed).toMatchObject({ name: 'deploy bot', prefix: created.apiKey.prefix, revokedAt: null });
    expect(JSON.stringify(await admin.listApiKeys())).not.toContain(created.key);

    // A workspace admin lists a member's keys; a member may not list another user's.
    const memberKeys = await admin.listApiKeys({ userId: memberMe.user.id });
    expect(memberKeys).toHaveLength(1);
    expect(memberKeys[0]!.userId).toBe(memberMe.user.id);
    const notTheirs = await apiError(member.listApiKeys({ userId: adminMe.user.id }));
    expect({ status: notTheirs.status, code: notTheirs.code }).toEqual({ status: 403, code: 'forbidden' });

    const revoked = await admin.revokeApiKey(created.apiKey.id);
    expect(revoked).toMatchObject({ id: created.apiKey.id, name: 'deploy bot' });
    expect(Number.isNaN(Date.parse(revoked.revokedAt ?? ''))).toBe(false);
    const refused = await apiError(bot.me());
    expect({ status: refused.status, code: refused.code }).toEqual({ status: 401, code: 'unauthorized' });
    expect((await admin.listApiKeys()).find((key) => key.id === created.apiKey.id)?.revokedAt).toBe(
      revoked.revokedAt,
    );
  });
});
