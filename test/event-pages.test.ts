import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { FaultPoint, Faults, type FaultContext } from '../src/faults.ts';
import { newId } from '../src/ids.ts';
import { Metrics } from '../src/metrics.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { EventCompactor } from '../src/stream/event-compactor.ts';
import { EventLog, PAGE_BYTES_PER_INSERT, type LogEvent } from '../src/stream/event-log.ts';
import { EVENTS_PER_PAGE } from '../src/stream/event-pages.ts';
import { followRun } from '../src/stream/run-follower.ts';
import { finishRun, insertRunningRun } from './support/chat-rows.ts';
import { openTestDatabase, seedMember, STORE_KINDS } from './support/databases.ts';
import { readSse, script, type SseFrame } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil, waitUntil } from './support/wait.ts';

/** A finished run's events compacted into pages read back exactly as they were written (issue 10). */
describe.each(STORE_KINDS)('event pages on %s', (kind) => {
  let database: DatabaseHandle;
  let faults: Faults;
  let log: EventLog;
  let workspaceId: string;
  let userId: string;

  beforeAll(async () => {
    database = await openTestDatabase(kind);
    faults = new Faults();
    log = new EventLog({
      db: database.db,
      bus: new MemoryBus(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      faults,
    });
    ({ workspaceId, userId } = await seedMember(database.db));
  });
  afterAll(async () => {
    await database?.close();
  });

  /** A run of `count` events written through the log, then ended `status` (as its settle would). */
  async function writtenRun(
    count: number,
    status = 'succeeded',
  ): Promise<{ runId: string; live: LogEvent[] }> {
    const { runId } = await insertRunningRun(database.db, { workspaceId, userId });
    const live: LogEvent[] = [];
    const unsubscribe = await log.subscribe(runId, (events) => live.push(...events));
    const writer = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    for (let index = 1; index < count; index++) writer.append(chunkAt(index));
    writer.append({ type: 'data-run', data: { status } }, { terminal: true });
    await writer.flush();
    // Events are published after their insert committed, so the last batch may still be on its way.
    await waitUntil(() => live.length === count);
    await unsubscribe();
    await finishRun(database.db, runId, status);
    return { runId, live };
  }

  /**
   * How a run's events are stored: `uncompacted` counts those still as written (rows of `run_events` and the
   * group commit's plain pages), `pages` the compressed pages of a compaction.
   */
  async function storedIn(runId: string): Promise<{ uncompacted: number; pages: number }> {
    const { rows } = await sql<{ uncompacted: string; pages: string }>`
      select (select count(*) from run_events where run_id = ${runId})
           + (select coalesce(sum(last_seq - first_seq + 1), 0) from run_event_pages
               where run_id = ${runId} and get_byte(events, 0) = 2) as uncompacted,
             (select count(*) from run_event_pages where run_id = ${runId} and get_byte(events, 0) = 1) as pages
    `.execute(database.db);
    return { uncompacted: Number(rows[0]!.uncompacted), pages: Number(rows[0]!.pages) };
  }

  /** Each run's events are in one page, none left as rows, and they read back as written. */
  async function expectCompacted(runs: { runId: string; live: unknown[] }[]): Promise<void> {
    for (const { runId, live } of runs) {
      expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages: 1 });
      expect(await log.read({ runId, after: 0 })).toEqual(live);
    }
  }

  async function replayed(runId: string): Promise<{ seq: number; chunk: unknown }[]> {
    const events: { seq: number; chunk: unknown }[] = [];
    for await (const event of log.replay(runId)) events.push(event);
    return events;
  }

  it('moves every event into pages and reads back the same sequence numbers and bytes from any point', async () => {
    const count = 2 * EVENTS_PER_PAGE + 345;
    const { runId, live } = await writtenRun(count);
    expect(live.map((event) => event.seq)).toEqual(Array.from({ length: count }, (_, index) => index + 1));
    // Appended in one tick, written by two inserts (2,000 events at most each), as plain pages of at most
    // EVENTS_PER_PAGE events: the reads below rely on that bound.
    const plain = await database.db
      .selectFrom('run_event_pages')
      .select(['first_seq', 'last_seq'])
      .where('run_id', '=', runId)
      .orderBy('last_seq')
      .execute();
    expect(plain.map((page) => [page.first_seq, page.last_seq])).toEqual([
      [1, EVENTS_PER_PAGE],
      [EVENTS_PER_PAGE + 1, 2 * EVENTS_PER_PAGE],
      [2 * EVENTS_PER_PAGE + 1, count],
    ]);

    const afters = [
      0,
      1,
      517,
      EVENTS_PER_PAGE - 1,
      EVENTS_PER_PAGE,
      EVENTS_PER_PAGE + 1,
      count - 1,
      count,
      count + 50,
    ];
    const limits = [1, 7, EVENTS_PER_PAGE, 2500];
    const before = new Map<string, LogEvent[]>();
    for (const after of afters) {
      for (const limit of limits) before.set(`${after}/${limit}`, await log.read({ runId, after, limit }));
    }
    const replayBefore = await replayed(runId);

    expect(await log.compact(runId)).toEqual({ compacted: true, events: count, pages: 3 });
    expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages: 3 });

    for (const after of afters) {
      for (const limit of limits) {
        const events = await log.read({ runId, after, limit });
        expect(events, `after ${after}, limit ${limit}`).toEqual(before.get(`${after}/${limit}`));
        // Exactly what was live-published, byte for byte.
        expect(events).toEqual(live.slice(after, after + limit));
      }
    }
    expect(await log.read({ runId, after: 0 })).toHaveLength(1000);
    expect(await replayed(runId)).toEqual(replayBefore);
    expect(await log.lastSeq(runId)).toBe(count);
  });

  it('follows a compacted run from any point to its terminal event', async () => {
    const { runId, live } = await writtenRun(EVENTS_PER_PAGE + 10);
    await log.compact(runId);
    for (const after of [0, 3, EVENTS_PER_PAGE]) {
      const seen: LogEvent[] = [];
      for await (const item of followRun({ log, runId, after, isFinished: async () => true })) {
        if (item.kind === 'events') seen.push(...item.events);
      }
      expect(seen).toEqual(live.slice(after));
      expect(seen.at(-1)?.terminal).toBe(true);
    }
  });

  it('leaves a run that has not finished alone, and compacts a finished one once', async () => {
    const { runId } = await writtenRun(20);
    await database.db.updateTable('runs').set({ status: 'waiting' }).where('id', '=', runId).execute();
    expect(await log.compact(runId)).toEqual({ compacted: false, reason: 'not_finished' });
    expect(await storedIn(runId)).toEqual({ uncompacted: 20, pages: 0 });

    await database.db.updateTable('runs').set({ status: 'aborted' }).where('id', '=', runId).execute();
    const before = await log.read({ runId, after: 0 });
    expect(await log.compact(runId)).toMatchObject({ compacted: true, events: 20 });
    expect(await log.compact(runId)).toEqual({ compacted: false, reason: 'already_compacted' });
    await Promise.all([log.compact(runId), log.compact(runId)]);
    expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages: 1 });
    expect(await log.read({ runId, after: 0 })).toEqual(before);
    expect(await log.compact(newId('run'))).toEqual({ compacted: false, reason: 'not_found' });
  });

  it('never shows a reader a gap or a short read while a compaction commits', async () => {
    const count = EVENTS_PER_PAGE + 300;
    const { runId, live } = await writtenRun(count);
    // The compaction holds its transaction open, rows moved but not committed, while reads go on.
    let inTransaction = false;
    faults.armTimes(FaultPoint.compactionBeforeCommit, 1, async () => {
      inTransaction = true;
      await new Promise((resolve) => setTimeout(resolve, 150));
    });
    let compacted = false;
    const compaction = log.compact(runId).then((result) => {
      compacted = true;
      return result;
    });
    const checked = { during: 0, after: 0 };
    let round = 0;
    while (!compacted || checked.after < 20) {
      round += 1;
      const after = (round * 97) % (count + 5);
      const limit = [1, 50, EVENTS_PER_PAGE][round % 3]!;
      const wasCompacted = compacted;
      const [events, lastSeq] = await Promise.all([log.read({ runId, after, limit }), log.lastSeq(runId)]);
      expect(events, `after ${after}, limit ${limit}`).toEqual(live.slice(after, after + limit));
      expect(lastSeq).toBe(count);
      if (wasCompacted) checked.after += 1;
      else if (inTransaction) checked.during += 1;
    }
    expect(await compaction).toMatchObject({ compacted: true });
    expect(checked.during).toBeGreaterThan(0);
    faults.assertArmedPointsHit();
    faults.clear();
  });

  it('rolls a failed compaction back whole, and the sweep compacts the run later', async () => {
    const { runId, live } = await writtenRun(30, 'failed');
    faults.armTimes(FaultPoint.compactionBeforeCommit, 1, () => {
      throw new Error('the process died mid-compaction');
    });
    await expect(log.compact(runId)).rejects.toThrow('died');
    faults.clear();
    expect(await storedIn(runId)).toEqual({ uncompacted: 30, pages: 0 });
    expect(await log.uncompactedRuns(1000)).toContain(runId);

    const vacuum = vi.spyOn(log, 'vacuum');
    const compactor = new EventCompactor({
      log,
      logger: pino({ level: 'silent' }),
      sweepLimit: 1000,
      vacuumAfterEvents: 30,
    });
    expect(await compactor.sweep()).toBeGreaterThan(0);
    // A store without autovacuum gets one once enough rows and plain pages were moved out, and it succeeds
    // (the compactor would only log a failed one).
    expect(vacuum).toHaveBeenCalled();
    await expect(vacuum.mock.results[0]!.value).resolves.toBeUndefined();
    vacuum.mockRestore();
    expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages: 1 });
    expect(await log.uncompactedRuns(1000)).not.toContain(runId);
    expect(await log.read({ runId, after: 0 })).toEqual(live);
  });

  it('compacts several finished runs in one transaction, each read back as it was written', async () => {
    const written = await Promise.all(
      [EVENTS_PER_PAGE + 20, 1, 37, 2 * EVENTS_PER_PAGE + 5].map((count, index) =>
        writtenRun(count, index % 2 === 0 ? 'succeeded' : 'failed'),
      ),
    );
    const before = new Map<string, { seq: number; chunk: unknown }[]>();
    for (const { runId } of written) before.set(runId, await replayed(runId));
    const hits = faults.hits(FaultPoint.compactionBeforeCommit);

    const results = await log.compactMany(written.map(({ runId }) => runId));

    expect(faults.hits(FaultPoint.compactionBeforeCommit) - hits).toBe(1);
    expect(results.size).toBe(written.length);
    for (const { runId, live } of written) {
      const pages = Math.ceil(live.length / EVENTS_PER_PAGE);
      expect(results.get(runId), runId).toEqual({ compacted: true, events: live.length, pages });
      expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages });
      expect(await replayed(runId)).toEqual(before.get(runId));
      expect(await log.read({ runId, after: 0, limit: 5000 })).toEqual(live);
      expect(await log.read({ runId, after: live.length - 1 })).toEqual(live.slice(-1));
      expect(await log.lastSeq(runId)).toBe(live.length);
    }
    expect(await log.compactMany([])).toEqual(new Map());
  });

  it('compacts a run whose sequence has a gap beside a dense one, rows and plain pages alike', async () => {
    const dense = await writtenRun(5);
    // Event 1 a row (as a status change writes one), 2 a plain page of the group commit, then a hole at 3:
    // the events after it keep their numbers.
    const { runId } = await insertRunningRun(database.db, { workspaceId, userId });
    const kept: LogEvent[] = await database.db
      .transaction()
      .execute((tx) => log.appendInTransaction(tx, runId, [chunkAt(1)], { lastSeq: 0 }));
    const before = log.openWriter({ runId, epoch: 1, nextSeq: 2 });
    before.append(chunkAt(2));
    await before.flush();
    const after = log.openWriter({ runId, epoch: 1, nextSeq: 4 });
    after.append(chunkAt(4));
    after.append(chunkAt(5));
    after.append({ type: 'data-run', data: { status: 'succeeded' } }, { terminal: true });
    await after.flush();
    kept.push(...(await log.read({ runId, after: 1 })));
    expect(kept.map((event) => event.seq)).toEqual([1, 2, 4, 5, 6]);
    expect(await storedIn(runId)).toEqual({ uncompacted: 5, pages: 0 });
    await finishRun(database.db, runId);

    const results = await log.compactMany([dense.runId, runId]);

    expect(results.get(dense.runId)).toEqual({ compacted: true, events: 5, pages: 1 });
    // The gap starts a second page.
    expect(results.get(runId)).toEqual({ compacted: true, events: 5, pages: 2 });
    expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages: 2 });
    expect(await log.read({ runId: dense.runId, after: 0 })).toEqual(dense.live);
    expect(await log.read({ runId, after: 0 })).toEqual(kept);
  });

  it('compacts a run whose plain pages were written out of order into one page of its events in order', async () => {
    // Compaction reads a run's plain pages in whatever order the database scans them: here the later events'
    // page went in first.
    const { runId } = await insertRunningRun(database.db, { workspaceId, userId });
    await database.db
      .transaction()
      .execute((tx) => log.appendInTransaction(tx, runId, [chunkAt(1)], { lastSeq: 0 }));
    const later = log.openWriter({ runId, epoch: 1, nextSeq: 4 });
    later.append(chunkAt(4));
    later.append({ type: 'data-run', data: { status: 'succeeded' } }, { terminal: true });
    await later.flush();
    for (const seq of [2, 3]) {
      const earlier = log.openWriter({ runId, epoch: 1, nextSeq: seq });
      earlier.append(chunkAt(seq));
      await earlier.flush();
    }
    const written = await log.read({ runId, after: 0 });
    expect(written.map((event) => event.seq)).toEqual([1, 2, 3, 4, 5]);
    await finishRun(database.db, runId);

    expect((await log.compactMany([runId])).get(runId)).toEqual({ compacted: true, events: 5, pages: 1 });
    expect(await storedIn(runId)).toEqual({ uncompacted: 0, pages: 1 });
    expect(await log.read({ runId, after: 0 })).toEqual(written);
  });

  it('writes a compaction whose pages outgrow one insert in several, every page intact', async () => {
    // Random text barely compresses: pages of up to ~2 MB, 5 MB in all, more than one insert takes.
    const { runId } = await insertRunningRun(database.db, { workspaceId, userId });
    const writer = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    const count = 2 * EVENTS_PER_PAGE + 500;
    for (let seq = 1; seq < count; seq++) {
      writer.append({ type: 'text-delta', id: 'txt-0', delta: randomBytes(2_100).toString('base64') });
    }
    writer.append({ type: 'data-run', data: { status: 'succeeded' } }, { terminal: true });
    await writer.flush();
    const written = await log.read({ runId, after: 0, limit: count });
    expect(written).toHaveLength(count);
    await finishRun(database.db, runId);

    expect((await log.compactMany([runId])).get(runId)).toEqual({ compacted: true, events: count, pages: 3 });
    const { rows } = await sql<{ bytes: string }>`
      select sum(octet_length(events)) as bytes from run_event_pages where run_id = ${runId}`.execute(
      database.db,
    );
    expect(Number(rows[0]!.bytes)).toBeGreaterThan(PAGE_BYTES_PER_INSERT);
    expect(await log.read({ runId, after: 0, limit: count })).toEqual(written);
    expect(await log.read({ runId, after: 2 * EVENTS_PER_PAGE - 3, limit: 7 })).toEqual(
      written.slice(2 * EVENTS_PER_PAGE - 3, 2 * EVENTS_PER_PAGE + 4),
    );
  });

  it('rolls a failed batch back whole: every run of it keeps its rows until a later batch', async () => {
    const written = await Promise.all([writtenRun(10), writtenRun(11, 'failed')]);
    const runIds = written.map(({ runId }) => runId);
    let context: FaultContext = {};
    faults.armTimes(FaultPoint.compactionBeforeCommit, 1, (hit) => {
      context = hit;
      throw new Error('the process died mid-compaction');
    });
    await expect(log.compactMany(runIds)).rejects.toThrow('died');
    faults.assertArmedPointsHit();
    faults.clear();
    expect(context.runIds).toEqual([...runIds].sort());
    for (const { runId, live } of written) {
      expect(await storedIn(runId)).toEqual({ uncompacted: live.length, pages: 0 });
      expect(await log.read({ runId, after: 0 })).toEqual(live);
    }

    const results = await log.compactMany(runIds);
    for (const { runId, live } of written) {
      expect(results.get(runId)).toEqual({ compacted: true, events: live.length, pages: 1 });
      expect(await log.read({ runId, after: 0 })).toEqual(live);
    }
  });

  it('gives each run of a mixed batch its own reason and compacts the rest', async () => {
    const finished = await writtenRun(12);
    const other = await writtenRun(8, 'aborted');
    const running = await writtenRun(15);
    await database.db
      .updateTable('runs')
      .set({ status: 'running' })
      .where('id', '=', running.runId)
      .execute();
    const compactedAlready = await writtenRun(5);
    await log.compact(compactedAlready.runId);
    const unknown = newId('run');
    // PGlite has one connection: no other transaction can hold a run while the batch runs there.
    const locked = kind === 'postgres' ? await writtenRun(9) : null;

    const batch = [
      running.runId,
      finished.runId,
      compactedAlready.runId,
      unknown,
      other.runId,
      ...(locked ? [locked.runId] : []),
    ];
    const results = locked
      ? await database.db.transaction().execute(async (tx) => {
          await tx.selectFrom('runs').select('id').where('id', '=', locked.runId).forUpdate().execute();
          return log.compactMany(batch);
        })
      : await log.compactMany(batch);

    expect(Object.fromEntries(results)).toEqual({
      [running.runId]: { compacted: false, reason: 'not_finished' },
      [finished.runId]: { compacted: true, events: 12, pages: 1 },
      [compactedAlready.runId]: { compacted: false, reason: 'already_compacted' },
      [unknown]: { compacted: false, reason: 'not_found' },
      [other.runId]: { compacted: true, events: 8, pages: 1 },
      ...(locked ? { [locked.runId]: { compacted: false, reason: 'busy' } } : {}),
    });
    expect(await storedIn(running.runId)).toEqual({ uncompacted: 15, pages: 0 });
    expect(await log.read({ runId: running.runId, after: 0 })).toEqual(running.live);
    for (const run of [finished, other, compactedAlready]) {
      expect(await storedIn(run.runId)).toEqual({ uncompacted: 0, pages: 1 });
      expect(await log.read({ runId: run.runId, after: 0 })).toEqual(run.live);
    }
    if (locked) {
      expect(await storedIn(locked.runId)).toEqual({ uncompacted: 9, pages: 0 });
      // Once the other transaction has let go, the run is compacted like any other.
      expect(await log.compact(locked.runId)).toEqual({ compacted: true, events: 9, pages: 1 });
      expect(await log.read({ runId: locked.runId, after: 0 })).toEqual(locked.live);
    }
  });

  it('compacts the runs scheduled together in fewer transactions than runs, at most sweepLimit each', async () => {
    const written = await Promise.all(Array.from({ length: 7 }, (_, index) => writtenRun(3 + index)));
    const compactMany = vi.spyOn(log, 'compactMany');
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), sweepLimit: 3 });
    const hits = faults.hits(FaultPoint.compactionBeforeCommit);

    for (const { runId } of written) compactor.schedule(runId);
    await compactor.idle();

    // Seven runs scheduled at once: batches of three, three and one.
    expect(compactMany.mock.calls.map(([runIds]) => runIds.length)).toEqual([3, 3, 1]);
    expect(faults.hits(FaultPoint.compactionBeforeCommit) - hits).toBe(3);
    compactMany.mockRestore();
    await expectCompacted(written);
    await compactor.close();
  });

  it('leaves the runs past the batch’s event limit for later, and compacts a longer run alone', async () => {
    const written = await Promise.all([writtenRun(10), writtenRun(10), writtenRun(10)]);
    const ordered = written.map(({ runId }) => runId).sort();
    const results = await log.compactMany(ordered, { maxEvents: 15 });
    // In lock (id) order: the first run fits, the next would pass 15 events, and so would the third.
    expect(ordered.map((runId) => results.get(runId))).toEqual([
      { compacted: true, events: 10, pages: 1 },
      { compacted: false, reason: 'deferred' },
      { compacted: false, reason: 'deferred' },
    ]);
    expect(await storedIn(ordered[1]!)).toEqual({ uncompacted: 10, pages: 0 });

    const long = await writtenRun(20);
    expect((await log.compactMany([long.runId], { maxEvents: 15 })).get(long.runId)).toEqual({
      compacted: true,
      events: 20,
      pages: 1,
    });
    for (const { runId, live } of [...written, long])
      expect(await log.read({ runId, after: 0 })).toEqual(live);
    // The deferred runs go in a later batch.
    const later = await log.compactMany(ordered.slice(1));
    expect([...later.values()].every((result) => result.compacted)).toBe(true);
  });

  it('compacts in later batches the runs a batch left over for its event limit', async () => {
    const written = await Promise.all([writtenRun(10), writtenRun(10), writtenRun(10)]);
    const compactMany = vi.spyOn(log, 'compactMany');
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), maxBatchEvents: 15 });
    for (const { runId } of written) compactor.schedule(runId);
    await compactor.idle();

    // One run of 10 events per batch: three batches, each with what the previous one left.
    expect(compactMany.mock.calls.map(([runIds]) => runIds.length)).toEqual([3, 2, 1]);
    compactMany.mockRestore();
    await expectCompacted(written);
    await compactor.close();
  });

  it('tries the runs of a failed batch one by one, so one bad run does not hold the others back', async () => {
    const written = await Promise.all([writtenRun(4), writtenRun(5), writtenRun(6)]);
    const runIds = written.map(({ runId }) => runId);
    const compactMany = vi.spyOn(log, 'compactMany');
    faults.armTimes(FaultPoint.compactionBeforeCommit, 1, () => {
      throw new Error('the batch failed');
    });
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }) });
    for (const runId of runIds) compactor.schedule(runId);
    await compactor.idle();
    faults.assertArmedPointsHit();

    expect(compactMany.mock.calls.map(([ids]) => ids)).toEqual([runIds, ...runIds.map((runId) => [runId])]);
    compactMany.mockRestore();
    await expectCompacted(written);
    await compactor.close();
  });

  it('gathers the runs that end close together into one batch', async () => {
    const [first, ...later] = await Promise.all([writtenRun(4), writtenRun(5), writtenRun(6)]);
    const compactMany = vi.spyOn(log, 'compactMany');
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }) });
    compactor.schedule(first!.runId);
    // Runs that end a little later, well inside the gathering delay, join the first one's transaction.
    await new Promise((resolve) => setTimeout(resolve, 10));
    for (const { runId } of later) compactor.schedule(runId);
    await compactor.idle();

    expect(compactMany.mock.calls.map(([runIds]) => runIds)).toEqual([
      [first!.runId, ...later.map(({ runId }) => runId)],
    ]);
    compactMany.mockRestore();
    await expectCompacted([first!, ...later]);
    await compactor.close();
  });
});

