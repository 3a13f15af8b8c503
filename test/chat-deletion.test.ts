import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentService } from '../src/agents/agent-service.ts';
import { ChatService } from '../src/chats/chat-service.ts';
import { RunEngine } from '../src/runs/run-engine.ts';
import { CHAT_START_GATE } from '../src/runs/run-service.ts';
import { STORE_KINDS } from './support/databases.ts';
import { captureLogger } from './support/logger.ts';
import { script } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { waitUntil } from './support/wait.ts';

/** Deleting a chat ends its runs, queued ones too, and no run begins in it afterwards. */
describe.each(STORE_KINDS)('deleting a chat on %s', (kind) => {
  let server: TestServer;
  const logs = captureLogger<{ code: string }>();

  beforeAll(async () => {
    server = await startTestServer(kind, { logger: logs.logger });
  });
  afterAll(async () => {
    await server?.close();
  });

  const runsOf = (chatId: string) =>
    server.outrun.db
      .selectFrom('runs')
      .select(['id', 'status', 'started_at'])
      .where('chat_id', '=', chatId)
      .orderBy('id')
      .execute();

  it('starts no continuation in a chat deleted as its parent run ended, and says so without an error', async () => {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'continuing',
        tools: [{ name: 'echo' }],
        budget: { maxSteps: 1, onExceeded: 'continue' },
        continuation: { maxRuns: 3 },
      },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    // The chat is deleted between the parent's ending and its continuation's start.
    const original = RunEngine.prototype.startContinuation;
    const spy = vi.spyOn(RunEngine.prototype, 'startContinuation').mockImplementation(async function (
      this: RunEngine,
      ...args
    ) {
      expect((await server.api(`/v1/chats/${chatId}`, { method: 'DELETE' })).status).toBe(204);
      return original.apply(this, args);
    });
    try {
      await server.startRun(chatId, { steps: 2, tokens: 2, tool: true });
      // The chat, and so its runs, answer 404 now: the outcome is read from the log and the rows.
      await waitUntil(() => spy.mock.settledResults.some((result) => result.type !== 'incomplete'));
      await waitUntil(() => logs.records.some((record) => record.msg.includes('continuation')));
    } finally {
      spy.mockRestore();
    }
    const runs = await runsOf(chatId);
    expect(runs.map((run) => run.status)).toEqual(['succeeded']);
    const said = logs.records.find((record) => record.msg.startsWith('no continuation'))!;
    expect(said).toMatchObject({ level: 40, code: 'chat_not_found' });
    expect(logs.records.filter((record) => record.level >= 50)).toEqual([]);
  });

  it('ends its active run and the runs queued behind it; none of them runs afterwards', async () => {
    const chatId = await server.createChat();
    const active = await server.startRun(chatId, { steps: 1, tokens: 400, delayMs: 10 });
    const slow = script({ steps: 1, tokens: 400, delayMs: 10 });
    const queued = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: slow }, multitask: 'enqueue' },
    });
    expect(queued.status, JSON.stringify(queued.body)).toBe(201);
    expect(queued.body.run.status).toBe('queued');
    await server.waitForRun(active.id, (run) => run.status === 'running');

    expect((await server.api(`/v1/chats/${chatId}`, { method: 'DELETE' })).status).toBe(204);
    // Long enough for a promoted queued run to have started and streamed.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const runs = await runsOf(chatId);
    expect(runs.map((run) => run.status)).toEqual(['aborted', 'aborted']);
    expect(runs.find((run) => run.id === queued.body.run.id)!.started_at).toBeNull();
  });

  it.runIf(kind === 'postgres')(
    'refuses a start that read the chat before its deletion committed and wrote after it',
    async () => {
      const chatId = await server.createChat();
      // Holding the chat's start gate stops a one-statement start inside its statement, after the snapshot
      // it checks the chat in was taken: the deletion commits while the start waits.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let gateTaken!: () => void;
      const taken = new Promise<void>((resolve) => (gateTaken = resolve));
      const holder = server.outrun.db.transaction().execute(async (tx) => {
        await sql`select pg_advisory_xact_lock(${CHAT_START_GATE}::int, hashtext(${chatId}))`.execute(tx);
        gateTaken();
        await held;
      });
      await taken;
      const start = server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: script({ tokens: 3 }) } },
      });
      await waitUntil(async () => {
        const { rows } = await sql<{ waiting: string }>`select count(*) as waiting from pg_locks
          where locktype = 'advisory' and not granted`.execute(server.outrun.db);
        return Number(rows[0]!.waiting) > 0;
      });
      expect((await server.api(`/v1/chats/${chatId}`, { method: 'DELETE' })).status).toBe(204);
      release();
      await holder;

      const started = await start;
      expect(started.status, JSON.stringify(started.body)).toBe(404);
      expect(started.body.error.code).toBe('chat_not_found');
      expect(await runsOf(chatId)).toEqual([]);
    },
  );
});

