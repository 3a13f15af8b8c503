import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { sql } from 'kysely';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { newId } from '../src/ids.ts';
import type { RunObject } from '../src/runs/run-object.ts';
import { createDatabase, type DatabaseHandle } from '../src/store/database.ts';
import { WebhookDispatcher } from '../src/webhooks/webhook-dispatcher.ts';
import { recordWebhookEvent, startReceiver, type Received } from './support/webhooks.ts';
import { createPostgresDatabase, STORE_KINDS } from './support/databases.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

const silent = pino({ level: 'silent' });
const DAY_MS = 24 * 60 * 60_000;

/** A webhook receiver on 127.0.0.1 that accepts connections and never answers; `sockets` are the ones it took. */
async function startSilentReceiver(): Promise<{
  url: string;
  sockets: Socket[];
  close: () => Promise<void>;
}> {
  const sockets: Socket[] = [];
  const server = createTcpServer((socket) => void sockets.push(socket.on('error', () => {})));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    sockets,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function headersOf(received: Received): Record<string, string> {
  return Object.fromEntries(Object.entries(received.headers).map(([name, value]) => [name, String(value)]));
}

describe.each(STORE_KINDS)('webhook routes on %s', (kind) => {
  let server: TestServer;
  let memberKey: string;
  let outsiderKey: string;

  beforeAll(async () => {
    server = await startTestServer(kind);
    memberKey = await server.createUser('member@example.com');
    const workspace = await server.api('/v1/admin/workspaces', { method: 'POST', body: { name: 'Other' } });
    const outsider = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: 'eve@example.com', role: 'admin' },
    });
    outsiderKey = outsider.body.apiKey;
  });
  afterAll(async () => {
    await server?.close();
  });

  const countWebhooks = async () =>
    Number(
      (
        await server.outrun.db
          .selectFrom('webhooks')
          .select((eb) => eb.fn.countAll<string>().as('count'))
          .executeTakeFirstOrThrow()
      ).count,
    );

  it('creates a webhook for all four events by default and shows its secret only once', async () => {
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/hooks' },
    });
    expect(created.status).toBe(201);
    expect(created.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(created.body.webhook.events).toEqual([
      'run.succeeded',
      'run.failed',
      'run.aborted',
      'run.waiting',
    ]);
    const list = await server.api('/v1/webhooks');
    expect(list.body.items.map((webhook: { id: string }) => webhook.id)).toContain(created.body.webhook.id);
    expect(JSON.stringify(list.body)).not.toContain('whsec_');
    expect(JSON.stringify((await server.api(`/v1/webhooks/${created.body.webhook.id}`)).body)).not.toContain(
      'whsec_',
    );
  });

  it('refuses a bad scheme, a private or loopback address, credentials and an unknown field, naming them, and writes nothing', async () => {
    const before = await countWebhooks();
    const cases: [unknown, string][] = [
      [{ url: 'ftp://93.184.216.34/hooks' }, 'url'],
      [{ url: 'not a url' }, 'url'],
      [{ url: 'http://127.0.0.1:9/hooks' }, 'url'],
      [{ url: 'http://10.1.2.3/hooks' }, 'url'],
      [{ url: 'http://169.254.169.254/latest/meta-data' }, 'url'],
      [{ url: 'http://[::1]/hooks' }, 'url'],
      [{ url: 'http://localhost/hooks' }, 'url'],
      // Every member may list webhooks, URLs as they are: a password in one would be shown to them.
      [{ url: 'https://hooks:s3cret@93.184.216.34/hooks' }, 'url'],
      [{ url: 'https://token@93.184.216.34/hooks' }, 'url'],
      [{ url: 'https://93.184.216.34/hooks', secret: 'mine' }, 'secret'],
      [{ url: 'https://93.184.216.34/hooks', events: ['run.started'] }, 'events'],
    ];
    for (const [body, field] of cases) {
      const response = await server.api('/v1/webhooks', { method: 'POST', body });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.error.code).toBe('invalid_request');
      expect(response.body.error.message, JSON.stringify(body)).toContain(field);
    }
    expect(await countWebhooks()).toBe(before);
  });

  it('lets only a workspace admin read, create or delete, and hides a webhook from other workspaces', async () => {
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/tenancy', events: ['run.failed'] },
    });
    const id = created.body.webhook.id as string;

    const memberCreate = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/x' },
      key: memberKey,
    });
    expect(memberCreate.status).toBe(403);
    expect((await server.api(`/v1/webhooks/${id}`, { method: 'DELETE', key: memberKey })).status).toBe(403);
    // Reads too: a delivery carries its run, whoever's it is (chats are private to their owner).
    for (const path of ['/v1/webhooks', `/v1/webhooks/${id}`, `/v1/webhooks/${id}/deliveries`]) {
      const read = await server.api(path, { key: memberKey });
      expect(read.status, path).toBe(403);
      expect(read.body.error.code).toBe('forbidden');
    }

    for (const [method, path] of [
      ['GET', `/v1/webhooks/${id}`],
      ['GET', `/v1/webhooks/${id}/deliveries`],
      ['DELETE', `/v1/webhooks/${id}`],
    ] as const) {
      const response = await server.api(path, { method, key: outsiderKey });
      expect(response.status, `${method} ${path}`).toBe(404);
      expect(response.body.error.code).toBe('webhook_not_found');
    }
    const outsiderList = await server.api('/v1/webhooks', { key: outsiderKey });
    expect(outsiderList.body.items).toEqual([]);

    expect((await server.api(`/v1/webhooks/${id}`, { method: 'DELETE', key: ADMIN_KEY })).status).toBe(204);
    expect((await server.api(`/v1/webhooks/${id}`)).status).toBe(404);
  });

  const storedWebhook = (id: string) =>
    server.outrun.db.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  it('changes a webhook with PATCH, refusing what create refuses and an empty body, and writes nothing on a refusal', async () => {
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/patched', events: ['run.failed'] },
    });
    const id = created.body.webhook.id as string;
    const before = await storedWebhook(id);

    const cases: [unknown, string][] = [
      [{ url: 'ftp://93.184.216.34/hooks' }, 'url'],
      [{ url: 'not a url' }, 'url'],
      [{ url: 'http://127.0.0.1:9/hooks' }, 'url'],
      [{ url: 'http://169.254.169.254/latest/meta-data' }, 'url'],
      [{ url: 'https://hooks:s3cret@93.184.216.34/hooks' }, 'url'],
      [{ url: 'https://token@93.184.216.34/hooks' }, 'url'],
      [{ events: ['run.started'] }, 'events'],
      [{ events: [] }, 'events'],
      [{ enabled: 'no' }, 'enabled'],
      [{ enabled: false, secret: 'mine' }, 'secret'],
      [{ url: 'https://93.184.216.34/elsewhere', bogus: 1 }, 'bogus'],
      [{}, 'at least one of url, events and enabled'],
    ];
    for (const [body, field] of cases) {
      const response = await server.api(`/v1/webhooks/${id}`, { method: 'PATCH', body });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.error.code).toBe('invalid_request');
      expect(response.body.error.message, JSON.stringify(body)).toContain(field);
    }
    const noBody = await server.api(`/v1/webhooks/${id}`, { method: 'PATCH' });
    expect(noBody.status).toBe(400);
    expect(noBody.body.error.code).toBe('invalid_request');

    const member = await server.api(`/v1/webhooks/${id}`, {
      method: 'PATCH',
      body: { enabled: false },
      key: memberKey,
    });
    expect(member.status).toBe(403);
    expect(member.body.error.code).toBe('forbidden');
    const outsider = await server.api(`/v1/webhooks/${id}`, {
      method: 'PATCH',
      body: { enabled: false },
      key: outsiderKey,
    });
    expect(outsider.status).toBe(404);
    expect(outsider.body.error.code).toBe('webhook_not_found');
    expect(await storedWebhook(id)).toEqual(before);

    const changed = await server.api(`/v1/webhooks/${id}`, {
      method: 'PATCH',
      body: {
        url: 'https://93.184.216.34/moved',
        events: ['run.succeeded', 'run.succeeded'],
        enabled: false,
      },
    });
    expect(changed.status).toBe(200);
    expect(changed.body).toEqual({
      webhook: {
        id,
        url: 'https://93.184.216.34/moved',
        events: ['run.succeeded'],
        enabled: false,
        previousSecretExpiresAt: null,
        createdAt: created.body.webhook.createdAt,
      },
    });
    expect((await server.api(`/v1/webhooks/${id}`)).body).toEqual(changed.body);
    // One field alone leaves the others as they are; the secret never changes with a PATCH.
    const enabled = await server.api(`/v1/webhooks/${id}`, { method: 'PATCH', body: { enabled: true } });
    expect(enabled.body.webhook).toMatchObject({ url: 'https://93.184.216.34/moved', enabled: true });
    expect((await storedWebhook(id)).secret).toBe(before.secret);
    expect(JSON.stringify(enabled.body)).not.toContain('whsec_');
  });

  it('rotates a secret, shown once, keeping only the secret it replaced for 24 hours', async () => {
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/rotated' },
    });
    const id = created.body.webhook.id as string;
    const first = created.body.secret as string;
    expect(created.body.webhook.previousSecretExpiresAt).toBeNull();

    const before = Date.now();
    const rotated = await server.api(`/v1/webhooks/${id}/rotate-secret`, { method: 'POST' });
    expect(rotated.status).toBe(200);
    const second = rotated.body.secret as string;
    expect(second).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(second).not.toBe(first);
    const expiresAt = Date.parse(rotated.body.webhook.previousSecretExpiresAt);
    expect(expiresAt).toBeGreaterThanOrEqual(before + DAY_MS);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + DAY_MS);
    expect(await storedWebhook(id)).toMatchObject({ secret: second, previous_secret: first });
    // Never shown again: not by GET, not by the list.
    const shown = JSON.stringify([
      (await server.api(`/v1/webhooks/${id}`)).body,
      (await server.api('/v1/webhooks')).body,
    ]);
    expect(shown).toContain(rotated.body.webhook.previousSecretExpiresAt);
    expect(shown).not.toContain('whsec_');

    // A second rotation within the 24 hours: the secret it replaces is the one kept, the first is gone.
    const again = await server.api(`/v1/webhooks/${id}/rotate-secret`, { method: 'POST' });
    const third = again.body.secret as string;
    expect(await storedWebhook(id)).toMatchObject({ secret: third, previous_secret: second });
    expect(JSON.stringify(await storedWebhook(id))).not.toContain(first);
  });

  it('lets only a workspace admin change, rotate or retry, and hides them from other workspaces', async () => {
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/guarded' },
    });
    const id = created.body.webhook.id as string;
    const workspaceId = (await server.api('/v1/me')).body.workspace.id as string;
    const deliveryId = newId('delivery');
    await server.outrun.db
      .insertInto('webhook_deliveries')
      .values({
        id: deliveryId,
        webhook_id: id,
        workspace_id: workspaceId,
        run_id: null,
        event: 'run.failed',
        payload: JSON.stringify({ type: 'run.failed' }),
        status: 'failed',
        attempts: 9,
      })
      .execute();
    const storedDelivery = () =>
      server.outrun.db
        .selectFrom('webhook_deliveries')
        .selectAll()
        .where('id', '=', deliveryId)
        .executeTakeFirstOrThrow();
    const before = { webhook: await storedWebhook(id), delivery: await storedDelivery() };

    const writes = [
      ['PATCH', `/v1/webhooks/${id}`, { enabled: false }],
      ['POST', `/v1/webhooks/${id}/rotate-secret`, undefined],
      ['POST', `/v1/webhooks/${id}/deliveries/${deliveryId}/retry`, undefined],
    ] as const;
    for (const [method, path, body] of writes) {
      const member = await server.api(path, { method, body, key: memberKey });
      expect(member.status, `${method} ${path}`).toBe(403);
      const outsider = await server.api(path, { method, body, key: outsiderKey });
      expect(outsider.status, `${method} ${path}`).toBe(404);
      expect(outsider.body.error.code).toBe('webhook_not_found');
    }
    // A body on a route that takes none is refused before it acts.
    const withBody = await server.api(`/v1/webhooks/${id}/rotate-secret`, {
      method: 'POST',
      body: { secret: 'mine' },
    });
    expect(withBody.status).toBe(400);
    expect(withBody.body.error.message).toContain('secret');
    expect({ webhook: await storedWebhook(id), delivery: await storedDelivery() }).toEqual(before);

    // A delivery of another webhook, an unknown one and a malformed id.
    const other = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: 'https://93.184.216.34/other' },
    });
    const otherId = other.body.webhook.id as string;
    for (const [path, status, code] of [
      [`/v1/webhooks/${otherId}/deliveries/${deliveryId}/retry`, 404, 'delivery_not_found'],
      [`/v1/webhooks/${id}/deliveries/${newId('delivery')}/retry`, 404, 'delivery_not_found'],
      [`/v1/webhooks/${newId('webhook')}/deliveries/${deliveryId}/retry`, 404, 'webhook_not_found'],
      [`/v1/webhooks/${id}/deliveries/nope/retry`, 400, 'invalid_id'],
      [`/v1/webhooks/${id}/deliveries/${id}/retry`, 400, 'invalid_id'],
      [`/v1/webhooks/nope/deliveries/${deliveryId}/retry`, 400, 'invalid_id'],
    ] as const) {
      const response = await server.api(path, { method: 'POST' });
      expect(response.status, path).toBe(status);
      expect(response.body.error.code, path).toBe(code);
    }
    expect(await storedDelivery()).toEqual(before.delivery);
  });
});

