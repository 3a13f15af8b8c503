import { sql, type Kysely } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { RunService } from '../src/runs/run-service.ts';
import { Ending, Lifecycle } from '../src/runs/lifecycle.ts';
import type { RunQueue } from '../src/queue/queue.ts';
import { FaultPoint, Faults } from '../src/faults.ts';
import { newId } from '../src/ids.ts';
import { Metrics } from '../src/metrics.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { migrateToLatest } from '../src/store/migrator.ts';
import { EventLog, LeaseLostError, type RunEventWriter } from '../src/stream/event-log.ts';
import { plainPageText } from '../src/stream/event-pages.ts';
import { followRun } from '../src/stream/run-follower.ts';
import { RunAlreadyActiveError } from '../src/errors.ts';
import { openTestDatabase, seedMember, STORE_KINDS } from './support/databases.ts';
import { untilWaitingForLock } from './support/lock-waits.ts';

/** The same store code, the same assertions, on every store (DESIGN §2: one conformance suite). */
describe.each(STORE_KINDS)('store conformance on %s', (kind) => {
  let database: DatabaseHandle;
  let metrics: Metrics;
  let log: EventLog;
  let workspaceId: string;
  let userId: string;

  beforeAll(async () => {
    database = await openTestDatabase(kind);
    metrics = new Metrics({ defaultMetrics: false });
    log = new EventLog({
      db: database.db,
      bus: new MemoryBus(),
      metrics,
      logger: pino({ level: 'silent' }),
      faults: new Faults(),
    });
    ({ workspaceId, userId } = await seedMember(database.db));
  });
  afterAll(async () => {
    await database?.close();
  });

  /** A lifecycle on this database whose queue takes any run and does nothing with it. */
  const lifecycleOf = (eventLog: EventLog, faults = new Faults()) =>
    new Lifecycle({
      db: database.db,
      log: eventLog,
      queue: { enqueue: async () => {} } as unknown as RunQueue,
      metrics,
      logger: pino({ level: 'silent' }),
      faults,
    });

  async function chat(): Promise<string> {
    const id = newId('chat');
    await database.db
      .insertInto('chats')
      .values({ id, workspace_id: workspaceId, owner_id: userId, title: 't' })
      .execute();
    return id;
  }

  async function run(chatId: string, status = 'pending', attempt = 1): Promise<string> {
    const id = newId('run');
    await database.db
      .insertInto('runs')
      .values({
        id,
        chat_id: chatId,
        workspace_id: workspaceId,
        created_by: userId,
        trigger: 'api',
        status,
        model: 'scripted',
        options: '{}',
        attempt,
        epoch: attempt,
      })
      .execute();
    return id;
  }

  it('migrates idempotently', async () => {
    expect(await migrateToLatest(database.db as Kysely<unknown>)).toEqual([]);
  });

  it('lets the partial unique index admit one active run per chat, and any number of finished ones', async () => {
    const chatId = await chat();
    await run(chatId, 'succeeded');
    await run(chatId, 'failed');
    await run(chatId, 'pending');
    await expect(run(chatId, 'pending')).rejects.toMatchObject({ code: '23505' });
    await expect(run(chatId, 'running')).rejects.toMatchObject({ code: '23505' });
    await expect(run(chatId, 'waiting')).rejects.toMatchObject({ code: '23505' });
    await run(chatId, 'queued');
    await run(chatId, 'queued');
    await run(await chat(), 'running');
  });

  it('rejects an unknown run status and trigger', async () => {
    const chatId = await chat();
    await expect(run(chatId, 'stuck')).rejects.toMatchObject({ code: '23514' });
  });

  it('lets events appended a few milliseconds apart share one insert within the coalescing window', async () => {
    const batchCount = async (of: Metrics) =>
      (await of.appendBatchSize.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    const paced = async (coalesceMs: number) => {
      const ownMetrics = new Metrics({ defaultMetrics: false });
      const coalescing = new EventLog({
        db: database.db,
        bus: new MemoryBus(),
        metrics: ownMetrics,
        logger: pino({ level: 'silent' }),
        faults: new Faults(),
        coalesceMs,
      });
      const writer = coalescing.openWriter({
        runId: await run(await chat(), 'running'),
        epoch: 1,
        nextSeq: 1,
      });
      // Five events 2 ms apart, as a paced model streams them.
      for (let index = 0; index < 5; index++) {
        writer.append({ type: 'text-delta', id: 't', delta: `${index} ` });
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await writer.flush();
      const events = await coalescing.read({ runId: writer.runId, after: 0, limit: 10 });
      expect(events.map((event) => event.seq)).toEqual([1, 2, 3, 4, 5]);
      return batchCount(ownMetrics);
    };
    // A 40 ms window takes all five in one insert; without one, the log writes as soon as a tick ends.
    expect(await paced(40)).toBe(1);
    expect(await paced(0)).toBeGreaterThan(1);
  });

  it('logs a bus that fails every publish once, with the count, not once a batch', async () => {
    const warnings: unknown[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
    const bus = new MemoryBus();
    vi.spyOn(bus, 'publish').mockRejectedValue(new Error('Redis is down'));
    const failing = new EventLog({
      db: database.db,
      bus,
      metrics: new Metrics({ defaultMetrics: false }),
      logger,
      faults: new Faults(),
    });
    const writer = failing.openWriter({ runId: await run(await chat(), 'running'), epoch: 1, nextSeq: 1 });
    for (let index = 0; index < 20; index++) {
      writer.append({ type: 'text-delta', id: 't', delta: `${index} ` });
      await writer.flush();
    }
    // The events are durable whatever the bus did; readers catch up from the log.
    expect(await failing.read({ runId: writer.runId, after: 0, limit: 50 })).toHaveLength(20);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      msg: expect.stringContaining('publishing events failed'),
      failures: 1,
    });
  });

  it('does not hold the events of a run that had the last insert to itself for the coalescing window', async () => {
    const windowMs = 250;
    const coalescing = new EventLog({
      db: database.db,
      bus: new MemoryBus(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      faults: new Faults(),
      coalesceMs: windowMs,
    });
    const writerOf = async () =>
      coalescing.openWriter({ runId: await run(await chat(), 'running'), epoch: 1, nextSeq: 1 });
    /** How long one event takes to be durable (ms). */
    const durableAfter = async (writer: RunEventWriter) => {
      const started = performance.now();
      writer.append({ type: 'text-delta', id: 't', delta: 'x ' });
      await writer.flush();
      return performance.now() - started;
    };
    const lone = await writerOf();
    // A run new to the log waits for others to share its insert; once it had an insert to itself, not.
    expect(await durableAfter(lone)).toBeGreaterThanOrEqual(windowMs - 5);
    expect(await durableAfter(lone)).toBeLessThan(windowMs / 2);
    expect(await durableAfter(lone)).toBeLessThan(windowMs / 2);
    // Another run writing: each waits the window again, as the last insert was not its own alone.
    const other = await writerOf();
    expect(await durableAfter(other)).toBeGreaterThanOrEqual(windowMs - 5);
    expect(await durableAfter(lone)).toBeGreaterThanOrEqual(windowMs - 5);
    const events = await coalescing.read({ runId: lone.runId, after: 0, limit: 10 });
    expect(events.map((event) => event.seq)).toEqual([1, 2, 3, 4]);
  });

  it('sends the group commit as a prepared statement, with any text intact', async () => {
    {
      const prepared = new EventLog({
        db: database.db,
        bus: new MemoryBus(),
        metrics: new Metrics({ defaultMetrics: false }),
        logger: pino({ level: 'silent' }),
        faults: new Faults(),
        appendDb: database.appendDb,
      });
      const writer = prepared.openWriter({ runId: await run(await chat(), 'running'), epoch: 1, nextSeq: 1 });
      // Quotes, backslashes and escapes go in as the statement's parameter: they must come back as sent.
      const deltas = [`it's`, `a\\b`, `''; drop table runs; --`, `\u0027 "q" \n`, `e'\x41'`];
      for (const delta of deltas) {
        writer.append({ type: 'text-delta', id: 't', delta });
        await writer.flush();
      }
      // Prepared on the append connection (PostgreSQL: its own pool of one; PGlite: the one session).
      const statements = await sql<{ statement: string }>`
        select statement from pg_prepared_statements where name like 'outrun\_%'`.execute(database.appendDb);
      expect(statements.rows.some((row) => row.statement.includes("convert_to($1::text, 'UTF8')"))).toBe(
        true,
      );
      const events = await prepared.read({ runId: writer.runId, after: 0, limit: 10 });
      expect(events.map((event) => JSON.parse(event.data).delta)).toEqual(deltas);
    }
  });

  it('never runs the prepared group commit inside another caller’s open transaction', async () => {
    const prepared = new EventLog({
      db: database.db,
      appendDb: database.appendDb,
      bus: new MemoryBus(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      faults: new Faults(),
    });
    const writer = prepared.openWriter({ runId: await run(await chat(), 'running'), epoch: 1, nextSeq: 1 });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let opened!: () => void;
    const isOpen = new Promise<void>((resolve) => (opened = resolve));
    // Another transaction is open (on PGlite: the one session) while the event is appended; it rolls back.
    const rolledBack = database.db
      .transaction()
      .execute(async (tx) => {
        await sql`select 1`.execute(tx);
        opened();
        await held;
        throw new Error('roll back');
      })
      .catch(() => {});
    await isOpen;
    writer.append({ type: 'text-delta', id: 't', delta: 'kept' });
    const flushed = writer.flush();
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    await rolledBack;
    await flushed;
    const events = await prepared.read({ runId: writer.runId, after: 0, limit: 10 });
    expect(events.map((event) => JSON.parse(event.data).delta)).toEqual(['kept']);
  });

  // PGlite has one connection: nothing there runs concurrently enough to deadlock.
  it.runIf(kind === 'postgres')(
    'never deadlocks a group commit against a heartbeat of the same runs, whatever their order',
    async () => {
      const ownMetrics = new Metrics({ defaultMetrics: false });
      const appending = new EventLog({
        db: database.db,
        appendDb: database.appendDb,
        bus: new MemoryBus(),
        metrics: ownMetrics,
        logger: pino({ level: 'silent' }),
        faults: new Faults(),
      });
      const runService = new RunService({
        db: database.db,
        metrics: ownMetrics,
        faults: new Faults(),
      });
      const owner = 'deadlock-test';
      const runIds: string[] = [];
      for (let index = 0; index < 60; index++) {
        const runId = await run(await chat(), 'running');
        await database.db
          .updateTable('runs')
          .set({ lease_owner: owner, epoch: 1 })
          .where('id', '=', runId)
          .execute();
        runIds.push(runId);
      }
      const writers = runIds.map((runId) => appending.openWriter({ runId, epoch: 1, nextSeq: 1 }));
      // The heartbeat lists the runs in the opposite order to the appends: without one lock order, the two
      // statements wait on each other until PostgreSQL's deadlock detector kills one after a second.
      const held = [...runIds].reverse().map((runId) => ({ runId, epoch: 1 }));
      const started = Date.now();
      for (let round = 0; round < 40; round++) {
        for (const writer of writers) writer.append({ type: 'text-delta', id: 't', delta: `${round} ` });
        const [renewed] = await Promise.all([
          runService.heartbeatMany({ runs: held, owner, leaseExpiresAt: new Date(Date.now() + 30_000) }),
          Promise.all(writers.map((writer) => writer.flush())),
        ]);
        expect(renewed.size).toBe(runIds.length);
      }
      const retries = (await ownMetrics.appendRetries.get()).values[0]?.value ?? 0;
      expect(retries).toBe(0);
      expect(Date.now() - started).toBeLessThan(10_000);
    },
  );

  // The start in one statement inserts its run, then waits for the chat's row; a start in a transaction locks
  // the row, then inserts. Released together, the second would insert an active run while the first's
  // uncommitted one is in the unique index, and each would wait for the other until PostgreSQL's deadlock
  // detector killed one (a second later; 40P01).
  it.runIf(kind === 'postgres')(
    'never deadlocks a start in one statement against a start that locks the chat first',
    async () => {
      const runService = new RunService({
        db: database.db,
        metrics: new Metrics({ defaultMetrics: false }),
        faults: new Faults(),
      });
      const chatId = await chat();
      const start = (text: string, locked: boolean) =>
        runService.begin({
          workspaceId,
          chatId,
          userId,
          parts: [{ type: 'text', text }],
          model: 'scripted',
          trigger: 'api',
          // Writes to join make a start lock the chat's row first (as a schedule's start does).
          inTransaction: locked ? async () => {} : undefined,
        });
      let release!: () => void;
      let holding!: () => void;
      const held = new Promise<void>((resolve) => (holding = resolve));
      // Another transaction holds the chat's row, so that both starts line up behind it: the locked one first.
      const holder = database.db.transaction().execute(async (tx) => {
        await tx.selectFrom('chats').select('id').where('id', '=', chatId).forUpdate().execute();
        holding();
        await new Promise<void>((resolve) => (release = resolve));
      });
      await held;
      let locked: ReturnType<typeof start> | undefined;
      let oneStatement: ReturnType<typeof start> | undefined;
      try {
        locked = start('locked', true);
        await untilWaitingForLock('select "id" from "chats"');
        oneStatement = start('one statement', false);
        await untilWaitingForLock('with "inserted_run" as ');
      } finally {
        release();
        await holder;
      }
      const [first, second] = await Promise.allSettled([locked, oneStatement]);
      // The locked start got there first and began the run; the other found the chat busy. Neither died.
      expect(first).toMatchObject({ status: 'fulfilled', value: { run: { status: 'pending' } } });
      expect(second.status).toBe('rejected');
      expect((second as PromiseRejectedResult).reason).toBeInstanceOf(RunAlreadyActiveError);
      const runs = await database.db.selectFrom('runs').select('id').where('chat_id', '=', chatId).execute();
      expect(runs).toHaveLength(1);
    },
  );

  it('appends with dense sequence numbers, grouping many writers into few inserts', async () => {
    const writers = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const runId = await run(await chat(), 'running');
        return log.openWriter({ runId, epoch: 1, nextSeq: 1 });
      }),
    );
    const batchesBefore = (await metrics.appendBatchSize.get()).values.find((v) =>
      v.metricName?.endsWith('_count'),
    );
    // Interleaved, and each delta names its writer: an event stored under another writer's run would show.
    // Some writers write characters of several UTF-8 bytes, so a page cut at a wrong offset would show too.
    const textOf = (w: number, index: number) => `${w}:${index}${w % 3 === 0 ? ' é😀' : ' '}`;
    for (let index = 0; index < 50; index++) {
      for (const [w, writer] of writers.entries()) {
        writer.append({ type: 'text-delta', id: 't', delta: textOf(w, index) });
      }
    }
    await Promise.all(writers.map((writer) => writer.flush()));
    const batchesAfter = (await metrics.appendBatchSize.get()).values.find((v) =>
      v.metricName?.endsWith('_count'),
    );
    // 1,000 events from 20 writers appended in one tick: a handful of inserts, not a thousand.
    expect((batchesAfter?.value ?? 0) - (batchesBefore?.value ?? 0)).toBeLessThanOrEqual(2);

    for (const [w, writer] of writers.entries()) {
      const events = await log.read({ runId: writer.runId, after: 0, limit: 1000 });
      expect(events.map((event) => event.seq)).toEqual(Array.from({ length: 50 }, (_, index) => index + 1));
      expect(events.map((event) => JSON.parse(event.data).delta)).toEqual(
        Array.from({ length: 50 }, (_, index) => textOf(w, index)),
      );
    }
  });

  it('commits a batch that meets a page already stored (a retried insert), failing none of its writers', async () => {
    const first = await run(await chat(), 'running');
    const second = await run(await chat(), 'running');
    // The first run's page of events 1–2 is already there, as after an insert that committed but whose
    // answer was lost.
    const kept = ['{"kept":1}', '{"kept":2}'];
    await database.db
      .insertInto('run_event_pages')
      .values({ run_id: first, first_seq: 1, last_seq: 2, events: Buffer.from(plainPageText(kept)) })
      .execute();
    const writers = [first, second].map((runId) => log.openWriter({ runId, epoch: 1, nextSeq: 1 }));
    for (const writer of writers) {
      writer.append({ type: 'text-delta', id: 't', delta: 'a' });
      writer.append({ type: 'text-delta', id: 't', delta: 'b' });
    }
    await Promise.all(writers.map((writer) => writer.flush()));
    const stored = await Promise.all([first, second].map((runId) => log.read({ runId, after: 0 })));
    expect(stored.map((events) => events.map((event) => event.data))).toEqual([
      kept,
      ['{"type":"text-delta","id":"t","delta":"a"}', '{"type":"text-delta","id":"t","delta":"b"}'],
    ]);
  });

  it('keeps chunk text byte for byte, and stores a NUL in text safely', async () => {
    const runId = await run(await chat(), 'running');
    const writer = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    writer.append({ type: 'text-delta', delta: 'a\u0000b', id: 'z' });
    writer.append({ z: 1, a: [1, 2, { y: 'é' }] });
    await writer.flush();
    const events = await log.read({ runId, after: 0 });
    expect(events.map((event) => event.data)).toEqual([
      '{"type":"text-delta","delta":"a\uFFFDb","id":"z"}',
      '{"z":1,"a":[1,2,{"y":"é"}]}',
    ]);
  });

  it('refuses appends from a writer whose epoch is no longer the run’s', async () => {
    const runId = await run(await chat(), 'running', 2);
    const stale = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    stale.append({ type: 'text-delta', delta: 'late' });
    await expect(stale.flush()).rejects.toBeInstanceOf(LeaseLostError);
    expect(() => stale.append({ type: 'x' })).toThrow(LeaseLostError);
    expect(await log.read({ runId, after: 0 })).toEqual([]);
  });

  it('tells a stale writer from its successor in one insert: only the successor’s rows go in', async () => {
    const runId = await run(await chat(), 'running', 2);
    const stale = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    const current = log.openWriter({ runId, epoch: 2, nextSeq: 1 });
    // Appended in one turn of the event loop: one batch, one insert, the run's id twice in it.
    stale.append({ type: 'text-delta', delta: 'stale' });
    current.append({ type: 'text-delta', delta: 'current' });
    stale.append({ type: 'text-delta', delta: 'stale again' });
    const [staleFlush, currentFlush] = await Promise.allSettled([stale.flush(), current.flush()]);
    expect(staleFlush.status === 'rejected' && staleFlush.reason).toBeInstanceOf(LeaseLostError);
    expect(currentFlush.status).toBe('fulfilled');
    expect((await log.read({ runId, after: 0 })).map((event) => event.data)).toEqual([
      '{"type":"text-delta","delta":"current"}',
    ]);
  });

  it('hands a writer’s events no insert has picked up to its ending, which writes them after the ones in flight', async () => {
    const faults = new Faults();
    const own = new EventLog({
      db: database.db,
      bus: new MemoryBus(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      faults,
    });
    const lifecycle = lifecycleOf(own, faults);
    const runId = await run(await chat(), 'running');
    const writer = own.openWriter({ runId, epoch: 1, nextSeq: 1 });
    const published: number[] = [];
    const unsubscribe = await own.subscribe(runId, (events) => published.push(...events.map((e) => e.seq)));
    const delta = (index: number) => ({ type: 'text-delta', id: 't', delta: `${index} ` });
    writer.append(delta(1));
    await writer.flush();

    // Events 2–3 are in an insert held before it is sent; 4–6 wait for the next one.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const inFlight = new Promise<void>((resolve) => (reached = resolve));
    faults.armTimes(FaultPoint.beforeEventInsert, 1, async () => {
      reached();
      await held;
    });
    writer.append(delta(2));
    writer.append(delta(3));
    await inFlight;
    for (let index = 4; index <= 6; index++) writer.append(delta(index));

    let taken: string[] | null = null;
    const taking = writer.takeTail(32).then((tail) => (taken = tail));
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Not before 2–3 are durable: the ending must number its events after them, and publish after them.
    expect(taken).toBeNull();
    release();
    await taking;
    expect(taken!.map((data) => JSON.parse(data).delta)).toEqual(['4 ', '5 ', '6 ']);
    expect(writer.lastSeq).toBe(3);
    // Nothing of 4–6 reaches the group commit any more (it would write them twice).
    await own.drain();
    expect((await own.read({ runId, after: 0 })).map((event) => event.seq)).toEqual([1, 2, 3]);

    const ended = await lifecycle.end({
      runId,
      epoch: 1,
      ending: Ending.succeeded(),
      lastSeq: writer.lastSeq,
      tail: taken!,
    });
    expect(ended?.run.status).toBe('succeeded');
    const events = await own.read({ runId, after: 0 });
    expect(events.map((event) => event.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(events.slice(3, 6).map((event) => JSON.parse(event.data).delta)).toEqual(['4 ', '5 ', '6 ']);
    expect(JSON.parse(events[6]!.data).type).toBe('data-run');
    expect(published).toEqual([1, 2, 3, 4, 5, 6, 7]);
    await unsubscribe();
  });

  it('leaves a tail longer than the ending takes to the group commit', async () => {
    const runId = await run(await chat(), 'running');
    const writer = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    for (let index = 1; index <= 3; index++)
      writer.append({ type: 'text-delta', id: 't', delta: `${index}` });
    expect(await writer.takeTail(2)).toEqual([]);
    expect(writer.lastSeq).toBe(3);
    expect((await log.read({ runId, after: 0 })).map((event) => event.seq)).toEqual([1, 2, 3]);
  });

  it('writes no tail of a writer that was fenced out: the ending declines and the events stay unwritten', async () => {
    const lifecycle = lifecycleOf(log);
    // Taken over: the run is at epoch 2, the writer holds epoch 1.
    const runId = await run(await chat(), 'running', 2);
    const stale = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    stale.append({ type: 'text-delta', id: 't', delta: 'late' });
    const tail = await stale.takeTail(32);
    expect(tail).toHaveLength(1);
    const ended = await lifecycle.end({ runId, epoch: 1, ending: Ending.succeeded(), lastSeq: 0, tail });
    expect(ended).toBeNull();
    expect(await log.read({ runId, after: 0 })).toEqual([]);
  });

  it('follows a run from any point: replay, then live, each sequence number once', async () => {
    const runId = await run(await chat(), 'running');
    const writer = log.openWriter({ runId, epoch: 1, nextSeq: 1 });
    for (let index = 0; index < 30; index++) writer.append({ type: 'text-delta', delta: `${index}` });
    await writer.flush();

    const seen: number[] = [];
    const follow = (async () => {
      for await (const item of followRun({ log, runId, after: 10, isFinished: async () => false })) {
        if (item.kind === 'events') seen.push(...item.events.map((event) => event.seq));
        if (item.kind === 'events' && item.end) break;
      }
    })();
    for (let index = 30; index < 60; index++) {
      writer.append({ type: 'text-delta', delta: `${index}` });
      if (index % 7 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    writer.append({ type: 'data-run', data: { status: 'succeeded' } }, { terminal: true });
    await writer.flush();
    await follow;
    expect(seen).toEqual(Array.from({ length: 51 }, (_, index) => index + 11));
  });
  it('promotes a run queued while the active run ends: the ending waits for the start holding the chat', async () => {
    const lifecycle = lifecycleOf(log);
    const runService = new RunService({ db: database.db, metrics, faults: new Faults() });
    const chatId = await chat();
    const activeId = await run(chatId, 'running');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let queuedInserted!: () => void;
    const inserted = new Promise<void>((resolve) => (queuedInserted = resolve));
    // A start that queues behind the active run, paused inside its transaction: it holds the chat's lock
    // and its queued run is not committed yet.
    const queuing = runService.begin({
      workspaceId,
      chatId,
      userId,
      parts: [{ type: 'text', text: 'next' }],
      model: 'scripted',
      trigger: 'api',
      enqueue: true,
      inTransaction: async () => {
        queuedInserted();
        await held;
      },
    });
    await inserted;
    // The active run ends meanwhile. Were its look for a queued run not behind the chat's lock, it would
    // find none, and the queued run would wait behind a chat with no active run for good.
    const ending = lifecycle.end({ runId: activeId, epoch: 1, ending: Ending.succeeded() });
    await new Promise((resolve) => setTimeout(resolve, 300));
    release();
    const queued = await queuing;
    expect(queued.run.status).toBe('queued');
    const ended = await ending;
    expect(ended?.run.status).toBe('succeeded');
    expect(ended?.promoted?.run.id).toBe(queued.run.id);
    const row = await database.db
      .selectFrom('runs')
      .select('status')
      .where('id', '=', queued.run.id)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('pending');
  });
});
