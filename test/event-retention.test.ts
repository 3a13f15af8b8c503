import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIRST_PAGE, LogTruncatedError, RunFollower } from '../src/stream/run-follower.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

const RETENTION_DAYS = 3;

/**
 * `OUTRUN_EVENT_RETENTION_DAYS` (DESIGN §7): a finished run's events are deleted that many days after it
 * finished; the run, its steps and its messages stay, and its stream answers 410 `events_expired`.
 */
describe.each(STORE_KINDS)('event retention on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { eventRetentionDays: RETENTION_DAYS } });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A finished, compacted run of `chatId`, made to look as if it finished `daysAgo` days ago. */
  async function finishedRun(
    chatId: string,
    daysAgo: number,
    script: { steps: number; tokens: number } = { steps: 2, tokens: 3 },
  ): Promise<string> {
    const run = await server.startRun(chatId, script);
    await server.waitForRun(run.id);
    const { db } = server.outrun;
    await pollUntil(
      async () =>
        (
          await db
            .selectFrom('runs')
            .select('events_compacted_at')
            .where('id', '=', run.id)
            .executeTakeFirst()
        )?.events_compacted_at,
      (compactedAt) => compactedAt !== null,
    );
    await db
      .updateTable('runs')
      .set({ finished_at: sql<Date>`now() - make_interval(days => ${daysAgo})` })
      .where('id', '=', run.id)
      .execute();
    return run.id;
  }

  async function storedEvents(runId: string): Promise<number> {
    const { db } = server.outrun;
    const rows = await db.selectFrom('run_events').select('seq').where('run_id', '=', runId).execute();
    const pages = await db
      .selectFrom('run_event_pages')
      .select('last_seq')
      .where('run_id', '=', runId)
      .execute();
    return rows.length + pages.length;
  }

  it('deletes the events of runs past their retention, keeping the run, its steps and its message', async () => {
    const chatId = await server.createChat();
    const old = await finishedRun(chatId, RETENTION_DAYS + 1);
    const recent = await finishedRun(chatId, RETENTION_DAYS - 1);
    expect(await storedEvents(old)).toBeGreaterThan(0);

    expect(await server.outrun.compactor.deleteExpired()).toBeGreaterThanOrEqual(1);

    expect(await storedEvents(old)).toBe(0);
    expect(await storedEvents(recent)).toBeGreaterThan(0);
    const stream = await server.fetch(`/v1/runs/${old}/stream`);
    expect(stream.status).toBe(410);
    expect(await stream.json()).toMatchObject({
      error: { code: 'events_expired', runId: old, deletedAt: expect.any(String) },
    });
    // Everything else about the run stays.
    expect((await server.api(`/v1/runs/${old}`)).body.run).toMatchObject({ id: old, status: 'succeeded' });
    expect((await server.api(`/v1/runs/${old}/steps`)).body.items).toHaveLength(2);
    const messages = (await server.api(`/v1/chats/${chatId}/messages`)).body.items as {
      runId: string | null;
      role: string;
      parts: { type: string; text?: string }[];
    }[];
    const answer = messages.find((message) => message.runId === old && message.role === 'assistant');
    expect(
      answer?.parts
        .filter((part) => part.type === 'text')
        .map((part) => part.text)
        .join(''),
    ).toBe(scriptedText(2, 3));
    // A run inside its retention replays whole.
    const replay = await collectStream(await server.fetch(`/v1/runs/${recent}/stream`));
    expect(replay.done).toBe(true);
    expect(streamedText(replay.events)).toBe(scriptedText(2, 3));
    // Nothing more to delete: the next pass finds no run.
    expect(await server.outrun.compactor.deleteExpired()).toBe(0);
  });

  it('ends a replay whose events are deleted under it, so that its reader reconnects and is told why', async () => {
    const chatId = await server.createChat();
    const runId = await finishedRun(chatId, RETENTION_DAYS - 1, { steps: 1, tokens: 300 });
    let delivered = 0;
    const follower = new RunFollower(
      { log: server.outrun.log, runId, isFinished: async () => true },
      {
        events: (events) => {
          delivered += events.length;
          // A slow reader: the follower pauses after its first page, as on a full socket.
          return false;
        },
        ping: () => true,
      },
    );
    const following = follower.run();
    await pollUntil(
      async () => delivered,
      (count) => count > 0,
    );
    expect(delivered).toBe(FIRST_PAGE);
    await server.outrun.db
      .updateTable('runs')
      .set({ finished_at: sql<Date>`now() - make_interval(days => ${RETENTION_DAYS + 1})` })
      .where('id', '=', runId)
      .execute();
    expect(await server.outrun.compactor.deleteExpired()).toBe(1);
    follower.resume();
    // Before, the follower found nothing more, went live and waited for events that would never come.
    await expect(following).rejects.toBeInstanceOf(LogTruncatedError);
    expect(delivered).toBe(FIRST_PAGE);
    expect((await server.fetch(`/v1/runs/${runId}/stream?after=${FIRST_PAGE}`)).status).toBe(410);
  });

  it('leaves an active run alone, however long ago it started', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 200, delayMs: 20 });
    await server.waitForRun(run.id, (r) => r.status === 'running');
    await server.outrun.db
      .updateTable('runs')
      .set({ created_at: sql<Date>`now() - make_interval(days => 30)` })
      .where('id', '=', run.id)
      .execute();
    await server.outrun.compactor.deleteExpired();
    expect(await storedEvents(run.id)).toBeGreaterThan(0);
    await server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' });
    await server.waitForRun(run.id);
  });

  it('deletes each run once when two passes race', async () => {
    const chatId = await server.createChat();
    const runs = [];
    for (let index = 0; index < 4; index++) runs.push(await finishedRun(chatId, RETENTION_DAYS + 2));
    const { log } = server.outrun;
    const retentionMs = RETENTION_DAYS * 24 * 60 * 60 * 1000;
    const [a, b] = await Promise.all([
      log.deleteExpiredEvents(retentionMs, 50),
      log.deleteExpiredEvents(retentionMs, 50),
    ]);
    expect(a + b).toBe(4);
    for (const runId of runs) expect(await storedEvents(runId)).toBe(0);
  });
});

describe('without OUTRUN_EVENT_RETENTION_DAYS', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('pglite');
  });
  afterAll(async () => {
    await server?.close();
  });

  it('keeps every finished run’s events', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 2 });
    await server.waitForRun(run.id);
    await server.outrun.db
      .updateTable('runs')
      .set({ finished_at: sql<Date>`now() - make_interval(days => 3650)` })
      .where('id', '=', run.id)
      .execute();
    expect(await server.outrun.compactor.deleteExpired()).toBe(0);
    expect((await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`))).done).toBe(true);
  });
});
