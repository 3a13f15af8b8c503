import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultPoint, Faults } from '../src/faults.ts';
import type { RunObject } from '../src/protocol/run.ts';
import { TransientDatabaseError } from '../src/store/transient.ts';
import { STORE_KINDS } from './support/databases.ts';
import { script } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

/** `multitask: "enqueue"` (DESIGN §4): queued runs, in order, promoted in the ending's own transaction. */
describe.each(STORE_KINDS)('queued runs on %s', (kind) => {
  let server: TestServer;
  const faults = new Faults();

  beforeAll(async () => {
    server = await startTestServer(kind, { faults, config: { leaseMs: 600 } });
  });
  afterAll(async () => {
    await server?.close();
  });
  afterEach(() => faults.clear());

  const enqueue = (chatId: string, tokens: number, delayMs = 0) =>
    server.api<{ run: RunObject }>(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ tokens, delayMs }) }, multitask: 'enqueue' },
    });

  /**
   * Starts, in a new chat of a new agent whose step budget of 1 continues (`continuation.maxRuns: 1`), a run
   * that wants three steps; returns the chat and the run as started.
   */
  const runOutOfSteps = async (
    name: string,
    agent: Record<string, unknown> = {},
    steps: Parameters<typeof script>[0] = { steps: 3, tokens: 2, tool: true },
  ) => {
    const created = await server.api('/v1/agents', {
      method: 'POST',
      body: { name, budget: { maxSteps: 1, onExceeded: 'continue' }, continuation: { maxRuns: 1 }, ...agent },
    });
    const chatId = (
      await server.api('/v1/chats', { method: 'POST', body: { agentId: created.body.agent.id } })
    ).body.chat.id as string;
    const first = (
      await server.api<{ run: RunObject }>(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: script(steps) } },
      })
    ).body.run;
    return { chatId, first };
  };

  it('queues concurrent sends behind the active run and runs them one at a time, in order', async () => {
    const chatId = await server.createChat();
    const active = (await enqueue(chatId, 20, 15)).body.run;
    expect(active.status).toBe('pending');
    const sends = await Promise.all(Array.from({ length: 5 }, (_, index) => enqueue(chatId, index + 1)));
    expect(sends.map((response) => response.status)).toEqual(Array(5).fill(201));
    expect(sends.map((response) => response.body.run.status)).toEqual(Array(5).fill('queued'));
    for (const response of sends) expect(response.body.run.queuedAt).not.toBeNull();

    // Every user message is stored at once, in the order the runs were created.
    const queuedIds = sends.map((response) => response.body.run.id).sort();
    const messages = (await server.api(`/v1/chats/${chatId}/messages?limit=100`)).body.items as {
      role: string;
      runId: string;
      status: string;
    }[];
    const userRuns = messages.filter((message) => message.role === 'user').map((message) => message.runId);
    expect(userRuns).toEqual([active.id, ...queuedIds]);
    expect(messages.filter((message) => message.status === 'queued')).toHaveLength(5);

    const finished = await Promise.all([active.id, ...queuedIds].map((id) => server.waitForRun(id)));
    expect(finished.map((run) => run.status)).toEqual(Array(6).fill('succeeded'));
    // One at a time and in order: each started after the one before it finished.
    for (let index = 1; index < finished.length; index++) {
      expect(Date.parse(finished[index]!.startedAt!)).toBeGreaterThanOrEqual(
        Date.parse(finished[index - 1]!.finishedAt!),
      );
    }
  });

  it('answers starts racing the active run’s end and its queued run’s promotion with 201 or 409 only', async () => {
    // A start is one statement that meets the unique index before the chat's lock; here the chat is busy
    // and its active run ends (locking the run, then the chat) and promotes the queued one as the starts
    // arrive. A start that took the chat's lock first would deadlock with that ending: a 500.
    //
    // One active run at a time is checked against an order the process observes, not the rows' timestamps: a
    // start's `startedAt` is the moment the server accepted it, and its statement may wait for the ending
    // before it (at the unique index, or for a pool connection) and commit after it, so under load it can
    // precede that ending's `finishedAt`. A run's loop begins after its start or claim committed, which the
    // index allows only once the run before it has ended, whose ending commits after it was issued: so each
    // run's loop must begin after the ending of the run before it was issued.
    const loopBegan = new Map<string, number>();
    const endingIssued = new Map<string, number>();
    const firstAt = (times: Map<string, number>) => (context: { runId?: string }) => {
      if (context.runId && !times.has(context.runId)) times.set(context.runId, performance.now());
    };
    faults.arm(FaultPoint.beforeLoop, firstAt(loopBegan));
    faults.arm(FaultPoint.settleBeforeCommit, firstAt(endingIssued));
    for (let round = 0; round < 6; round++) {
      const chatId = await server.createChat();
      const active = (await enqueue(chatId, 200, 5)).body.run;
      const queued = (await enqueue(chatId, 2)).body.run;
      expect(queued.status).toBe('queued');
      await server.waitForRun(active.id, (run) => run.status === 'running');
      const start = () =>
        server.api<{ run: RunObject }>(`/v1/chats/${chatId}/runs`, {
          method: 'POST',
          body: { input: { text: script({ tokens: 2 }) } },
        });
      const [stop, ...starts] = await Promise.all([
        server.api(`/v1/runs/${active.id}/stop`, { method: 'POST' }),
        ...Array.from({ length: 6 }, start),
      ]);
      expect(stop.status).toBe(200);
      const statuses = starts.map((response) => response.status);
      expect(
        statuses.every((status) => status === 201 || status === 409),
        String(statuses),
      ).toBe(true);
      // The queued run was promoted and ran; the runs that started ran to their end.
      const ran = [await server.waitForRun(active.id), await server.waitForRun(queued.id)];
      expect(ran[1]!.status).toBe('succeeded');
      for (const response of starts.filter((response) => response.status === 201)) {
        const run = await server.waitForRun(response.body.run.id);
        expect(run.status).toBe('succeeded');
        ran.push(run);
      }
      // One active run at a time: each run that executed began its loop after the one before it had ended.
      const executed = ran.filter((run) => loopBegan.has(run.id)).map((run) => run.id);
      executed.sort((a, b) => loopBegan.get(a)! - loopBegan.get(b)!);
      expect(executed.slice(0, 2)).toEqual([active.id, queued.id]);
      for (let index = 1; index < executed.length; index++) {
        const before = executed[index - 1]!;
        expect(endingIssued.get(before), `ending of ${before}`).toBeLessThanOrEqual(
          loopBegan.get(executed[index]!)!,
        );
      }
    }
  });

  it('cancels a queued run by its id, and every queued run with includeQueued', async () => {
    const chatId = await server.createChat();
    const active = (await enqueue(chatId, 500, 10)).body.run;
    const first = (await enqueue(chatId, 1)).body.run;
    const second = (await enqueue(chatId, 1)).body.run;
    const third = (await enqueue(chatId, 1)).body.run;
    const cancelled = await server.api(`/v1/runs/${first.id}/stop`, { method: 'POST' });
    expect(cancelled.body).toMatchObject({
      stopped: true,
      run: { status: 'aborted', error: { code: 'stopped' } },
    });

    const stopped = await server.api(`/v1/chats/${chatId}/stop`, {
      method: 'POST',
      body: { includeQueued: true },
    });
    expect(stopped.body).toMatchObject({ stopped: true, queuedCancelled: 2 });
    for (const run of [second, third]) {
      expect((await server.waitForRun(run.id)).status).toBe('aborted');
    }
    expect((await server.waitForRun(active.id)).status).toBe('aborted');
  });

  it('promotes the next run only with the ending that frees the chat: a failed ending promotes nothing', async () => {
    const chatId = await server.createChat();
    // Every try of the first run's ending fails before commit: neither it nor the promotion happens.
    faults.arm(FaultPoint.settleBeforeCommit, () => {
      throw new TransientDatabaseError();
    });
    const active = (await enqueue(chatId, 2)).body.run;
    const next = (await enqueue(chatId, 2)).body.run;
    await pollUntil(
      () => faults.hits(FaultPoint.settleBeforeCommit),
      (hits) => hits >= 6,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await server.api(`/v1/runs/${active.id}`)).body.run.status).toBe('running');
    expect((await server.api(`/v1/runs/${next.id}`)).body.run.status).toBe('queued');

    // Once the database takes the ending again, the sweeper finishes the run and the promotion follows.
    faults.clear();
    await new Promise((resolve) => setTimeout(resolve, 700));
    await server.outrun.engine.sweep({ all: false });
    expect((await server.waitForRun(active.id)).status).toBe('succeeded');
    expect((await server.waitForRun(next.id)).status).toBe('succeeded');
  });

  it('continues a run out of steps in a follow-up run, and stops the chain at continuation.maxRuns', async () => {
    const { chatId, first } = await runOutOfSteps('persistent', {
      tools: [{ name: 'echo' }, { name: 'current_time' }],
    });
    const ended = await server.waitForRun(first.id);
    expect(ended.status, JSON.stringify(ended.error)).toBe('succeeded');
    const runs = await pollUntil(
      async () => (await server.api(`/v1/chats/${chatId}/runs`)).body.items as RunObject[],
      (items) =>
        items.length === 2 && items.every((run) => ['succeeded', 'failed', 'aborted'].includes(run.status)),
    );
    const follow = runs.find((run) => run.id !== first.id)!;
    expect(follow).toMatchObject({ trigger: 'continue', parentRunId: first.id, status: 'succeeded' });
    // The follow-up also ran out of steps, but the chain had used its one continuation.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toHaveLength(2);
  });

  it('begins one follow-up a run owed, however many sweepers and starters race for it', async () => {
    // The owner never starts its follow-up, as if its process had died at this point.
    faults.arm(FaultPoint.beforeContinuation, () => {
      throw new Error('the process died here (simulated)');
    });
    const { chatId, first } = await runOutOfSteps('owed');
    expect((await server.waitForRun(first.id)).status).toBe('succeeded');
    await pollUntil(
      () => Promise.resolve(faults.hits(FaultPoint.beforeContinuation)),
      (hits) => hits > 0,
    );
    const { engine } = server.outrun;
    const owed = (await engine.runs.get(first.id))!;
    expect(owed.continuation_owed_at).not.toBeNull();
    // Within a lease of the ending the sweeper leaves the follow-up to its owner.
    await engine.sweep({ all: false });
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toHaveLength(1);

    await new Promise((resolve) => setTimeout(resolve, 700));
    const config = owed.config as unknown as Parameters<typeof engine.startContinuation>[1];
    const raced = await Promise.all([
      engine.sweep({ all: false }),
      ...Array.from({ length: 5 }, () => engine.startContinuation(owed, config)),
    ]);
    const followUps = raced.slice(1) as (RunObject | null)[];
    const runs = (await server.api(`/v1/chats/${chatId}/runs`)).body.items as RunObject[];
    expect(runs).toHaveLength(2);
    const follow = runs.find((run) => run.id !== first.id)!;
    expect(follow).toMatchObject({ trigger: 'continue', parentRunId: first.id });
    expect(followUps.map((run) => run?.id)).toEqual(Array(5).fill(follow.id));
    expect((await engine.runs.get(first.id))!.continuation_owed_at).toBeNull();
    expect((await server.waitForRun(follow.id)).status).toBe('succeeded');
    // Settled: a later sweep starts nothing more.
    await engine.sweep({ all: false });
    expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toHaveLength(2);
  });

  it('cancels a follow-up a run owes on a stop of its chat or of the run itself: the sweeper starts none', async () => {
    faults.arm(FaultPoint.beforeContinuation, () => {
      throw new Error('the process died here (simulated)');
    });
    const byChat = await runOutOfSteps('stopped by chat');
    const byRun = await runOutOfSteps('stopped by run');
    for (const { first } of [byChat, byRun])
      expect((await server.waitForRun(first.id)).status).toBe('succeeded');
    await pollUntil(
      () => Promise.resolve(faults.hits(FaultPoint.beforeContinuation)),
      (hits) => hits >= 2,
    );
    const { engine } = server.outrun;
    const owed = async (runId: string) => (await engine.runs.get(runId))!.continuation_owed_at;
    expect(await owed(byChat.first.id)).not.toBeNull();
    expect(await owed(byRun.first.id)).not.toBeNull();

    const chatStop = await server.api(`/v1/chats/${byChat.chatId}/stop`, { method: 'POST' });
    expect(chatStop.status).toBe(200);
    const runStop = await server.api(`/v1/runs/${byRun.first.id}/stop`, { method: 'POST' });
    expect(runStop.status).toBe(200);
    expect(await owed(byChat.first.id)).toBeNull();
    expect(await owed(byRun.first.id)).toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 700));
    await engine.sweep({ all: false });
    for (const { chatId } of [byChat, byRun]) {
      expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toHaveLength(1);
    }
  });

  it('defers a follow-up the minute’s run quota refused, and starts it once the quota has room', async () => {
    const quota = (value: Record<string, number> | null) =>
      server.api('/v1/workspaces/current/quota', { method: 'PATCH', body: { quota: value } });
    // The parent takes about half a second: the quota, set meanwhile, counts it and refuses its follow-up.
    const { chatId, first } = await runOutOfSteps(
      'rate limited',
      {},
      { steps: 3, tokens: 25, delayMs: 20, tool: true },
    );
    expect((await quota({ runsPerMinute: 1 })).status).toBe(200);
    try {
      expect((await server.waitForRun(first.id)).status).toBe('succeeded');
      const { db } = server.outrun;
      const owedAt = async () =>
        (
          await db
            .selectFrom('runs')
            .select('continuation_owed_at')
            .where('id', '=', first.id)
            .executeTakeFirstOrThrow()
        ).continuation_owed_at;
      await pollUntil(owedAt, (at) => at !== null && at.getTime() > Date.now());
      expect((await server.api(`/v1/chats/${chatId}/runs`)).body.items).toHaveLength(1);
    } finally {
      await quota(null);
    }
    // The window has room again (as a minute later): the sweeper starts the follow-up.
    await sql`update runs set continuation_owed_at = now() - interval '1 hour' where id = ${first.id}`.execute(
      server.outrun.db,
    );
    await server.outrun.engine.sweep({ all: false });
    const runs = (await server.api(`/v1/chats/${chatId}/runs`)).body.items as RunObject[];
    expect(runs.find((run) => run.id !== first.id)).toMatchObject({
      trigger: 'continue',
      parentRunId: first.id,
    });
  });

  it('starts the follow-up even when the database drops its first insert after the parent ended', async () => {
    // The database fails the first insert of a follow-up with a connection error (SQLSTATE 08006), once: a
    // sequence counts the tries, as it is not rolled back with the failed insert.
    const { db } = server.outrun;
    await sql`create sequence continuation_tries`.execute(db);
    await sql`create or replace function fail_continuation_once() returns trigger language plpgsql as $$
      begin
        if new.trigger = 'continue' and nextval('continuation_tries') = 1 then
          raise exception 'connection lost (simulated)' using errcode = '08006';
        end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger fail_continuation_once before insert on runs
      for each row execute function fail_continuation_once()`.execute(db);
    try {
      const { chatId, first } = await runOutOfSteps('dogged');
      expect((await server.waitForRun(first.id)).status).toBe('succeeded');
      const runs = await pollUntil(
        async () => (await server.api(`/v1/chats/${chatId}/runs`)).body.items as RunObject[],
        (items) => items.length === 2,
      );
      expect(runs.find((run) => run.id !== first.id)).toMatchObject({
        trigger: 'continue',
        parentRunId: first.id,
      });
      const { rows } = await sql<{
        tries: string;
      }>`select last_value as tries from continuation_tries`.execute(db);
      expect(Number(rows[0]!.tries), 'the first try failed, the second began the follow-up').toBe(2);
    } finally {
      await sql`drop trigger fail_continuation_once on runs`.execute(db);
      await sql`drop function fail_continuation_once()`.execute(db);
      await sql`drop sequence continuation_tries`.execute(db);
    }
  });
});