/** A change and a deletion of the same thing: each answers 2xx or 404, never 5xx, and never writes the gone row. */
describe.each(STORE_KINDS)('a change racing a deletion on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  const race = async (path: string, patch: Record<string, unknown>) => {
    const answers = await Promise.all([
      server.api(path, { method: 'PATCH', body: patch }),
      server.api(path, { method: 'DELETE' }),
    ]);
    expect(answers.map((answer) => answer.status)).toEqual([expect.toBeOneOf([200, 404]), 204]);
    expect((await server.api(path)).status).toBe(404);
  };

  it('answers a schedule, an agent and a chat changed while deleted with 200 or 404', async () => {
    for (let round = 0; round < 10; round++) {
      const chatId = await server.createChat();
      const schedule = await server.api(`/v1/chats/${chatId}/schedules`, {
        method: 'POST',
        body: { cron: '0 9 * * *', input: { text: 'hi' } },
      });
      await race(`/v1/schedules/${schedule.body.schedule.id}`, { enabled: false });
      const agent = await server.api('/v1/agents', { method: 'POST', body: { name: `agent ${round}` } });
      await race(`/v1/agents/${agent.body.agent.id}`, { instructions: 'changed' });
      await race(`/v1/chats/${chatId}`, { title: 'renamed' });
    }
  });

  it('writes nothing to a chat deleted, or an agent archived, between a change’s read and its write', async () => {
    const chatId = await server.createChat();
    const agentId = (await server.api('/v1/agents', { method: 'POST', body: { name: 'archived midway' } }))
      .body.agent.id as string;
    const db = server.outrun.db;
    // The service's read answers as before, then the row goes before the write.
    const goneAfterRead = async (
      service: { prototype: object },
      gone: () => Promise<unknown>,
      change: () => Promise<{ status: number }>,
    ) => {
      const prototype = service.prototype as { getRow: (...args: unknown[]) => Promise<unknown> };
      const read = prototype.getRow;
      const spy = vi.spyOn(prototype, 'getRow').mockImplementation(async function (this: unknown, ...args) {
        const row = await read.apply(this, args);
        await gone();
        return row;
      });
      try {
        return await change();
      } finally {
        spy.mockRestore();
      }
    };
    const renamed = await goneAfterRead(
      ChatService,
      () => db.updateTable('chats').set({ deleted_at: new Date() }).where('id', '=', chatId).execute(),
      () => server.api(`/v1/chats/${chatId}`, { method: 'PATCH', body: { title: 'too late' } }),
    );
    expect(renamed.status).toBe(404);
    const chat = await db
      .selectFrom('chats')
      .select('title')
      .where('id', '=', chatId)
      .executeTakeFirstOrThrow();
    expect(chat.title).not.toBe('too late');

    const changed = await goneAfterRead(
      AgentService,
      () => db.updateTable('agents').set({ archived_at: new Date() }).where('id', '=', agentId).execute(),
      () => server.api(`/v1/agents/${agentId}`, { method: 'PATCH', body: { instructions: 'too late' } }),
    );
    expect(changed.status).toBe(404);
    const agent = await db
      .selectFrom('agents')
      .select('instructions')
      .where('id', '=', agentId)
      .executeTakeFirstOrThrow();
    expect(agent.instructions).not.toBe('too late');
  });
});