describe.each(STORE_KINDS)('webhook delivery on %s', (kind) => {
  let server: TestServer;
  let run: RunObject;
  let workspaceId: string;
  const dispatchers: WebhookDispatcher[] = [];
  const receivers: { close: () => Promise<void> }[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { allowPrivateUrls: true } });
    // The test drives its own dispatchers, with a fast retry schedule.
    await server.outrun.webhookDispatcher.stop();
    const chatId = await server.createChat();
    run = await server.waitForRun((await server.startRun(chatId, { steps: 1, tokens: 2 })).id);
    workspaceId = (await server.api('/v1/me')).body.workspace.id;
  });
  afterEach(async () => {
    await Promise.all(dispatchers.splice(0).map((dispatcher) => dispatcher.stop()));
    await Promise.all(receivers.splice(0).map((receiver) => receiver.close()));
  });
  afterAll(async () => {
    await server?.close();
  });

  const createWebhook = async (url: string, events?: string[]) => {
    const created = await server.api('/v1/webhooks', { method: 'POST', body: { url, events } });
    expect(created.status).toBe(201);
    return { id: created.body.webhook.id as string, secret: created.body.secret as string };
  };
  /** Removes the webhooks and pending deliveries of earlier tests, for tests that count claims. */
  /**
   * A clock a second ahead, for a dispatcher called right after a delivery is recorded: the delivery's due time
   * is the database's clock, which may be later than this process's within the same millisecond.
   */
  const aheadOfTheDatabase = () => new Date(Date.now() + 1_000);
  const forgetEarlierWebhooks = async () => {
    await server.outrun.db.deleteFrom('webhooks').execute();
    await server.outrun.db
      .updateTable('webhook_deliveries')
      .set({ status: 'failed' })
      .where('status', '=', 'pending')
      .execute();
  };
  const dispatcher = (options: {
    retrySchedule: number[];
    pollIntervalMs?: number;
    batchSize?: number;
    timeoutMs?: number;
    perWebhook?: number;
    deliveryRetentionMs?: number;
    pruneIntervalMs?: number;
    now?: () => Date;
  }) => {
    const created = new WebhookDispatcher({
      db: server.outrun.db,
      logger: silent,
      metrics: server.outrun.metrics,
      allowPrivateUrls: true,
      pollIntervalMs: 10,
      jitter: 0,
      ...options,
    });
    dispatchers.push(created);
    return created;
  };

  it('does not deliver to a name that resolved public when checked and private when dialled', async () => {
    await forgetEarlierWebhooks();
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url.replace('127.0.0.1', 'localhost'), ['run.succeeded']);
    await server.outrun.db
      .transaction()
      .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.succeeded', run }));
    // DNS rebinding: the check before the attempt is told a public address; the connection resolves
    // `localhost` for itself and gets 127.0.0.1.
    const checked: string[] = [];
    const sender = new WebhookDispatcher({
      db: server.outrun.db,
      logger: silent,
      retrySchedule: [],
      resolve: async (hostname) => {
        checked.push(hostname);
        return ['93.184.216.34'];
      },
    });
    dispatchers.push(sender);
    await sender.dispatchDue();
    expect(checked).toEqual(['localhost']);
    expect(receiver.received).toEqual([]);
    const delivery = await server.outrun.db
      .selectFrom('webhook_deliveries')
      .select(['status', 'last_error'])
      .where('webhook_id', '=', webhook.id)
      .executeTakeFirstOrThrow();
    expect(delivery.status).toBe('failed');
    expect(delivery.last_error).toMatch(/resolves to (127\.0\.0\.1|::1), a private/);
    await forgetEarlierWebhooks();
  });

  /**
   * A webhook on `run.failed` whose receiver never answers, with `due` deliveries recorded, beside one on
   * `run.succeeded` whose receiver answers 204 (nothing recorded for it yet).
   */
  const silentBesideAnswering = async (due: number) => {
    await forgetEarlierWebhooks();
    const silent = await startSilentReceiver();
    receivers.push(silent);
    await createWebhook(silent.url, ['run.failed']);
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    await createWebhook(receiver.url, ['run.succeeded']);
    for (let i = 0; i < due; i++) {
      await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.failed', run });
    }
    return { sockets: silent.sockets, receiver };
  };

  it('sends past a receiver that never answers, however many of its deliveries are due', async () => {
    // The silent receiver's deliveries are the oldest, more of them than there are slots.
    const { sockets, receiver } = await silentBesideAnswering(6);
    for (let i = 0; i < 6; i++) {
      await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    }
    const started = Date.now();
    // Four slots, two per webhook: the silent receiver's 5 s timeout holds two of them, never all four.
    dispatcher({
      retrySchedule: [],
      pollIntervalMs: 600_000,
      batchSize: 4,
      timeoutMs: 5_000,
      perWebhook: 2,
    }).start();
    await pollUntil(
      () => receiver.received.length,
      (count) => count === 6,
      { timeoutMs: 4_000 },
    );
    expect(Date.now() - started).toBeLessThan(4_000);
    // All six went out while two attempts, and no more, waited on the silent receiver.
    expect(sockets.length).toBe(2);
    // Those attempts fail now rather than at their timeout, so the dispatcher stops at once.
    for (const socket of sockets) socket.destroy();
    await forgetEarlierWebhooks();
  });

  it('does not pass again for an attempt that frees no room a pass waits for', async () => {
    // The silent receiver is at its limit with more of its deliveries due: a pass waits for its room only.
    const { sockets, receiver } = await silentBesideAnswering(4);
    const sender = dispatcher({
      retrySchedule: [],
      pollIntervalMs: 600_000,
      timeoutMs: 5_000,
      perWebhook: 2,
    });
    sender.start();
    await pollUntil(
      () => sockets.length,
      (count) => count === 2,
    );
    const passes = vi.spyOn(sender, 'claimDue');
    const started = Date.now();
    // Deliveries to the answering webhook, one at a time, each nudging as a run's ending does.
    for (let i = 1; i <= 5; i++) {
      await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
      sender.nudge();
      await pollUntil(
        () => receiver.received.length,
        (count) => count === i,
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // One pass per nudge; none for the attempts recorded, which free no room the silent webhook waits for.
    // Besides: the pass right after the first, which the first's give-back of the silent webhook's extra
    // deliveries (due at once) asks for, and which can begin after the spy on a loaded machine; and, since that
    // backlog stays due, one pass a second (`retryDelay`) when the five rounds take longer than one. A pass
    // per recorded attempt, the fault this guards against, would make ten.
    const timerPasses = Math.floor((Date.now() - started) / 1000);
    expect(passes.mock.calls.length).toBeLessThanOrEqual(5 + 1 + timerPasses);
    for (const socket of sockets) socket.destroy();
    await forgetEarlierWebhooks();
  });

  it('sends a backlog larger than the per-webhook limit as fast as the receiver answers', async () => {
    await forgetEarlierWebhooks();
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    await createWebhook(receiver.url, ['run.succeeded']);
    for (let i = 0; i < 12; i++) {
      await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    }
    const started = Date.now();
    // Two at a time: each attempt recorded makes room for the next at once, not at the next poll (1 s).
    dispatcher({ retrySchedule: [], pollIntervalMs: 600_000, batchSize: 4, perWebhook: 2 }).start();
    await pollUntil(
      () => receiver.received.length,
      (count) => count === 12,
      { timeoutMs: 5_000 },
    );
    // A wake-up missed waits for the pass a second later.
    expect(Date.now() - started).toBeLessThan(1_000);
    await forgetEarlierWebhooks();
  });

  it('claims a backlog no faster than its webhook has room, not a batch per attempt', async () => {
    await forgetEarlierWebhooks();
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    await createWebhook(receiver.url, ['run.succeeded']);
    const backlog = 30;
    for (let i = 0; i < backlog; i++) {
      await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    }
    const batchSize = 10;
    const sender = dispatcher({ retrySchedule: [], pollIntervalMs: 600_000, batchSize, perWebhook: 2 });
    const claims = vi.spyOn(sender, 'claimDue');
    sender.start();
    await pollUntil(
      () => receiver.received.length,
      (count) => count === backlog,
      { timeoutMs: 5_000 },
    );
    let claimed = 0;
    for (const result of claims.mock.results) claimed += await (result.value as Promise<number>);
    // Each delivery claimed once, plus at most one batch taken before the backlog was known and given back.
    // Before, every attempt recorded claimed a batch of the backlog again and gave back all but one.
    expect(claimed).toBeLessThanOrEqual(backlog + batchSize);
    await forgetEarlierWebhooks();
  });

  it('retries when the retry schedule says, however long its poll', async () => {
    await forgetEarlierWebhooks();
    const receiver = await startReceiver((n) => (n === 1 ? 500 : 204));
    receivers.push(receiver);
    await createWebhook(receiver.url);
    await server.outrun.db
      .transaction()
      .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.succeeded', run }));
    // After the first attempt the dispatcher sleeps until the retry's due time, not for ten minutes.
    dispatcher({ retrySchedule: [300], pollIntervalMs: 600_000 }).start();
    await pollUntil(
      () => receiver.received.length,
      (count) => count >= 2,
      { timeoutMs: 10_000 },
    );
    const gapMs = receiver.received[1]!.at - receiver.received[0]!.at;
    expect(gapMs).toBeGreaterThanOrEqual(250);
    expect(gapMs).toBeLessThan(1_500);
    await forgetEarlierWebhooks();
  });

  it.skipIf(kind === 'pglite')(
    'looks again a second later, not at once, while another dispatcher claims a due delivery',
    async () => {
      await forgetEarlierWebhooks();
      const receiver = await startReceiver(() => 204);
      receivers.push(receiver);
      await createWebhook(receiver.url);
      await server.outrun.db
        .transaction()
        .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.succeeded', run }));
      const sender = dispatcher({ retrySchedule: [], pollIntervalMs: 600_000 });
      const passes = vi.spyOn(sender, 'claimDue');
      // Another dispatcher's claim statement holding the row: this one's claims skip it.
      await server.outrun.db.transaction().execute(async (tx) => {
        await tx
          .selectFrom('webhook_deliveries')
          .select('id')
          .where('status', '=', 'pending')
          .forUpdate()
          .execute();
        sender.start();
        await new Promise((resolve) => setTimeout(resolve, 1_500));
      });
      expect(passes.mock.calls.length).toBeGreaterThanOrEqual(1);
      expect(passes.mock.calls.length).toBeLessThanOrEqual(3);
      // Released, the delivery is sent by the dispatcher that was told to look again soon.
      await pollUntil(
        () => receiver.received.length,
        (count) => count === 1,
        { timeoutMs: 10_000 },
      );
      await forgetEarlierWebhooks();
    },
  );

  it('delivers on the third try to a receiver that fails twice, signed so standardwebhooks verifies it', async () => {
    const receiver = await startReceiver((n) => (n <= 2 ? 500 : 204));
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url);
    const recorded = await server.outrun.db
      .transaction()
      .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.succeeded', run }));
    expect(recorded).toBe(1);
    dispatcher({ retrySchedule: [20, 20, 20] }).start();

    await pollUntil(
      () => receiver.received.length,
      (count) => count >= 3,
    );
    const deliveries = await pollUntil(
      async () => (await server.api(`/v1/webhooks/${webhook.id}/deliveries`)).body.items,
      (items) => items[0]?.status === 'delivered',
    );
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]).toMatchObject({
      webhookId: webhook.id,
      runId: run.id,
      event: 'run.succeeded',
      status: 'delivered',
      attempts: 3,
      lastStatusCode: 204,
      lastError: null,
    });
    expect(receiver.received).toHaveLength(3);
    const ids = new Set(receiver.received.map((request) => request.headers['webhook-id']));
    expect(ids).toEqual(new Set([deliveries[0].id]));

    const last = receiver.received[2]!;
    const payload = new Webhook(webhook.secret).verify(last.body, headersOf(last)) as {
      type: string;
      data: { run: RunObject };
    };
    expect(payload.type).toBe('run.succeeded');
    expect(payload.data.run).toEqual(run);
    expect(last.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(() =>
      new Webhook(`whsec_${Buffer.alloc(24, 1).toString('base64')}`).verify(last.body, headersOf(last)),
    ).toThrow();

    const metrics = await server.outrun.metrics.registry.getSingleMetricAsString(
      'outrun_webhook_deliveries_total',
    );
    expect(metrics).toContain('result="delivered"');
    expect(metrics).toContain('result="retry"');
  });

  it('gives up and marks a delivery failed when its retry schedule runs out, recording the last answer', async () => {
    const receiver = await startReceiver(() => 503);
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url, ['run.failed']);
    await server.outrun.db
      .transaction()
      .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.failed', run }));
    dispatcher({ retrySchedule: [10] }).start();
    const [delivery] = await pollUntil(
      async () => (await server.api(`/v1/webhooks/${webhook.id}/deliveries`)).body.items,
      (items) => items[0]?.status === 'failed',
    );
    expect(delivery).toMatchObject({ attempts: 2, lastStatusCode: 503, nextAttemptAt: null });
    expect(delivery.lastError).toContain('HTTP 503');
    expect(receiver.received).toHaveLength(2);
  });

  it('deletes finished deliveries past their retention, on the first pass and then hourly, never a pending one', async () => {
    const receiver = await startReceiver(() => 200);
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url, ['run.failed']);
    const daysAgo = (days: number) => sql<Date>`now() - make_interval(days => ${days})`;
    const insert = (status: 'pending' | 'delivered' | 'failed', createdDaysAgo: number, due = false) => {
      const id = newId('delivery');
      return server.outrun.db
        .insertInto('webhook_deliveries')
        .values({
          id,
          webhook_id: webhook.id,
          workspace_id: workspaceId,
          run_id: run.id,
          event: 'run.failed',
          payload: JSON.stringify({ type: 'run.failed' }),
          status,
          attempts: 1,
          // A pending one is due only when asked: else no pass claims it for a day.
          next_attempt_at:
            status !== 'pending'
              ? daysAgo(createdDaysAgo)
              : sql<Date>`now() + ${due ? sql`interval '0 days'` : sql`interval '1 day'`}`,
          created_at: daysAgo(createdDaysAgo),
        })
        .execute()
        .then(() => id);
    };
    const old = [await insert('delivered', 40), await insert('failed', 31), await insert('delivered', 35)];
    const kept = [await insert('pending', 40), await insert('delivered', 29), await insert('failed', 1)];
    const listed = async () =>
      ((await server.api(`/v1/webhooks/${webhook.id}/deliveries`)).body.items as { id: string }[])
        .map((item) => item.id)
        .sort();

    expect(await listed()).toEqual([...old, ...kept].sort());
    // The pass loop prunes on its first pass, then not again within the interval.
    const pruning = dispatcher({
      retrySchedule: [10],
      deliveryRetentionMs: 30 * DAY_MS,
      pruneIntervalMs: DAY_MS,
    });
    pruning.start();
    await pollUntil(listed, (ids) => ids.length === kept.length);
    expect(await listed()).toEqual([...kept].sort());
    const expired = await insert('delivered', 50);
    // A later pass (it sends a due delivery) leaves it: the next prune is an interval away.
    const due = await insert('pending', 0, true);
    pruning.nudge();
    await pollUntil(
      () => Promise.resolve(receiver.received.length),
      (count) => count === 1,
    );
    expect(receiver.received[0]!.headers['webhook-id']).toBe(due);
    expect(await listed()).toContain(expired);
    // A prune asked for directly deletes it, and reports how many.
    expect(await pruning.pruneDeliveries()).toBe(1);
    expect(await listed()).toEqual([...kept, due].sort());
  });

  it('does not follow a redirect: a 3xx answer is a failed attempt', async () => {
    const receiver = await startReceiver(() => 307);
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url, ['run.aborted']);
    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.aborted', run });
    dispatcher({ retrySchedule: [] }).start();
    const [delivery] = await pollUntil(
      async () => (await server.api(`/v1/webhooks/${webhook.id}/deliveries`)).body.items,
      (items) => items[0]?.status === 'failed',
    );
    expect(delivery).toMatchObject({ attempts: 1, lastStatusCode: 307 });
  });

  it('records a delivery only for subscribed webhooks, and only if the transaction commits', async () => {
    const receiver = await startReceiver(() => 200);
    receivers.push(receiver);
    const waiting = await createWebhook(receiver.url, ['run.waiting']);
    const count = async () =>
      (await server.api(`/v1/webhooks/${waiting.id}/deliveries`)).body.items.length as number;

    await expect(
      server.outrun.db.transaction().execute(async (tx) => {
        expect(await recordWebhookEvent(tx, { workspaceId, event: 'run.waiting', run })).toBeGreaterThan(0);
        throw new Error('status change rolled back');
      }),
    ).rejects.toThrow('rolled back');
    expect(await count()).toBe(0);

    await server.outrun.db
      .transaction()
      .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.succeeded', run }));
    expect(await count()).toBe(0);
    await server.outrun.db
      .transaction()
      .execute((tx) => recordWebhookEvent(tx, { workspaceId, event: 'run.waiting', run }));
    expect(await count()).toBe(1);
    expect(
      await recordWebhookEvent(server.outrun.db, { workspaceId: 'ws_none', event: 'run.waiting', run }),
    ).toBe(0);
  });

  it('retries a crashed dispatcher’s claim once its lease expires, and fences the stale attempt', async () => {
    await forgetEarlierWebhooks();
    const webhook = await createWebhook('http://127.0.0.1:9/unused', ['run.succeeded']);
    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    const start = new Date(Date.now() + 1_000);
    const claimLeaseMs = 60_000;
    let answerStale: (response: Response) => void = () => {};
    const stale = new WebhookDispatcher({
      db: server.outrun.db,
      logger: silent,
      allowPrivateUrls: true,
      claimLeaseMs,
      now: () => start,
      fetch: () => new Promise<Response>((resolve) => (answerStale = resolve)),
    });
    const staleAttempt = stale.dispatchDue();
    const claimed = await pollUntil(
      () =>
        server.outrun.db
          .selectFrom('webhook_deliveries')
          .selectAll()
          .where('webhook_id', '=', webhook.id)
          .executeTakeFirstOrThrow(),
      (row) => row.next_attempt_at.getTime() === start.getTime() + claimLeaseMs,
    );
    expect(claimed.status).toBe('pending');

    // Before the lease runs out nobody else may take it; after, another dispatcher does.
    const sent: string[] = [];
    const fresh = (now: Date) =>
      new WebhookDispatcher({
        db: server.outrun.db,
        logger: silent,
        allowPrivateUrls: true,
        now: () => now,
        fetch: async (_url, init) => {
          sent.push(String(new Headers(init?.headers).get('webhook-id')));
          return new Response(null, { status: 200 });
        },
      });
    expect(await fresh(new Date(start.getTime() + claimLeaseMs - 1)).dispatchDue()).toBe(0);
    expect(await fresh(new Date(start.getTime() + claimLeaseMs + 1)).dispatchDue()).toBe(1);
    expect(sent).toEqual([claimed.id]);

    answerStale(new Response('late', { status: 500 }));
    await staleAttempt;
    const [delivery] = (await server.api(`/v1/webhooks/${webhook.id}/deliveries`)).body.items;
    expect(delivery).toMatchObject({ status: 'delivered', attempts: 1, lastStatusCode: 200 });
  });

  it('ends an attempt within a claim lease shorter than the request timeout, so none is sent twice', async () => {
    await forgetEarlierWebhooks();
    const webhook = await createWebhook('http://127.0.0.1:9/unused', ['run.succeeded']);
    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    const sent: string[] = [];
    const dispatcher = new WebhookDispatcher({
      db: server.outrun.db,
      logger: silent,
      allowPrivateUrls: true,
      claimLeaseMs: 400,
      now: aheadOfTheDatabase,
      // A receiver that answers after 5 s, long past the lease: the attempt gives up at half the lease.
      fetch: (_url, init) => {
        sent.push(String(new Headers(init?.headers).get('webhook-id')));
        return new Promise<Response>((resolve, reject) => {
          const timer = setTimeout(() => resolve(new Response(null, { status: 200 })), 5_000);
          init?.signal?.addEventListener('abort', () => {
            clearTimeout(timer);
            reject(init.signal!.reason);
          });
        });
      },
    });
    const started = Date.now();
    expect(await dispatcher.dispatchDue()).toBe(1);
    expect(Date.now() - started).toBeLessThan(2_000);
    // Another pass after the lease finds it waiting for its retry, not claimable again.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await dispatcher.dispatchDue()).toBe(0);
    expect(sent).toHaveLength(1);
    const [delivery] = (await server.api(`/v1/webhooks/${webhook.id}/deliveries`)).body.items;
    expect(delivery).toMatchObject({ status: 'pending', attempts: 1 });
    expect(delivery.lastError).toBe('The request timed out.');
  });

  it('spaces retries by the schedule with jitter, on the injected clock', async () => {
    await forgetEarlierWebhooks();
    const webhook = await createWebhook('http://127.0.0.1:9/unused', ['run.failed']);
    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.failed', run });
    const now = new Date(Date.now() + 1_000);
    const failing = (random: number) =>
      new WebhookDispatcher({
        db: server.outrun.db,
        logger: silent,
        allowPrivateUrls: true,
        now: () => now,
        random: () => random,
        fetch: async () => new Response(null, { status: 500 }),
      });
    expect(await failing(1).dispatchDue()).toBe(1);
    const row = await server.outrun.db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('webhook_id', '=', webhook.id)
      .executeTakeFirstOrThrow();
    // The first retry waits 5 s, spread by at most 20%: random() = 1 gives the upper bound.
    expect(row.next_attempt_at.getTime() - now.getTime()).toBe(6_000);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, last_status_code: 500 });
  });

  const deliveriesOf = async (webhookId: string) =>
    (await server.api(`/v1/webhooks/${webhookId}/deliveries`)).body.items as {
      id: string;
      status: string;
      attempts: number;
      lastStatusCode: number | null;
      lastError: string | null;
    }[];

  it('signs with the new and the previous secret for 24 hours after a rotation, then with the new one only', async () => {
    await forgetEarlierWebhooks();
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url, ['run.succeeded']);
    const rotated = await server.api(`/v1/webhooks/${webhook.id}/rotate-secret`, { method: 'POST' });
    expect(rotated.status).toBe(200);
    const secret = rotated.body.secret as string;
    const sender = dispatcher({ retrySchedule: [], now: aheadOfTheDatabase });

    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    expect(await sender.dispatchDue()).toBe(1);
    const [during] = receiver.received;
    expect(String(during!.headers['webhook-signature']).split(' ')).toHaveLength(2);
    for (const verifying of [webhook.secret, secret]) {
      const payload = new Webhook(verifying).verify(during!.body, headersOf(during!)) as { type: string };
      expect(payload.type).toBe('run.succeeded');
    }
    expect(() =>
      new Webhook(`whsec_${Buffer.alloc(24, 1).toString('base64')}`).verify(during!.body, headersOf(during!)),
    ).toThrow();

    // The 24 hours are over.
    await server.outrun.db
      .updateTable('webhooks')
      .set({ previous_secret_expires_at: new Date(Date.now() - 1_000) })
      .where('id', '=', webhook.id)
      .execute();
    expect((await server.api(`/v1/webhooks/${webhook.id}`)).body.webhook.previousSecretExpiresAt).toBeNull();
    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.succeeded', run });
    expect(await sender.dispatchDue()).toBe(1);
    const after = receiver.received[1]!;
    expect(String(after.headers['webhook-signature'])).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(secret).verify(after.body, headersOf(after))).toMatchObject({ type: 'run.succeeded' });
    expect(() => new Webhook(webhook.secret).verify(after.body, headersOf(after))).toThrow();
    await forgetEarlierWebhooks();
  });

  it('records nothing for a disabled webhook and ends its pending deliveries failed; enabled again, it delivers', async () => {
    await forgetEarlierWebhooks();
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url, ['run.aborted']);
    const sender = dispatcher({ retrySchedule: [], now: aheadOfTheDatabase });
    expect(await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.aborted', run })).toBe(1);

    const disabled = await server.api(`/v1/webhooks/${webhook.id}`, {
      method: 'PATCH',
      body: { enabled: false },
    });
    expect(disabled.body.webhook.enabled).toBe(false);
    const [pending] = await deliveriesOf(webhook.id);
    expect(pending).toMatchObject({ status: 'failed', attempts: 0, lastError: 'The webhook was disabled.' });
    expect(await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.aborted', run })).toBe(0);
    expect(await sender.dispatchDue()).toBe(0);
    expect(receiver.received).toEqual([]);

    await server.api(`/v1/webhooks/${webhook.id}`, { method: 'PATCH', body: { enabled: true } });
    expect(await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.aborted', run })).toBe(1);
    expect(await sender.dispatchDue()).toBe(1);
    expect(receiver.received).toHaveLength(1);
    const deliveries = await deliveriesOf(webhook.id);
    expect(deliveries.map((delivery) => delivery.status)).toEqual(['delivered', 'failed']);
    expect(receiver.received[0]!.headers['webhook-id']).toBe(deliveries[0]!.id);
    await forgetEarlierWebhooks();
  });

  it('sends a failed delivery again, with its id and a fresh schedule, once the receiver is back', async () => {
    await forgetEarlierWebhooks();
    let up = false;
    const receiver = await startReceiver(() => (up ? 204 : 500));
    receivers.push(receiver);
    const webhook = await createWebhook(receiver.url, ['run.failed']);
    await recordWebhookEvent(server.outrun.db, { workspaceId, event: 'run.failed', run });
    const [recorded] = await deliveriesOf(webhook.id);
    const retry = (deliveryId: string) =>
      server.api(`/v1/webhooks/${webhook.id}/deliveries/${deliveryId}/retry`, { method: 'POST' });

    // Pending, it is sent on its schedule: a retry asked for now is refused.
    const early = await retry(recorded!.id);
    expect(early.status).toBe(409);
    expect(early.body.error.code).toBe('delivery_pending');

    dispatcher({ retrySchedule: [10] }).start();
    await pollUntil(
      () => deliveriesOf(webhook.id),
      (items) => items[0]?.status === 'failed',
    );
    expect(receiver.received).toHaveLength(2);

    up = true;
    const retried = await retry(recorded!.id);
    expect(retried.status).toBe(200);
    expect(retried.body.delivery).toMatchObject({
      id: recorded!.id,
      status: 'pending',
      attempts: 0,
      lastStatusCode: null,
      lastError: null,
      deliveredAt: null,
    });
    expect(retried.body.delivery.nextAttemptAt).not.toBeNull();
    const [delivered] = await pollUntil(
      () => deliveriesOf(webhook.id),
      (items) => items[0]?.status === 'delivered',
    );
    expect(delivered).toMatchObject({ id: recorded!.id, attempts: 1, lastStatusCode: 204, lastError: null });
    expect(receiver.received).toHaveLength(3);
    expect(new Set(receiver.received.map((request) => request.headers['webhook-id']))).toEqual(
      new Set([recorded!.id]),
    );
    expect(
      new Webhook(webhook.secret).verify(receiver.received[2]!.body, headersOf(receiver.received[2]!)),
    ).toMatchObject({ type: 'run.failed' });

    // A delivered one goes again too; a disabled webhook's does not.
    expect((await retry(recorded!.id)).status).toBe(200);
    await pollUntil(
      () => receiver.received.length,
      (count) => count === 4,
    );
    await pollUntil(
      () => deliveriesOf(webhook.id),
      (items) => items[0]?.status === 'delivered',
    );
    await server.api(`/v1/webhooks/${webhook.id}`, { method: 'PATCH', body: { enabled: false } });
    const refused = await retry(recorded!.id);
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('webhook_disabled');
    expect((await deliveriesOf(webhook.id))[0]).toMatchObject({ status: 'delivered' });
    await forgetEarlierWebhooks();
  });
});

