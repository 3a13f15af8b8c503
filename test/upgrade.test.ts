import { sql, type Kysely } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { Faults } from '../src/faults.ts';
import { Metrics } from '../src/metrics.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { createMigrator, migrateToLatest } from '../src/store/migrator.ts';
import { EventLog, type LogEvent } from '../src/stream/event-log.ts';
import { EVENTS_PER_PAGE } from '../src/stream/event-pages.ts';
import { newId } from '../src/ids.ts';
import { IdempotencyKeys, requestHash } from '../src/triggers/idempotency.ts';
import { finishRun, insertRunningRun } from './support/chat-rows.ts';
import { openTestDatabase, seedMember, STORE_KINDS } from './support/databases.ts';

/**
 * A database written by the version before the group commit wrote pages (migrations 0011 and 0012): a run's
 * events were rows of `run_events` (with a `created_at`) until compaction moved them into compressed pages keyed
 * by their first sequence number. Upgraded in place, every run reads back as it was written, a run that was
 * streaming goes on from its last event, and the runs still as rows compact.
 */
describe.each(STORE_KINDS)('upgrading a database with events on %s', (kind) => {
  const BEFORE_PAGES_AS_WRITTEN = '0010-ending-fall-back';
  let database: DatabaseHandle;
  let log: EventLog;
  let member: { workspaceId: string; userId: string };

  beforeAll(async () => {
    database = await openTestDatabase(kind);
    log = new EventLog({
      db: database.db,
      bus: new MemoryBus(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      faults: new Faults(),
    });
    member = await seedMember(database.db);
  });
  afterAll(async () => {
    await database?.close();
  });

  const chunkAt = (seq: number) => JSON.stringify({ type: 'text-delta', id: 't', delta: `token ${seq} ` });
  const endChunk = JSON.stringify({ type: 'data-run', data: { status: 'succeeded' } });

  /** A run's events as the old version wrote them while it streamed: one `run_events` row each. */
  async function writeRows(runId: string, chunks: string[]): Promise<void> {
    const values = chunks.map((chunk, index) => sql`(${runId}, ${index + 1}, ${chunk}::json)`);
    await sql`insert into run_events (run_id, seq, chunk) values ${sql.join(values)}`.execute(database.db);
  }

  const asWritten = (chunks: string[]): LogEvent[] =>
    chunks.map((data, index) => ({ seq: index + 1, data, terminal: data === endChunk }));

  it('reads, continues and compacts the runs an earlier version wrote', async () => {
    // A run compacted by the earlier version: its compressed pages are the same format as today's.
    const compacted = await insertRunningRun(database.db, member);
    const compactedChunks = [
      ...Array.from({ length: 2 * EVENTS_PER_PAGE + 345 }, (_, index) => chunkAt(index + 1)),
      endChunk,
    ];
    const writer = log.openWriter({ runId: compacted.runId, epoch: 1, nextSeq: 1 });
    for (const chunk of compactedChunks) writer.append(JSON.parse(chunk));
    await writer.flush();
    await finishRun(database.db, compacted.runId);
    expect((await log.compact(compacted.runId)).compacted).toBe(true);

    // Back to the schema before 0011 and 0012, with the page key and the rows' column of that version.
    const { error } = await createMigrator(database.db as Kysely<unknown>).migrateTo(BEFORE_PAGES_AS_WRITTEN);
    expect(error).toBeUndefined();
    expect(await pageKey()).toBe('PRIMARY KEY (run_id, first_seq)');

    // A run that was streaming when the server stopped, and one that finished but was not compacted yet.
    const streaming = await insertRunningRun(database.db, member);
    const streamingChunks = Array.from({ length: 5 }, (_, index) => chunkAt(index + 1));
    await writeRows(streaming.runId, streamingChunks);
    const finished = await insertRunningRun(database.db, member);
    const finishedChunks = [...Array.from({ length: 6 }, (_, index) => chunkAt(index + 1)), endChunk];
    await writeRows(finished.runId, finishedChunks);
    await finishRun(database.db, finished.runId);

    expect(await migrateToLatest(database.db as Kysely<unknown>)).toEqual([
      '0011-event-rows-without-time',
      '0012-event-pages-by-last-seq',
      '0013-event-retention',
      '0014-webhook-delivery-retention',
      '0015-spend-outside-steps',
      '0016-lost-executions',
      '0017-webhook-secret-rotation',
      '0018-idempotency-keys-per-user',
      '0019-continuation-owed',
    ]);
    expect(await pageKey()).toBe('PRIMARY KEY (run_id, last_seq)');

    // Every run reads back as written, from the start and from inside it.
    expect(await log.read({ runId: compacted.runId, after: 0, limit: 5_000 })).toEqual(
      asWritten(compactedChunks),
    );
    expect(await log.read({ runId: compacted.runId, after: EVENTS_PER_PAGE + 17, limit: 5 })).toEqual(
      asWritten(compactedChunks).slice(EVENTS_PER_PAGE + 17, EVENTS_PER_PAGE + 22),
    );
    expect(await log.read({ runId: streaming.runId, after: 2 })).toEqual(asWritten(streamingChunks).slice(2));
    expect(await log.read({ runId: finished.runId, after: 0 })).toEqual(asWritten(finishedChunks));

    // The streaming run goes on from its last event: its new events are plain pages after its rows.
    expect(await log.lastSeq(streaming.runId)).toBe(5);
    const resumed = log.openWriter({ runId: streaming.runId, epoch: 1, nextSeq: 6 });
    const moreChunks = [chunkAt(6), chunkAt(7), endChunk];
    for (const chunk of moreChunks) resumed.append(JSON.parse(chunk));
    await resumed.flush();
    const allStreamed = [...streamingChunks, ...moreChunks];
    expect(await log.read({ runId: streaming.runId, after: 0 })).toEqual(asWritten(allStreamed));
    await finishRun(database.db, streaming.runId);

    // Both runs still as written compact, and read back the same.
    const results = await log.compactMany([streaming.runId, finished.runId]);
    expect(results.get(streaming.runId)).toEqual({ compacted: true, events: 8, pages: 1 });
    expect(results.get(finished.runId)).toEqual({ compacted: true, events: 7, pages: 1 });
    const { rows } = await sql<{ count: string }>`
      select count(*) from run_events where run_id in (${streaming.runId}, ${finished.runId})`.execute(
      database.db,
    );
    expect(Number(rows[0]!.count)).toBe(0);
    expect(await log.read({ runId: streaming.runId, after: 0 })).toEqual(asWritten(allStreamed));
    expect(await log.read({ runId: finished.runId, after: 3 })).toEqual(asWritten(finishedChunks).slice(3));
  });

  async function pageKey(): Promise<string> {
    const { rows } = await sql<{ definition: string }>`
      select pg_get_constraintdef(oid) as definition from pg_constraint
      where conname = 'run_event_pages_pk'`.execute(database.db);
    return rows[0]!.definition;
  }
});

/**
 * A database with `Idempotency-Key`s from before keys were per user (migration 0018), one per workspace: each
 * answered key goes to the owner of the chat its answer names, so its retries still get that answer.
 */
describe.each(STORE_KINDS)('upgrading idempotency keys to keys per user on %s', (kind) => {
  const BEFORE_KEYS_PER_USER = '0017-webhook-secret-rotation';
  let database: DatabaseHandle;

  beforeAll(async () => {
    database = await openTestDatabase(kind);
  });
  afterAll(async () => {
    await database?.close();
  });

  it('gives each answered key to its chat’s owner, so a retry still replays, and lets unanswered claims go', async () => {
    const { db } = database;
    const alice = await seedMember(db);
    const bob = { workspaceId: alice.workspaceId, userId: newId('user') };
    await db
      .insertInto('users')
      .values({ id: bob.userId, workspace_id: bob.workspaceId, email: 'bob@example.com', role: 'member' })
      .execute();
    const started = await insertRunningRun(db, alice);
    const created = await insertRunningRun(db, bob);
    const start = {
      method: 'POST',
      path: `/v1/chats/${started.chatId}/runs`,
      userId: alice.userId,
      body: { input: { text: 'hi' } },
    };
    const startAnswer = { status: 201, body: { run: { id: started.runId } } };

    const { error } = await createMigrator(db as Kysely<unknown>).migrateTo(BEFORE_KEYS_PER_USER);
    expect(error).toBeUndefined();
    const oldKey = (key: string, hash: string, response: unknown) =>
      sql`insert into idempotency_keys (workspace_id, key, request_hash, response)
        values (${alice.workspaceId}, ${key}, ${hash}, ${response === null ? null : JSON.stringify(response)})`.execute(
        db,
      );
    await oldKey('order-42', requestHash(start), startAnswer);
    await oldKey('chat-1', 'hash', { status: 201, body: { chat: { id: created.chatId } } });
    await oldKey('in-flight', 'hash', null);

    expect(await migrateToLatest(db as Kysely<unknown>)).toContain('0018-idempotency-keys-per-user');
    const rows = await db.selectFrom('idempotency_keys').select(['key', 'user_id']).orderBy('key').execute();
    expect(rows).toEqual([
      { key: 'chat-1', user_id: bob.userId },
      { key: 'order-42', user_id: alice.userId },
    ]);
    const { rows: keys } = await sql<{ definition: string }>`
      select pg_get_constraintdef(oid) as definition from pg_constraint
      where conname = 'idempotency_keys_pk'`.execute(db);
    expect(keys.map((key) => key.definition)).toEqual(['PRIMARY KEY (workspace_id, user_id, key)']);

    // Alice's retry answers her first run; Bob's first request with the same key is his own.
    const idempotency = new IdempotencyKeys({ db });
    const handled: string[] = [];
    const handler = (userId: string) => async () => {
      handled.push(userId);
      return { status: 201, body: { run: { id: `run of ${userId}` } } };
    };
    const retried = await idempotency.run(
      { ...start, workspaceId: alice.workspaceId, key: 'order-42' },
      handler(alice.userId),
    );
    expect(retried).toEqual({ ...startAnswer, replayed: true });
    const bobs = await idempotency.run(
      { ...start, workspaceId: bob.workspaceId, userId: bob.userId, key: 'order-42' },
      handler(bob.userId),
    );
    expect(bobs).toMatchObject({ status: 201, replayed: false });
    expect(handled).toEqual([bob.userId]);
  });
});