/** A varied chunk: text deltas of many lengths, multi-byte text, escapes, tool calls. */
function chunkAt(index: number): unknown {
  switch (index % 5) {
    case 0:
      return {
        type: 'tool-input-available',
        toolCallId: `call_${index}`,
        toolName: 'echo',
        input: { step: index },
      };
    case 1:
      return { type: 'text-delta', id: 'txt-0', delta: `Ünïcödé ✓ ${index} "quoted" \\ back\nslash\ttab ` };
    case 2:
      return { type: 'text-delta', id: 'txt-0', delta: 'a\u0000b' };
    default:
      return { type: 'text-delta', id: 'txt-0', delta: ` token${index}` };
  }
}

describe.each(STORE_KINDS)('compacted run streams on %s', (kind) => {
  let server: TestServer;
  let faults: Faults;

  beforeAll(async () => {
    faults = new Faults();
    server = await startTestServer(kind, { faults });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function compactedAt(runId: string): Promise<Date | null> {
    const row = await server.outrun.db
      .selectFrom('runs')
      .select('events_compacted_at')
      .where('id', '=', runId)
      .executeTakeFirstOrThrow();
    return row.events_compacted_at;
  }

  async function rawFrames(response: Response): Promise<{ frames: SseFrame[]; done: boolean }> {
    const frames: SseFrame[] = [];
    for await (const frame of readSse(response.body!)) {
      if (frame.data === '[DONE]') return { frames, done: true };
      if (frame.data !== null) frames.push(frame);
    }
    return { frames, done: false };
  }

  it('resumes a compacted run with Last-Event-ID and sends the bytes it sent live', async () => {
    const chatId = await server.createChat();
    const response = await server.fetch(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
      body: JSON.stringify({ input: { text: script({ steps: 2, tokens: 600 }) } }),
    });
    const runId = response.headers.get('x-outrun-run-id')!;
    const live = await rawFrames(response);
    expect(live.done).toBe(true);
    const last = live.frames.length;
    expect(last).toBeGreaterThan(EVENTS_PER_PAGE);
    expect(live.frames.map((frame) => frame.id)).toEqual(live.frames.map((_, index) => index + 1));

    // The ending scheduled the compaction; nothing else had to.
    await pollUntil(() => compactedAt(runId), Boolean);
    const stored = await server.outrun.db
      .selectFrom('run_events')
      .select('seq')
      .where('run_id', '=', runId)
      .execute();
    expect(stored).toEqual([]);

    for (const after of [0, 1, 500, EVENTS_PER_PAGE - 1, EVENTS_PER_PAGE, last - 1, last, last + 10]) {
      const resumed = await rawFrames(
        await server.fetch(`/v1/runs/${runId}/stream`, {
          headers: after ? { 'last-event-id': String(after) } : {},
        }),
      );
      expect(resumed.done).toBe(true);
      expect(resumed.frames, `after ${after}`).toEqual(live.frames.slice(after));
    }
    const messages = await server.api(`/v1/chats/${chatId}/messages`);
    expect(messages.body.items[1]).toMatchObject({ status: 'completed' });
  });

  it('compacts on the sweep a run that ended while nothing compacted it', async () => {
    // The compaction scheduled by the ending dies before commit, as it would with its process.
    faults.armTimes(FaultPoint.compactionBeforeCommit, 1, () => {
      throw new Error('the process died mid-compaction');
    });
    const hits = faults.hits(FaultPoint.compactionBeforeCommit);
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 5 });
    await server.waitForRun(run.id);
    await waitUntil(() => faults.hits(FaultPoint.compactionBeforeCommit) > hits);
    faults.clear();
    const before = await server.outrun.log.read({ runId: run.id, after: 0 });
    expect(before.length).toBeGreaterThan(5);
    expect(await compactedAt(run.id)).toBeNull();

    await server.outrun.engine.sweep({ all: false });
    await pollUntil(() => compactedAt(run.id), Boolean);
    expect(await server.outrun.log.read({ runId: run.id, after: 0 })).toEqual(before);
  });
});