describe.skipIf(!process.env.DATABASE_URL)('webhook dispatchers racing on PostgreSQL', () => {
  it('delivers each delivery exactly once when two dispatchers on separate pools claim at once', async () => {
    const database = await createPostgresDatabase();
    const handles: DatabaseHandle[] = [];
    const receiver = await startReceiver(() => 200);
    const dispatchers: WebhookDispatcher[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        handles.push(await createDatabase({ databaseUrl: database.url, migrate: false, poolSize: 4 }));
      }
      const db = handles[0]!.db;
      const workspaceId = newId('workspace');
      await db.insertInto('workspaces').values({ id: workspaceId, name: 'race' }).execute();
      await db
        .insertInto('webhooks')
        .values({
          id: newId('webhook'),
          workspace_id: workspaceId,
          url: receiver.url,
          secret: `whsec_${Buffer.alloc(24, 7).toString('base64')}`,
          events: JSON.stringify(['run.succeeded']),
        })
        .execute();
      const total = 60;
      await db.transaction().execute(async (tx) => {
        for (let i = 0; i < total; i++) {
          await recordWebhookEvent(tx, { workspaceId, event: 'run.succeeded', run: { id: `run_${i}` } });
        }
      });
      for (const handle of handles) {
        const dispatcher = new WebhookDispatcher({
          db: handle.db,
          logger: silent,
          allowPrivateUrls: true,
          pollIntervalMs: 5,
          batchSize: 4,
          retrySchedule: [10],
        });
        dispatchers.push(dispatcher);
      }
      for (const dispatcher of dispatchers) dispatcher.start();

      await pollUntil(
        async () =>
          (await db.selectFrom('webhook_deliveries').select('id').where('status', '=', 'delivered').execute())
            .length,
        (delivered) => delivered === total,
      );
      const ids = receiver.received.map((request) => request.headers['webhook-id']);
      expect(ids).toHaveLength(total);
      expect(new Set(ids).size).toBe(total);
      const attempts = await db.selectFrom('webhook_deliveries').select('attempts').execute();
      expect(attempts.every((row) => row.attempts === 1)).toBe(true);
    } finally {
      await Promise.all(dispatchers.map((dispatcher) => dispatcher.stop()));
      await receiver.close();
      for (const handle of handles) await handle.close();
      await database.drop();
    }
  });
});

