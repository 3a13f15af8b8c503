import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { ManualClock } from '../src/clock.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import type { RunObject } from '../src/runs/run-object.ts';
import { RunEngine } from '../src/runs/run-engine.ts';
import { ScheduleRunner } from '../src/triggers/schedule-runner.ts';
import type { ScheduleObject } from '../src/triggers/schedule-service.ts';
import { STORE_KINDS } from './support/databases.ts';
import { script } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** A run that answers at once. */
const QUICK = script({ steps: 1, tokens: 2 });
/** Long enough that a clock moved by minutes never makes a lease look expired. */
const LEASE_MS = 3_600_000;

/**
 * Another instance on the server's database, with its own queue and schedule runner, and its own bus unless
 * it is given the server's.
 */
async function secondInstance(
  server: TestServer,
  options: { clock?: ManualClock; bus?: MemoryBus; pollMs?: number } = {},
): Promise<Outrun> {
  const other = await createOutrun({
    clock: options.clock,
    database: server.outrun.database,
    logger: pino({ level: 'silent' }),
    bus: options.bus ?? new MemoryBus(),
    queue: new MemoryQueue(),
    singleInstance: false,
    config: {
      port: 0,
      host: '127.0.0.1',
      adminKey: ADMIN_KEY,
      leaseMs: LEASE_MS,
      schedulePollIntervalMs: options.pollMs,
    },
  });
  await other.start();
  return other;
}

async function runsOf(server: TestServer, chatId: string, key?: string): Promise<RunObject[]> {
  const response = await server.api<{ items: RunObject[] }>(`/v1/chats/${chatId}/runs?limit=100`, { key });
  return response.body.items;
}