describe.each(STORE_KINDS)('webhooks of a run’s ending on %s', (kind) => {
  let server: TestServer;
  let passes: MockInstance<WebhookDispatcher['claimDue']>;
  const receivers: { close: () => Promise<void> }[] = [];

  beforeAll(async () => {
    passes = vi.spyOn(WebhookDispatcher.prototype, 'claimDue');
    // A poll far longer than the test: what the dispatcher sends, it sends because a run's ending nudged it.
    server = await startTestServer(kind, {
      config: { allowPrivateUrls: true, webhookPollIntervalMs: 600_000 },
    });
  });
  afterAll(async () => {
    passes.mockRestore();
    await Promise.all(receivers.splice(0).map((receiver) => receiver.close()));
    await server?.close();
  });

  it('sends a delivery as soon as the run ends, and costs no dispatch pass when nobody is subscribed', async () => {
    // The dispatcher's one pass at start-up, then nothing for ten minutes unless nudged.
    await pollUntil(
      () => passes.mock.results.length,
      (count) => count === 1,
    );
    await passes.mock.results[0]!.value;

    const unsubscribed = await server.waitForRun((await server.startRun(await server.createChat(), {})).id);
    expect(unsubscribed.status).toBe('succeeded');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(passes).toHaveBeenCalledTimes(1);

    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: receiver.url, events: ['run.succeeded'] },
    });
    expect(created.status).toBe(201);
    const subscribed = await server.waitForRun((await server.startRun(await server.createChat(), {})).id);
    await pollUntil(
      async () => receiver.received.length,
      (received) => received === 1,
      { timeoutMs: 10_000 },
    );
    expect(JSON.parse(receiver.received[0]!.body)).toMatchObject({
      type: 'run.succeeded',
      data: { run: { id: subscribed.id } },
    });
    expect(passes.mock.calls.length).toBeGreaterThan(1);
  });

  it("looks up the webhooks of the ending run's own workspace, whichever workspace ended a run before", async () => {
    // The one-statement ending is built once per status and kept: the workspace must be a bound value. This
    // workspace now has no webhook; a run of another that has one must still get its delivery recorded.
    const ours = await server.api<{ items: { id: string }[] }>('/v1/webhooks');
    for (const webhook of ours.body.items) {
      expect((await server.api(`/v1/webhooks/${webhook.id}`, { method: 'DELETE' })).status).toBe(204);
    }
    expect((await server.waitForRun((await server.startRun(await server.createChat(), {})).id)).status).toBe(
      'succeeded',
    );
    const workspace = await server.api('/v1/admin/workspaces', { method: 'POST', body: { name: 'Other' } });
    const admin = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: 'other@example.com', role: 'admin' },
    });
    const key = admin.body.apiKey as string;
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: receiver.url, events: ['run.succeeded'] },
      key,
    });
    expect(created.status).toBe(201);
    const run = await server.waitForRun(
      (await server.startRun(await server.createChat(key), {}, key)).id,
      undefined,
      key,
    );
    await pollUntil(
      async () => receiver.received.length,
      (received) => received === 1,
      { timeoutMs: 10_000 },
    );
    expect(JSON.parse(receiver.received[0]!.body)).toMatchObject({ data: { run: { id: run.id } } });
  });

  it('sends a retried delivery at once, without waiting for the next poll', async () => {
    const receiver = await startReceiver(() => 204);
    receivers.push(receiver);
    const created = await server.api('/v1/webhooks', {
      method: 'POST',
      body: { url: receiver.url, events: ['run.succeeded'] },
    });
    const webhookId = created.body.webhook.id as string;
    await server.waitForRun((await server.startRun(await server.createChat(), {})).id);
    const [delivery] = await pollUntil(
      async () => (await server.api(`/v1/webhooks/${webhookId}/deliveries`)).body.items,
      (items) => items[0]?.status === 'delivered',
      { timeoutMs: 10_000 },
    );
    const retried = await server.api(`/v1/webhooks/${webhookId}/deliveries/${delivery.id}/retry`, {
      method: 'POST',
    });
    expect(retried.status).toBe(200);
    // The poll is ten minutes: only the retry's nudge sends it within the test.
    await pollUntil(
      async () => receiver.received.length,
      (received) => received === 2,
      { timeoutMs: 10_000 },
    );
    expect(receiver.received.map((request) => request.headers['webhook-id'])).toEqual([
      delivery.id,
      delivery.id,
    ]);
  });
});