async function createSchedule(
  server: TestServer,
  chatId: string,
  body: Record<string, unknown>,
  key?: string,
): Promise<ScheduleObject> {
  const response = await server.api<{ schedule: ScheduleObject }>(`/v1/chats/${chatId}/schedules`, {
    method: 'POST',
    body,
    key,
  });
  if (response.status !== 201)
    throw new Error(`create schedule: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body.schedule;
}

/**
 * Writes a one-shot due 1.5 s ahead through `server` (far enough that a busy machine does not refuse it as
 * past) and waits for the first run it starts.
 */
async function oneShotAndItsRun(
  server: TestServer,
): Promise<{ chatId: string; schedule: ScheduleObject; run: RunObject }> {
  const chatId = await server.createChat();
  const schedule = await createSchedule(server, chatId, {
    at: new Date(Date.now() + 1500).toISOString(),
    input: { text: QUICK },
  });
  const [run] = await pollUntil(
    () => runsOf(server, chatId),
    (runs) => runs.length > 0,
    { timeoutMs: 10_000 },
  );
  expect(run).toMatchObject({ trigger: 'schedule', scheduleId: schedule.id });
  return { chatId, schedule, run: run! };
}

/** A one-shot written through `server` starts its run within a second of its due time. */
async function expectOneShotOnTime(server: TestServer): Promise<void> {
  const { schedule, run } = await oneShotAndItsRun(server);
  const lateMs = new Date(run!.createdAt).getTime() - new Date(schedule.at!).getTime();
  expect(lateMs).toBeGreaterThanOrEqual(0);
  expect(lateMs).toBeLessThan(1_000);
}

async function getSchedule(server: TestServer, scheduleId: string): Promise<ScheduleObject> {
  return (await server.api<{ schedule: ScheduleObject }>(`/v1/schedules/${scheduleId}`)).body.schedule;
}

describe.each(STORE_KINDS)('schedules on %s', (kind) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function server(
    options: { clock?: ManualClock; pollMs?: number; bus?: MemoryBus } = {},
  ): Promise<TestServer> {
    const started = await startTestServer(kind, {
      clock: options.clock,
      bus: options.bus,
      config: { leaseMs: LEASE_MS, schedulePollIntervalMs: options.pollMs ?? 50 },
    });
    cleanups.push(() => started.close());
    return started;
  }

  it('rejects bad schedules with a 400 naming the field, and writes nothing', async () => {
    const app = await server();
    const chatId = await app.createChat();
    const input = { text: 'hello' };
    const cases: [Record<string, unknown>, string][] = [
      [{ cron: 'not a cron', input }, 'cron'],
      [{ cron: '61 * * * *', input }, 'cron'],
      [{ cron: '0 9 * * *', timezone: 'Mars/Olympus', input }, 'timezone'],
      [{ at: new Date(Date.now() - 60_000).toISOString(), input }, 'at'],
      [{ at: 'tomorrow', input }, 'at'],
      [{ cron: '0 9 * * *', at: new Date(Date.now() + 60_000).toISOString(), input }, 'cron'],
      [{ input }, 'cron'],
      [{ cron: '0 9 * * *', input, colour: 'blue' }, 'colour'],
      [{ cron: '0 9 * * *' }, 'input'],
      [{ cron: '0 9 * * *', input, multitask: 'reject' }, 'multitask'],
    ];
    for (const [body, field] of cases) {
      const response = await app.api(`/v1/chats/${chatId}/schedules`, { method: 'POST', body });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.error.code).toBe('invalid_request');
      expect(response.body.error.message).toContain(field);
    }
    expect((await app.api(`/v1/chats/${chatId}/schedules`)).body.items).toEqual([]);
  });

  it("refuses an input over the context budget of the chat's agent on create and update, as a start would be", async () => {
    const app = await server();
    const agent = await app.api('/v1/agents', {
      method: 'POST',
      body: { name: 'small window', context: { maxTokens: 300 } },
    });
    const chatId = (await app.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    const tooLong = { text: 'lorem ipsum '.repeat(120) }; // about 360 tokens
    const created = await app.api(`/v1/chats/${chatId}/schedules`, {
      method: 'POST',
      body: { cron: '0 9 * * *', input: tooLong },
    });
    expect(created.status).toBe(400);
    expect(created.body.error).toMatchObject({ code: 'invalid_request', field: 'input', maxTokens: 300 });
    expect((await app.api(`/v1/chats/${chatId}/schedules`)).body.items).toEqual([]);

    const schedule = await app.api(`/v1/chats/${chatId}/schedules`, {
      method: 'POST',
      body: { cron: '0 9 * * *', input: { text: 'good morning' } },
    });
    expect(schedule.status).toBe(201);
    const patched = await app.api(`/v1/schedules/${schedule.body.schedule.id}`, {
      method: 'PATCH',
      body: { input: { parts: [{ type: 'text', text: tooLong.text }] } },
    });
    expect(patched.status).toBe(400);
    expect(patched.body.error).toMatchObject({ code: 'invalid_request', field: 'input' });
    const after = await app.api(`/v1/schedules/${schedule.body.schedule.id}`);
    expect(after.body.schedule.input).toEqual({ text: 'good morning' });
  });

  it('takes a cron of 5 fields, or 6 with seconds, and refuses any other count on create and update', async () => {
    const app = await server();
    const chatId = await app.createChat();
    const input = { text: 'hello' };
    const refusedCrons = [
      '* * * * * * *',
      '0 0 9 * * * 2030',
      '* * * *',
      '@daily',
      '*',
      '  * *\t* * * *  *  ',
    ];
    for (const cron of refusedCrons) {
      const response = await app.api(`/v1/chats/${chatId}/schedules`, {
        method: 'POST',
        body: { cron, input },
      });
      expect(response.status, cron).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'invalid_request', issues: [{ path: ['cron'] }] });
    }
    expect((await app.api(`/v1/chats/${chatId}/schedules`)).body.items).toEqual([]);

    // Whitespace around and between the fields is not a field.
    const five = await createSchedule(app, chatId, { cron: ' 0  9 * *\t1-5 ', input });
    const six = await createSchedule(app, chatId, { cron: '30 0 9 * * *', input });
    expect(new Date(six.nextRunAt!).getUTCSeconds()).toBe(30);
    for (const cron of refusedCrons) {
      const response = await app.api(`/v1/schedules/${five.id}`, { method: 'PATCH', body: { cron } });
      expect(response.status, cron).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'invalid_request', issues: [{ path: ['cron'] }] });
    }
    expect(await getSchedule(app, five.id)).toEqual(five);
  });

  it('keeps schedules private to the owner of their chat', async () => {
    const app = await server();
    const chatId = await app.createChat();
    const schedule = await createSchedule(app, chatId, {
      cron: '0 9 * * 1-5',
      timezone: 'Europe/Paris',
      input: { text: 'hi' },
    });
    expect(schedule).toMatchObject({ chatId, enabled: true, multitask: 'skip', trigger: 'schedule' });
    expect(new Date(schedule.nextRunAt!).getTime()).toBeGreaterThan(Date.now());

    const otherKey = await app.createUser('other@example.com');
    expect((await app.api(`/v1/schedules/${schedule.id}`, { key: otherKey })).status).toBe(404);
    expect(
      (
        await app.api(`/v1/schedules/${schedule.id}`, {
          method: 'PATCH',
          body: { enabled: false },
          key: otherKey,
        })
      ).status,
    ).toBe(404);
    expect((await app.api(`/v1/schedules/${schedule.id}`, { method: 'DELETE', key: otherKey })).status).toBe(
      404,
    );
    expect((await app.api(`/v1/chats/${chatId}/schedules`, { key: otherKey })).status).toBe(404);
    const foreign = await app.api(`/v1/chats/${chatId}/schedules`, {
      method: 'POST',
      body: { cron: '0 9 * * *', input: { text: 'x' } },
      key: otherKey,
    });
    expect(foreign.status).toBe(404);
    expect((await app.api(`/v1/schedules/sch_nope`)).body.error.code).toBe('invalid_id');

    const disabled = await app.api(`/v1/schedules/${schedule.id}`, {
      method: 'PATCH',
      body: { enabled: false },
    });
    expect(disabled.body.schedule).toMatchObject({ enabled: false, nextRunAt: null });
    const retimed = await app.api(`/v1/schedules/${schedule.id}`, {
      method: 'PATCH',
      body: { at: new Date(Date.now() + 3_600_000).toISOString(), enabled: true },
    });
    expect(retimed.body.schedule).toMatchObject({ cron: null, enabled: true });
    expect(retimed.body.schedule.nextRunAt).toBe(retimed.body.schedule.at);
    expect((await app.api(`/v1/schedules/${schedule.id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await app.api(`/v1/schedules/${schedule.id}`)).status).toBe(404);
  });

  it('fires a one-shot schedule once, as a run with trigger schedule, and disables it', async () => {
    const app = await server({ pollMs: 25 });
    const { chatId, schedule, run } = await oneShotAndItsRun(app);
    expect((await app.waitForRun(run.id)).status).toBe('succeeded');
    expect(await getSchedule(app, schedule.id)).toMatchObject({
      enabled: false,
      nextRunAt: null,
      lastRunId: run.id,
      lastResult: 'fired',
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await runsOf(app, chatId)).toHaveLength(1);
  });

  it('records a due time that runsPerMinute refuses as failed, beginning no run', async () => {
    const app = await server({ pollMs: 25 });
    const chatId = await app.createChat();
    await app.waitForRun((await app.startRun(chatId, { steps: 1, tokens: 1 })).id);
    const patched = await app.api('/v1/workspaces/current/quota', {
      method: 'PATCH',
      body: { quota: { runsPerMinute: 1 } },
    });
    expect(patched.status).toBe(200);
    const schedule = await createSchedule(app, chatId, {
      at: new Date(Date.now() + 1500).toISOString(),
      input: { text: QUICK },
    });
    const after = await pollUntil(
      () => getSchedule(app, schedule.id),
      (current) => current.lastResult !== null,
      { timeoutMs: 10_000 },
    );
    expect(after).toMatchObject({ lastResult: 'failed', lastRunId: null, enabled: false });
    expect(await runsOf(app, chatId)).toHaveLength(1);
  });

  it('disables, starting nothing, a schedule whose chat is deleted while it fires', async () => {
    const app = await server({ pollMs: 25 });
    const chatId = await app.createChat();
    const schedule = await createSchedule(app, chatId, {
      at: new Date(Date.now() + 500).toISOString(),
      input: { text: QUICK },
    });
    // The chat goes after the runner read it as live, before its start's statement.
    const startChatRun = RunEngine.prototype.startChatRun;
    const spy = vi.spyOn(RunEngine.prototype, 'startChatRun').mockImplementation(async function (
      this: RunEngine,
      options,
    ) {
      await app.outrun.db
        .updateTable('chats')
        .set({ deleted_at: new Date() })
        .where('id', '=', chatId)
        .execute();
      return startChatRun.call(this, options);
    });
    cleanups.push(async () => spy.mockRestore());
    const row = await pollUntil(
      () =>
        app.outrun.db
          .selectFrom('schedules')
          .selectAll()
          .where('id', '=', schedule.id)
          .executeTakeFirstOrThrow(),
      (current) => current.last_result !== null,
      { timeoutMs: 10_000 },
    );
    expect(row).toMatchObject({ enabled: false, next_run_at: null, last_result: 'chat_deleted' });
    expect(spy).toHaveBeenCalledTimes(1);
    expect(
      await app.outrun.db.selectFrom('runs').select('id').where('chat_id', '=', chatId).execute(),
    ).toEqual([]);
  });

  it('disables the schedules of a user removed from the workspace, starting nothing after', async () => {
    const app = await server({ pollMs: 25 });
    const removeWith = async (email: string) => {
      const workspaceId = (await app.api('/v1/me')).body.workspace.id as string;
      const created = await app.api('/v1/admin/users', { method: 'POST', body: { workspaceId, email } });
      expect(created.status).toBe(201);
      const key = created.body.apiKey as string;
      const chatId = await app.createChat(key);
      const schedule = await createSchedule(
        app,
        chatId,
        { cron: '* * * * * *', input: { text: QUICK } },
        key,
      );
      return { userId: created.body.user.id as string, chatId, schedule };
    };
    const row = (id: string) =>
      app.outrun.db.selectFrom('schedules').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    const runCount = async (chatId: string) =>
      (await app.outrun.db.selectFrom('runs').select('id').where('chat_id', '=', chatId).execute()).length;

    // Removed through the API: disabled in the same transaction.
    const leaver = await removeWith('leaver@example.com');
    await pollUntil(
      () => runCount(leaver.chatId),
      (count) => count > 0,
      { timeoutMs: 10_000 },
    );
    expect((await app.api(`/v1/admin/users/${leaver.userId}`, { method: 'DELETE' })).status).toBe(204);
    expect(await row(leaver.schedule.id)).toMatchObject({
      enabled: false,
      next_run_at: null,
      last_result: 'owner_removed',
    });
    const runsThen = await runCount(leaver.chatId);
    // A user removed before removals disabled schedules: the runner disables it at its next due time.
    const earlier = await removeWith('earlier@example.com');
    await app.outrun.db
      .updateTable('users')
      .set({ deleted_at: new Date() })
      .where('id', '=', earlier.userId)
      .execute();
    const disabled = await pollUntil(
      () => row(earlier.schedule.id),
      (current) => current.last_result !== null,
      { timeoutMs: 10_000 },
    );
    expect(disabled).toMatchObject({ enabled: false, next_run_at: null, last_result: 'owner_removed' });
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    expect(await runCount(leaver.chatId)).toBe(runsThen);
    expect(await runCount(earlier.chatId)).toBe(0);
  });

  it('never writes back as due a due time that fired while an edit was under way', async () => {
    const app = await server();
    const chatId = await app.createChat();
    const schedule = await createSchedule(app, chatId, { cron: '0 0 1 1 *', input: { text: QUICK } });
    const advanced = new Date(Date.parse(schedule.nextRunAt!) + 365 * 86_400_000);
    // A fire holds the row from its claim to its commit, which advances the due time; an edit of the input
    // alone made meanwhile must keep the advanced time.
    let edit: Promise<{ status: number }> | undefined;
    await app.outrun.db.transaction().execute(async (tx) => {
      await tx.selectFrom('schedules').select('id').where('id', '=', schedule.id).forUpdate().execute();
      edit = app.api(`/v1/schedules/${schedule.id}`, {
        method: 'PATCH',
        body: { input: { text: 'edited' } },
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      await tx
        .updateTable('schedules')
        .set({ next_run_at: advanced })
        .where('id', '=', schedule.id)
        .execute();
    });
    expect((await edit!).status).toBe(200);
    expect(await getSchedule(app, schedule.id)).toMatchObject({
      nextRunAt: advanced.toISOString(),
      input: { text: 'edited' },
    });
  });

  it('wakes at a due time this instance wrote, however long its poll', async () => {
    // A poll far longer than the test: the runner fires on time because the write nudged it and it then
    // slept until the due time it read.
    const app = await server({ pollMs: 600_000 });
    await expectOneShotOnTime(app);
  });

  it('fires on time a schedule that an instance gone away wrote, told over the bus', async () => {
    // Two instances on one bus (in-process here; the Redis bus keeps the same contract, test/bus.test.ts),
    // each with a poll far longer than the test. The writer's runner is stopped, as if it went away: the
    // other hears of the write, reads the due time and fires it on time.
    const bus = new MemoryBus();
    const app = await server({ pollMs: 600_000, bus });
    const other = await secondInstance(app, { bus, pollMs: 600_000 });
    cleanups.push(() => other.close({ graceMs: 0 }));
    await app.outrun.scheduler.stop();
    await expectOneShotOnTime(app);
  });

  it.skipIf(kind === 'pglite')(
    'looks again a second later, not at once, while another runner holds a due time',
    async () => {
      const app = await server({ pollMs: 600_000 });
      const chatId = await app.createChat();
      const schedule = await createSchedule(app, chatId, {
        at: new Date(Date.now() + 300).toISOString(),
        input: { text: QUICK },
      });
      let statements = 0;
      const counted = app.outrun.db.withPlugin({
        transformQuery: (args) => {
          statements += 1;
          return args.node;
        },
        transformResult: async (args) => args.result,
      });
      const runner = new ScheduleRunner({
        db: counted,
        engine: app.outrun.engine,
        logger: pino({ level: 'silent' }),
        pollIntervalMs: 600_000,
      });
      // Another runner's begin transaction holding the row: every claim of this due time is skipped.
      await app.outrun.db.transaction().execute(async (tx) => {
        await tx.selectFrom('schedules').select('id').where('id', '=', schedule.id).forUpdate().execute();
        await new Promise((resolve) => setTimeout(resolve, 400));
        await runner.start();
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        await runner.stop();
      });
      // A pass is two reads (due rows, the next due time); one every second, not a busy loop.
      expect(statements).toBeGreaterThanOrEqual(2);
      expect(statements).toBeLessThanOrEqual(6);
      // Released, the due time fires once: the runner that slept through it was told to look a second later.
      const runs = await pollUntil(
        () => runsOf(app, chatId),
        (items) => items.length > 0,
        { timeoutMs: 10_000 },
      );
      expect(runs).toHaveLength(1);
    },
  );

  it('fires a due time exactly once when two instances race for it', async () => {
    const clock = new ManualClock();
    const app = await server({ clock, pollMs: 5 });
    const other = await secondInstance(app, { clock });
    cleanups.push(() => other.close({ graceMs: 0 }));
    const chatId = await app.createChat();
    const schedule = await createSchedule(app, chatId, { cron: '* * * * *', input: { text: QUICK } });

    clock.advance(61_000);
    // Both runners poll on their own too; these ticks make them race on purpose.
    for (let round = 0; round < 5; round += 1) {
      await Promise.all([app.outrun.scheduler.tick(), other.scheduler.tick(), app.outrun.scheduler.tick()]);
    }
    const runs = await runsOf(app, chatId);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ trigger: 'schedule', scheduleId: schedule.id });
    const after = await getSchedule(app, schedule.id);
    expect(after.lastRunId).toBe(runs[0]!.id);
    expect(new Date(after.nextRunAt!).getTime()).toBeGreaterThan(clock.now().getTime());
    expect(await app.waitForRun(runs[0]!.id)).toMatchObject({ status: 'succeeded' });
  });

  it('fires once on catch-up after every instance was down across two due times', async () => {
    const clock = new ManualClock();
    const app = await server({ clock });
    const other = await secondInstance(app, { clock });
    cleanups.push(() => other.close({ graceMs: 0 }));
    const chatId = await app.createChat();
    const schedule = await createSchedule(app, chatId, { cron: '* * * * *', input: { text: QUICK } });

    await app.outrun.scheduler.stop();
    await other.scheduler.stop();
    clock.advance(150_000);
    await app.outrun.scheduler.start();
    await other.scheduler.start();

    const [run] = await pollUntil(
      () => runsOf(app, chatId),
      (runs) => runs.length > 0,
    );
    await app.waitForRun(run!.id);
    await Promise.all([app.outrun.scheduler.tick(), other.scheduler.tick()]);
    expect(await runsOf(app, chatId)).toHaveLength(1);
    const after = await getSchedule(app, schedule.id);
    expect(new Date(after.nextRunAt!).getTime()).toBeGreaterThan(clock.now().getTime());
    expect(after).toMatchObject({ lastRunId: run!.id, lastResult: 'fired', enabled: true });
  });

  describe('on a busy chat', () => {
    async function busyChat(app: TestServer): Promise<{ chatId: string; busy: RunObject }> {
      const chatId = await app.createChat();
      // About a minute of streaming: the chat stays busy until the test stops it.
      const busy = await app.startRun(chatId, { steps: 1, tokens: 3_000, delayMs: 20 });
      cleanups.push(async () => {
        await app.api(`/v1/chats/${chatId}/stop`, { method: 'POST', body: { includeQueued: true } });
      });
      return { chatId, busy };
    }

    /** A one-shot on the chat with `multitask`, due a second from now and fired by one pass a second later. */
    async function fireOneShot(
      app: TestServer,
      clock: ManualClock,
      chatId: string,
      multitask: 'enqueue' | 'interrupt',
    ): Promise<ScheduleObject> {
      const schedule = await createSchedule(app, chatId, {
        at: new Date(clock.now().getTime() + 1_000).toISOString(),
        input: { text: QUICK },
        multitask,
      });
      clock.advance(2_000);
      await app.outrun.scheduler.tick();
      return schedule;
    }

    it('skips the due time, records it, and moves on', async () => {
      const clock = new ManualClock();
      const app = await server({ clock });
      const { chatId, busy } = await busyChat(app);
      const schedule = await createSchedule(app, chatId, { cron: '* * * * *', input: { text: QUICK } });
      clock.advance(61_000);
      expect(await app.outrun.scheduler.tick()).toBe(1);
      expect((await runsOf(app, chatId)).map((run) => run.id)).toEqual([busy.id]);
      const after = await getSchedule(app, schedule.id);
      expect(after).toMatchObject({ lastResult: 'skipped', lastRunId: null, enabled: true });
      expect(new Date(after.nextRunAt!).getTime()).toBeGreaterThan(clock.now().getTime());
      expect(await app.api(`/v1/runs/${busy.id}`)).toMatchObject({ body: { run: { status: 'running' } } });
    });

    it('enqueues a run that starts once the active run ends', async () => {
      const clock = new ManualClock();
      const app = await server({ clock });
      const { chatId, busy } = await busyChat(app);
      const schedule = await fireOneShot(app, clock, chatId, 'enqueue');
      const queued = (await runsOf(app, chatId)).find((run) => run.id !== busy.id)!;
      expect(queued).toMatchObject({ status: 'queued', trigger: 'schedule', scheduleId: schedule.id });
      await app.api(`/v1/runs/${busy.id}/stop`, { method: 'POST' });
      expect(await app.waitForRun(queued.id)).toMatchObject({ status: 'succeeded' });
    });

    it('keeps at most one of an enqueue cron’s runs waiting: later due times are skipped while it is queued', async () => {
      const clock = new ManualClock();
      const app = await server({ clock });
      const { chatId, busy } = await busyChat(app);
      const schedule = await createSchedule(app, chatId, {
        cron: '* * * * *',
        input: { text: QUICK },
        multitask: 'enqueue',
      });
      clock.advance(61_000);
      expect(await app.outrun.scheduler.tick()).toBe(1);
      const queued = (await runsOf(app, chatId)).find((run) => run.id !== busy.id)!;
      expect(queued).toMatchObject({ status: 'queued', scheduleId: schedule.id });
      // Three more due times while the chat stays busy: each is recorded skipped, nothing more is queued.
      for (let due = 0; due < 3; due += 1) {
        clock.advance(60_000);
        expect(await app.outrun.scheduler.tick()).toBe(1);
        expect(await getSchedule(app, schedule.id)).toMatchObject({
          lastResult: 'skipped',
          lastRunId: queued.id,
          enabled: true,
        });
      }
      expect((await runsOf(app, chatId)).map((run) => run.id).sort()).toEqual([busy.id, queued.id].sort());
      // Once its run has left the queue, the schedule fires again.
      await app.api(`/v1/runs/${busy.id}/stop`, { method: 'POST' });
      expect(await app.waitForRun(queued.id)).toMatchObject({ status: 'succeeded' });
      clock.advance(60_000);
      expect(await app.outrun.scheduler.tick()).toBe(1);
      const after = await getSchedule(app, schedule.id);
      expect(after.lastResult).toBe('fired');
      expect(after.lastRunId).not.toBe(queued.id);
    });

    it('interrupts the active run and starts its own', async () => {
      const clock = new ManualClock();
      const app = await server({ clock });
      const { chatId, busy } = await busyChat(app);
      const schedule = await fireOneShot(app, clock, chatId, 'interrupt');
      expect(await app.waitForRun(busy.id)).toMatchObject({ status: 'aborted', error: { code: 'stopped' } });
      const fired = (await runsOf(app, chatId)).find((run) => run.id !== busy.id)!;
      expect(fired).toMatchObject({ trigger: 'schedule', scheduleId: schedule.id });
      expect(await app.waitForRun(fired.id)).toMatchObject({ status: 'succeeded' });
    });

    it('fires another chat’s schedule while an interrupt waits for its run to end', async () => {
      const clock = new ManualClock();
      const app = await server({ clock });
      const { chatId: busyChatId } = await busyChat(app);
      const idleChatId = await app.createChat();
      // The interrupt is due first, so a pass that fires in due order one at a time reaches it first.
      const at = (ms: number) => new Date(clock.now().getTime() + ms).toISOString();
      await createSchedule(app, busyChatId, {
        at: at(1_000),
        input: { text: QUICK },
        multitask: 'interrupt',
      });
      await createSchedule(app, idleChatId, { at: at(1_500), input: { text: QUICK } });
      clock.advance(2_000);
      // The busy run does not hear the stop, as one on an instance that went away would not until its lease
      // ran out: the interrupt waits (up to 10 s).
      const stop = vi
        .spyOn(app.outrun.engine, 'stopRun')
        .mockResolvedValue({ stopped: true, run: { status: 'running' } } as never);
      try {
        const began = Date.now();
        const pass = app.outrun.scheduler.tick();
        await pollUntil(
          async () => (await runsOf(app, idleChatId)).length,
          (count) => count === 1,
          { timeoutMs: 9_000 },
        );
        expect(Date.now() - began).toBeLessThan(3_000);
        // The busy run ends: the interrupt stops waiting, starts its own run, and the pass is over.
        stop.mockRestore();
        await app.api(`/v1/chats/${busyChatId}/stop`, { method: 'POST' });
        expect(await pass).toBe(2);
        expect(Date.now() - began).toBeLessThan(9_000);
      } finally {
        stop.mockRestore();
      }
    });

    it('skips an interrupt, stopping nothing, when runs are queued behind the active one', async () => {
      const clock = new ManualClock();
      const app = await server({ clock });
      const { chatId, busy } = await busyChat(app);
      const queued = await app.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: QUICK }, multitask: 'enqueue' },
      });
      expect(queued.body.run.status).toBe('queued');
      const schedule = await fireOneShot(app, clock, chatId, 'interrupt');
      expect(await getSchedule(app, schedule.id)).toMatchObject({ lastResult: 'skipped', lastRunId: null });
      expect((await app.api(`/v1/runs/${busy.id}`)).body.run.status).toBe('running');
      expect((await app.api(`/v1/runs/${queued.body.run.id}`)).body.run.status).toBe('queued');
      expect(await runsOf(app, chatId)).toHaveLength(2);
    });
  });

  it('lets a run wake its chat later with schedule_followup', async () => {
    const app = await server({ pollMs: 25 });
    const agent = await app.api('/v1/agents', {
      method: 'POST',
      body: { name: 'Follows up', tools: [{ name: 'schedule_followup' }] },
    });
    expect(agent.status).toBe(201);
    const chat = await app.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
    const chatId = chat.body.chat.id as string;
    const first = await app.startRun(chatId, {
      steps: 2,
      tokens: 2,
      tool: 'schedule_followup',
      toolInput: { inSeconds: 1, note: QUICK },
    });
    expect(await app.waitForRun(first.id)).toMatchObject({ status: 'succeeded' });
    const steps = await app.api(`/v1/runs/${first.id}/steps`);
    expect(JSON.stringify(steps.body)).toContain('sch_');

    const runs = await pollUntil(
      () => runsOf(app, chatId),
      (items) => items.length === 2,
    );
    const followup = runs.find((run) => run.id !== first.id)!;
    expect(followup).toMatchObject({ trigger: 'continue', parentRunId: first.id });
    expect(await app.waitForRun(followup.id)).toMatchObject({ status: 'succeeded' });
    const schedule = await getSchedule(app, followup.scheduleId!);
    expect(schedule).toMatchObject({ trigger: 'continue', parentRunId: first.id, enabled: false });
  });

  it('leaves schedule_followup out of the default agent', async () => {
    const app = await server();
    expect(app.outrun.tools.has('schedule_followup')).toBe(true);
    expect(app.outrun.agents.defaults().tools).not.toContain('schedule_followup');
  });

  it('starts the first run of a chat whose agent has autostart', async () => {
    const app = await server();
    const agent = await app.api('/v1/agents', {
      method: 'POST',
      body: { name: 'Greeter', autostart: { text: QUICK } },
    });
    const created = await app.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
    expect(created.status).toBe(201);
    expect(created.body.run).toMatchObject({ trigger: 'autostart', chatId: created.body.chat.id });
    expect(await app.waitForRun(created.body.run.id)).toMatchObject({ status: 'succeeded' });
    const messages = await app.api(`/v1/chats/${created.body.chat.id}/messages`);
    expect(messages.body.items[0]).toMatchObject({ role: 'user', parts: [{ type: 'text', text: QUICK }] });

    const plain = await app.api('/v1/chats', { method: 'POST', body: { title: 'no agent' } });
    expect(plain.body.run).toBeUndefined();
    expect(await runsOf(app, plain.body.chat.id)).toEqual([]);
  });
});
