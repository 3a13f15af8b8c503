import {
  CompiledQuery,
  sql,
  type Compilable,
  type Expression,
  type QueryCreator,
  type QueryResult,
  type RawBuilder,
  type Transaction,
} from 'kysely';
import type { Logger } from 'pino';
import { LogEvery } from '../logger.ts';
import { BusChannel, type Bus } from '../bus/bus.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import type { Metrics } from '../metrics.ts';
import type { Db } from '../store/database.ts';
import type { Database } from '../store/schema.ts';
import { isUniqueViolation, retryTransient } from '../store/transient.ts';
import { TERMINAL_RUN_STATUSES, isTerminalStatus } from '../protocol/run.ts';
import {
  decodePage,
  decodePlainPage,
  decodePlainPages,
  encodePages,
  EVENTS_PER_PAGE,
  PLAIN,
  plainPageText,
  SEPARATOR,
  type EncodedPage,
} from './event-pages.ts';
import { isTerminalRunEventData } from './run-event.ts';

/** At most one log line per this long about failed publishes (the count of those in between goes with it). */
const PUBLISH_FAILURE_LOG_MS = 10_000;

/** The highest durable sequence number of a run (0 when it has none), read in `db` or a transaction. */
export async function lastSeqOf(db: Db | Transaction<Database>, runId: string): Promise<number> {
  const result = await sql<{ last: number }>`select ${lastSeqExpression(runId)} as last`.execute(db);
  return Number(result.rows[0]?.last ?? 0);
}

/**
 * A run's last durable sequence number as an expression, 0 without events: rows and pages alike. `runId` is
 * a value, or a column of the statement it goes in (`sql.ref`).
 */
export function lastSeqExpression(runId: string | Expression<string | null>): RawBuilder<number> {
  // One statement: a compaction committing meanwhile moves the events, never hides them from this read.
  return sql<number>`greatest(
      (select max(seq) from run_events where run_id = ${runId}),
      (select max(last_seq) from run_event_pages where run_id = ${runId}),
      0)`;
}

/**
 * Inserts serialized chunks as a run's next events, numbered by the statement itself after `lastSeq` or,
 * without it, after the run's last durable event: one round trip, where reading the last sequence number first
 * took two. The statement reads with its own snapshot, so call it once the run's row is locked (every status
 * change holds it), as a `lastSeqOf` before it would be. On its own or in a `with` clause; returns each `seq`.
 */
export function insertEvents(
  db: QueryCreator<Database>,
  runId: string,
  /** The chunks as one JSON array text (`eventsArray`). */
  events: string,
  lastSeq?: number,
  /** A condition the statement inserts only under (say, that its `with` clause's update matched). */
  onlyIf: RawBuilder<boolean> = sql`true`,
) {
  const after = lastSeq === undefined ? lastSeqExpression(runId) : sql<number>`${lastSeq}::int`;
  return db
    .insertInto('run_events')
    .columns(['run_id', 'seq', 'chunk'])
    .expression(
      sql`select ${runId}, ${after} + t.ord, t.chunk
        from json_array_elements(${events}::json) with ordinality as t(chunk, ord)
        where ${onlyIf}`,
    )
    .returning('seq');
}

/**
 * Serialized chunks as the one value `insertEvents` takes: a JSON array of their texts, unescaped (a `json`
 * element keeps its text exactly).
 */
export function eventsArray(data: readonly string[]): string {
  return `[${data.join(',')}]`;
}

/** One durable event of a run's stream: its sequence number and its chunk as JSON text. */
export interface LogEvent {
  seq: number;
  /** The chunk, serialized once and shared by every reader. */
  data: string;
  /** Whether this is the run's terminal `data-run` event (the last one it will ever have). */
  terminal: boolean;
  /**
   * The event's SSE frame, cached by the first reader on this instance that writes it: the bus hands every
   * local subscriber the same event objects, so the others write it as it is. The only field set after creation.
   */
  frame?: string;
}

/** The bus message that announces newly durable events of one run. */
export interface RunEventsMessage {
  runId: string;
  events: LogEvent[];
}

/** The writer lost its lease: another worker (or the sweeper) took the run over, so it may not append. */
export class LeaseLostError extends Error {
  readonly code = 'lease_lost';
  constructor(runId: string) {
    super(`The lease on run ${runId} was taken over; this worker may no longer append to it.`);
    this.name = 'LeaseLostError';
  }
}

/** Events read per statement by `replay`. */
const REPLAY_PAGE = 1000;

/** The largest sequence number a column holds (PostgreSQL `integer`). */
const MAX_SEQ = 2_147_483_647;

/** What a compaction (`compact`, `compactMany`) did with a run's events. */
export type CompactionResult =
  /** Its events now live in pages (`events` of them moved by this call). */
  | { compacted: true; events: number; pages: number }
  /**
   * Nothing: the run does not exist, is not finished, is held by another transaction, was compacted already,
   * or was left for a later batch (`deferred`: the batch's other runs already hold MAX_COMPACTION_BATCH_EVENTS).
   */
  | { compacted: false; reason: 'not_found' | 'not_finished' | 'busy' | 'already_compacted' | 'deferred' };

/**
 * Events one compaction batch reads at most (held in memory at once): a batch of long runs is cut after the
 * run that reaches it, and the rest wait for a later batch. A single run longer than this is compacted alone.
 */
export const MAX_COMPACTION_BATCH_EVENTS = 100_000;

interface PendingEvent {
  writer: RunEventWriter;
  seq: number;
  data: string;
  terminal: boolean;
}

export interface EventLogOptions {
  db: Db;
  /** The connection group-commit inserts use. @default db */
  appendDb?: Db;
  bus: Bus;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  /** Most events written by one insert. @default 2000 */
  maxBatchEvents?: number;
  /**
   * How long the first event appended to an idle log waits for others to share its insert (ms). At low
   * rates every event would otherwise cost an insert of its own; under load an insert is always in flight
   * and batches form without waiting. 0 waits only for the current macrotask. A writer that had the last
   * insert to itself does not wait (nobody else was writing to share it with). @default 0
   */
  coalesceMs?: number;
  /**
   * How long a batch is retried on transient database errors before its writers are failed: a database
   * blip shorter than this is ridden out by the run itself, well inside its lease. @default 10000
   */
  retryForMs?: number;
}

/**
 * The per-run, append-only event log (DESIGN §5, invariant 7).
 *
 * Writers append synchronously and get their sequence number at once; a single group committer takes
 * everything appended since its last write (across all runs) and inserts it in one statement. Only after
 * that insert commits are the events published on the bus, so a reader never sees an event that a replay
 * could not return. Each insert is fenced by the writer's epoch: if the run was taken over, the
 * rows are not written and the writer fails with `LeaseLostError`.
 */
export class EventLog {
  readonly #db: Db;
  readonly #appendDb: Db;
  readonly #bus: Bus;
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  readonly #faults: Faults;
  readonly #maxBatchEvents: number;
  readonly #retryForMs: number;
  readonly #coalesceMs: number;
  #pending: PendingEvent[] = [];
  #flushing: Promise<void> | null = null;
  /** The run whose events alone made up the last insert; null when it held more than one run's. */
  #soleRunOfLastInsert: string | null = null;
  /** A bus outage fails every batch of every run: one line per `PUBLISH_FAILURE_LOG_MS` at most. */
  readonly #publishFailures = new LogEvery(PUBLISH_FAILURE_LOG_MS);

  constructor(options: EventLogOptions) {
    this.#db = options.db;
    this.#appendDb = options.appendDb ?? options.db;
    this.#bus = options.bus;
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#faults = options.faults;
    this.#maxBatchEvents = options.maxBatchEvents ?? 2000;
    this.#retryForMs = options.retryForMs ?? 10_000;
    this.#coalesceMs = options.coalesceMs ?? 0;
  }

  /** Logs a failed publish: the first at once, then at most one per `PUBLISH_FAILURE_LOG_MS`, with the count. */
  #publishFailed(error: unknown, runId: string): void {
    const held = this.#publishFailures.take();
    if (held === null) return;
    this.#logger.warn(
      { err: error, runId, failures: held + 1 },
      'publishing events failed (readers catch up from the log)',
    );
  }

  /** A writer for a run this worker owns under `epoch`; `nextSeq` is the first sequence number it assigns. */
  openWriter(options: { runId: string; epoch: number; nextSeq: number }): RunEventWriter {
    return new RunEventWriter(this, options.runId, options.epoch, options.nextSeq);
  }

  /**
   * Appends chunks to a run's log inside the caller's transaction (an approval's answer; a status change
   * inserts its own with `insertEvents` in a statement that also does other writes, a start with
   * `numberEvents`). The caller holds the run's row lock, which the group commit's fenced insert also takes,
   * so the sequence numbers cannot collide. Publish the returned events with `publish` once the transaction has committed.
   * `lastSeq` is the run's last sequence number when the caller knows it in this transaction (0 for a new run).
   */
  async appendInTransaction(
    tx: Transaction<Database>,
    runId: string,
    chunks: unknown[],
    options: { lastSeq?: number } = {},
  ): Promise<LogEvent[]> {
    if (chunks.length === 0) return [];
    const data = chunks.map(serializeChunk);
    const inserted = await insertEvents(tx, runId, eventsArray(data), options.lastSeq).execute();
    return numberSerialized(data, Math.min(...inserted.map((row) => row.seq)) - 1);
  }

  /** Every durable event of a run, oldest first, parsed (a projection rebuild or a resume reads this). */
  async *replay(
    runId: string,
    db: Db | Transaction<Database> = this.#db,
  ): AsyncGenerator<{ seq: number; chunk: unknown }> {
    let after = 0;
    for (;;) {
      const events = await readEvents(db, runId, after, REPLAY_PAGE);
      for (const event of events) yield { seq: event.seq, chunk: JSON.parse(event.data) };
      if (events.length < REPLAY_PAGE) return;
      after = events[events.length - 1]!.seq;
    }
  }

  /** The highest durable sequence number of a run (0 when it has none). */
  async lastSeq(runId: string): Promise<number> {
    return lastSeqOf(this.#db, runId);
  }

  /**
   * Durable events of a run with `seq > after`, oldest first, at most `limit`. Fewer than `limit` means there
   * are no more durable events now, wherever the run's events are stored.
   */
  async read(options: { runId: string; after: number; limit?: number }): Promise<LogEvent[]> {
    const events = await readEvents(this.#db, options.runId, options.after, options.limit ?? 1000);
    return logEventsOf(events);
  }

  /**
   * Moves a finished run's events as written into compressed pages: `compactMany` of one run.
   * Only a terminal run (which never gets another event) is compacted; a second call, or one racing another
   * instance, does nothing.
   */
  async compact(runId: string): Promise<CompactionResult> {
    const results = await this.compactMany([runId]);
    return results.get(runId)!;
  }

  /**
   * Moves the events of finished runs as written (`run_events` rows and the group commit's plain pages) into
   * compressed pages, in ONE transaction that holds the runs' rows and makes the same few statements whatever
   * the number of runs: a run's events are at every moment either all as written or all compressed, and a
   * reader's one statement sees one or the other. Runs
   * that are not finished, are held by another transaction or were compacted already are left alone, each
   * with its reason; runs past `maxEvents` (MAX_COMPACTION_BATCH_EVENTS) events in all are `deferred`.
   * Returns a result for every id given.
   */
  async compactMany(
    runIds: readonly string[],
    options: { maxEvents?: number } = {},
  ): Promise<Map<string, CompactionResult>> {
    const maxEvents = options.maxEvents ?? MAX_COMPACTION_BATCH_EVENTS;
    const ids = [...new Set(runIds)];
    const results = new Map<string, CompactionResult>();
    if (ids.length === 0) return results;
    await this.#db.transaction().execute(async (tx) => {
      // In id order, as the group commit and the heartbeat lock runs: different orders could deadlock. Each
      // run's events are counted by the same statement, so that memory stays bounded (below).
      const locked = await tx
        .selectFrom('runs')
        .select([
          'id',
          'status',
          'events_compacted_at',
          // Rows and the events of plain pages (every page of a run not yet compacted is one).
          sql<string>`(select count(*) from run_events e where e.run_id = runs.id)
            + (select coalesce(sum(p.last_seq - p.first_seq + 1), 0) from run_event_pages p
                where p.run_id = runs.id)`.as('events'),
        ])
        .where('id', '=', anyOf(ids))
        .orderBy('id')
        .forUpdate()
        .skipLocked()
        .execute();
      const lockedIds = new Set(locked.map((run) => run.id));
      const missing = ids.filter((id) => !lockedIds.has(id));
      if (missing.length > 0) {
        // A run the lock skipped is held elsewhere (busy) unless it does not exist at all.
        const existing = await tx.selectFrom('runs').select('id').where('id', '=', anyOf(missing)).execute();
        const existingIds = new Set(existing.map((run) => run.id));
        for (const id of missing) {
          results.set(id, { compacted: false, reason: existingIds.has(id) ? 'busy' : 'not_found' });
        }
      }
      const compactable: string[] = [];
      for (const run of locked) {
        if (!isTerminalStatus(run.status)) {
          results.set(run.id, { compacted: false, reason: 'not_finished' });
        } else if (run.events_compacted_at) {
          results.set(run.id, { compacted: false, reason: 'already_compacted' });
        } else {
          compactable.push(run.id);
        }
      }
      if (compactable.length === 0) return;
      // Memory stays bounded: the runs whose events fit, in lock order (at least one), and the rest later.
      const eventCount = new Map(locked.map((run) => [run.id, Number(run.events ?? 0)]));
      let batchEvents = 0;
      const fitting = compactable.filter((runId, index) => {
        batchEvents += eventCount.get(runId) ?? 0;
        if (index === 0 || batchEvents <= maxEvents) return true;
        results.set(runId, { compacted: false, reason: 'deferred' });
        return false;
      });
      compactable.splice(0, compactable.length, ...fitting);

      // Its rows (events a status change wrote) and plain pages (the group commit's), in one read: a run's
      // plain pages as ONE row, their texts joined, with each page's first and last numbers in the same order
      // (`decodePlainPages`; one pass feeds the three aggregates, so they agree without an `order by` each,
      // which cost PostgreSQL three sorts per run). (A run not yet compacted has no compressed page; one would
      // be read as it is.)
      const stored = await sql<CompactionRow>`
        select run_id, seq, chunk::text as data, null::integer as last_seq, null::bytea as events,
               null::text as first_seqs, null::text as last_seqs
          from run_events where run_id = ${anyOf(compactable)}
        union all
        select run_id, null, string_agg(convert_from(substring(events from 2), 'UTF8'), ${sql.lit(SEPARATOR)}),
               null, null, string_agg(first_seq::text, ','), string_agg(last_seq::text, ',')
          from run_event_pages where run_id = ${anyOf(compactable)} and ${isPlain}
          group by run_id
        union all
        select run_id, first_seq, null, last_seq, events, null, null
          from run_event_pages where run_id = ${anyOf(compactable)} and not ${isPlain}`.execute(tx);
      const rowsOf = new Map<string, CompactionRow[]>(compactable.map((id) => [id, []]));
      for (const row of stored.rows) rowsOf.get(row.run_id)!.push(row);
      // One run after another: compressing a batch's runs side by side on the thread pool costs about three
      // times the CPU (measured on 50 short runs), every one of them with a compressor of its own. Each run is
      // decoded just before its pages are compressed, and every page yields the event loop, so a batch holds
      // it for one run's decoding at a time, not the whole batch's.
      const pagesOf: { runId: string; pages: EncodedPage[]; events: number }[] = [];
      for (const runId of compactable) {
        const events = eventsOfCompactionRows(rowsOf.get(runId)!);
        rowsOf.delete(runId);
        pagesOf.push({ runId, pages: await encodePages(events), events: events.length });
      }
      // The rows and plain pages go and the runs are marked in one statement, before the compressed pages
      // go in (one may end where a plain page did: the same key).
      await tx
        .with('deleted_rows', (db) => db.deleteFrom('run_events').where('run_id', '=', anyOf(compactable)))
        .with('deleted_pages', (db) =>
          db.deleteFrom('run_event_pages').where('run_id', '=', anyOf(compactable)),
        )
        .updateTable('runs')
        .set({ events_compacted_at: sql<Date>`now()` })
        .where('id', '=', anyOf(compactable))
        .execute();
      await insertPages(
        tx,
        pagesOf.flatMap(({ runId, pages }) => pages.map((page) => ({ runId, ...page }))),
      );
      await this.#faults.hit(FaultPoint.compactionBeforeCommit, { runIds: compactable });
      for (const { runId, pages, events } of pagesOf) {
        results.set(runId, { compacted: true, events, pages: pages.length });
      }
    });
    return results;
  }

  /**
   * Reclaims the space of compacted rows and plain pages for new ones. PostgreSQL's autovacuum does this by
   * itself; PGlite has no autovacuum, so its compactor calls this now and then.
   */
  async vacuum(): Promise<void> {
    await sql`vacuum run_events, run_event_pages`.execute(this.#db);
  }

  /**
   * Deletes the events of up to `limit` compacted runs that finished more than `retentionMs` ago (by the
   * database's clock), longest finished first, and marks each run `events_deleted_at`, all in one transaction.
   * Runs another instance is deleting are skipped. Returns how many runs lost their events.
   */
  async deleteExpiredEvents(retentionMs: number, limit: number): Promise<number> {
    return this.#db.transaction().execute(async (tx) => {
      const expired = await tx
        .selectFrom('runs')
        .select('id')
        // The same predicate as the partial index `runs_events_retained_idx`.
        .where('events_compacted_at', 'is not', null)
        .where('events_deleted_at', 'is', null)
        .where('finished_at', '<', sql<Date>`now() - make_interval(secs => ${retentionMs / 1000})`)
        .orderBy('finished_at')
        .limit(limit)
        .forUpdate()
        .skipLocked()
        .execute();
      const ids = expired.map((row) => row.id);
      if (ids.length === 0) return 0;
      await tx
        .with('deleted_rows', (db) => db.deleteFrom('run_events').where('run_id', '=', anyOf(ids)))
        .with('deleted_pages', (db) => db.deleteFrom('run_event_pages').where('run_id', '=', anyOf(ids)))
        .updateTable('runs')
        .set({ events_deleted_at: sql<Date>`now()` })
        .where('id', '=', anyOf(ids))
        .execute();
      return ids.length;
    });
  }

  /** Finished runs whose events are still as written (not compacted), longest finished first, at most `limit`. */
  async uncompactedRuns(limit: number): Promise<string[]> {
    const rows = await this.#db
      .selectFrom('runs')
      .select('id')
      // The same predicate as the partial index `runs_events_uncompacted_idx`.
      .where('events_compacted_at', 'is', null)
      .where('status', 'in', TERMINAL_RUN_STATUSES)
      .orderBy('finished_at')
      .limit(limit)
      .execute();
    return rows.map((row) => row.id);
  }

  /** Calls `handler` with each batch of a run's events as they become durable. */
  subscribe(runId: string, handler: (events: LogEvent[]) => void): Promise<() => Promise<void>> {
    return this.#bus.subscribe(BusChannel.runEvents(runId), (message) => {
      handler((message as RunEventsMessage).events);
    });
  }

  /**
   * Whether `subscribe` for this run would hear every later event at once, without a round trip to the bus's
   * server (in-process; or a run this instance already follows on a networked bus).
   */
  listening(runId: string): boolean {
    return this.#bus.listening(BusChannel.runEvents(runId));
  }

  /** Announces events that a transaction elsewhere (the settle) has just committed. */
  async publish(runId: string, events: LogEvent[]): Promise<void> {
    if (events.length === 0) return;
    this.#metrics.eventsAppended.inc(events.length);
    const message: RunEventsMessage = { runId, events };
    await this.#faults.hit(FaultPoint.busPublish, { runId });
    await this.#bus.publish(BusChannel.runEvents(runId), message);
  }

  /** Resolves once everything appended before the call is durable (or has failed). */
  async drain(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  /**
   * Takes `writer`'s events that no insert has picked up yet out of the queue, if there are at most `max` of
   * them (`RunEventWriter.takeTail`): they are its last ones, as it appends in order and a batch takes the
   * oldest. None when there are more.
   */
  takeQueued(writer: RunEventWriter, max: number): PendingEvent[] {
    let count = 0;
    for (const event of this.#pending) if (event.writer === writer) count++;
    if (count === 0 || count > max) return [];
    const taken = this.#pending.filter((event) => event.writer === writer);
    this.#pending = this.#pending.filter((event) => event.writer !== writer);
    return taken;
  }

  enqueue(event: PendingEvent): void {
    this.#pending.push(event);
    if (!this.#flushing) {
      // The window is for other runs' events to share the insert. A run that had the last insert to itself
      // is most likely streaming alone (a lone run at tens of tokens a second): its events never share one,
      // and waiting would cost it a timer and a wake-up of the process per event.
      const alone = event.writer.runId === this.#soleRunOfLastInsert;
      this.#flushing = this.#flushLoop(alone ? 0 : this.#coalesceMs);
    }
  }

  async #flushLoop(coalesceMs: number): Promise<void> {
    // Yield once so that everything appended in this tick (or within the coalescing window) joins the first
    // batch; later batches are whatever arrived while the previous insert ran.
    await new Promise<void>((resolve) =>
      coalesceMs > 0 ? setTimeout(resolve, coalesceMs) : setImmediate(resolve),
    );
    try {
      while (this.#pending.length > 0) {
        const batch =
          this.#pending.length <= this.#maxBatchEvents
            ? this.#pending
            : this.#pending.slice(0, this.#maxBatchEvents);
        this.#pending = batch === this.#pending ? [] : this.#pending.slice(this.#maxBatchEvents);
        try {
          await this.#writeBatch(batch);
        } catch (error) {
          // Never a rejected loop: whatever went wrong, the writers of this batch learn it from `flush`.
          this.#logger.error(
            { err: error, events: batch.length },
            'event log batch failed; failing its writers',
          );
          const failure = error instanceof Error ? error : new Error(String(error));
          for (const event of batch) event.writer.fail(failure);
        }
      }
    } finally {
      this.#flushing = null;
    }
  }

  async #writeBatch(batch: PendingEvent[]): Promise<void> {
    // A writer's events in a batch are consecutive (it appends in order, and a batch takes the oldest
    // pending events): they become its pages, of at most EVENTS_PER_PAGE events each (`eventRows` relies on it).
    const writers = new Map<RunEventWriter, PendingEvent[]>();
    for (const event of batch) {
      if (event.writer.failure) continue;
      const events = writers.get(event.writer);
      if (events) events.push(event);
      else writers.set(event.writer, [event]);
    }
    if (writers.size === 0) return;
    // Per page, in `appendSql`'s order.
    const runIds: string[] = [];
    const epochsSent: number[] = [];
    const firstSeqs: number[] = [];
    const lastSeqs: number[] = [];
    const pageTexts: string[] = [];
    const byteLengths: number[] = [];
    let eventCount = 0;
    // The run whose events alone make up this insert, if one does (`enqueue` reads it).
    let soleRunId: string | null | undefined;
    for (const [writer, events] of writers) {
      soleRunId = soleRunId === undefined || soleRunId === writer.runId ? writer.runId : null;
      for (let start = 0; start < events.length; start += EVENTS_PER_PAGE) {
        // Most writers' events fit one page: no copy then.
        const page = events.length <= EVENTS_PER_PAGE ? events : events.slice(start, start + EVENTS_PER_PAGE);
        runIds.push(writer.runId);
        epochsSent.push(writer.epoch);
        firstSeqs.push(page[0]!.seq);
        lastSeqs.push(page[page.length - 1]!.seq);
        const text = plainPageText(page.map((event) => event.data));
        pageTexts.push(text);
        byteLengths.push(Buffer.byteLength(text));
      }
      eventCount += events.length;
    }
    this.#soleRunOfLastInsert = soleRunId ?? null;

    let epochs: Map<string, number>;
    try {
      epochs = await this.#insertWithRetry([
        pageTexts.join(''),
        runIds,
        epochsSent,
        intArrayLiteral(firstSeqs),
        intArrayLiteral(lastSeqs),
        intArrayLiteral(byteLengths),
      ]);
    } catch (error) {
      this.#logger.error({ err: error, events: eventCount }, 'event log insert failed; failing its writers');
      for (const writer of writers.keys())
        writer.fail(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    this.#metrics.appendBatchSize.observe(eventCount);

    for (const [writer, events] of writers) {
      // Its rows went in (or were there already, from a retried insert) exactly when the epoch held.
      if (epochs.get(writer.runId) !== writer.epoch) {
        writer.fail(new LeaseLostError(writer.runId));
        continue;
      }
      writer.markDurable(events[events.length - 1]!.seq);
      // A bus failure must not fail the run: readers re-read the log on the next event or keep-alive.
      this.publish(
        writer.runId,
        events.map(({ seq, data, terminal }) => ({ seq, data, terminal })),
      ).catch((error: unknown) => this.#publishFailed(error, writer.runId));
    }
  }

  /**
   * Inserts a batch's events (`appendSql` says what each parameter holds), skipping rows whose run was taken
   * over (epoch mismatch) and rows already present (a retry of an insert that committed before its connection
   * dropped). Returns each run's epoch as the insert read it under its lock: a run's rows went in exactly when
   * that is the epoch they carry.
   *
   * It inserts plainly first: `on conflict do nothing` makes PostgreSQL check every row against the index
   * before inserting it (about an eighth of a large batch's cost), and rows can only be there already when a
   * retried insert had committed. An insert that meets a stored row goes again the skipping way, so no batch
   * fails for it.
   */
  async #insertWithRetry(parameters: AppendParameters): Promise<Map<string, number>> {
    type Fenced = { id: string; epoch: number };
    // Prepared once per connection, as every statement is (decision 0009).
    const insert = async (text: string) => {
      const { rows } = await this.#appendDb.executeQuery<Fenced>(CompiledQuery.raw(text, parameters));
      return new Map(rows.map((row) => [row.id, row.epoch]));
    };
    return retryTransient(
      async () => {
        await this.#faults.hit(FaultPoint.beforeEventInsert);
        try {
          return await insert(APPEND_SQL);
        } catch (error) {
          if (!isUniqueViolation(error)) throw error;
          return insert(APPEND_SKIPPING_SQL);
        }
      },
      {
        attempts: Number.POSITIVE_INFINITY,
        deadlineMs: this.#retryForMs,
        delayMs: 50,
        onRetry: () => this.#metrics.appendRetries.inc(),
      },
    );
  }
}

/**
 * Appends the events of one run for the worker that owns it. `append` is synchronous and returns the
 * event's sequence number; `flush` waits until everything appended so far is durable.
 */
export class RunEventWriter {
  #nextSeq: number;
  #durableSeq: number;
  #waiters: { seq: number; resolve: () => void; reject: (error: Error) => void }[] = [];
  failure: Error | null = null;

  constructor(
    private readonly log: EventLog,
    readonly runId: string,
    readonly epoch: number,
    nextSeq: number,
  ) {
    this.#nextSeq = nextSeq;
    this.#durableSeq = nextSeq - 1;
  }

  /** The sequence number of the last event appended (durable or not). */
  get lastSeq(): number {
    return this.#nextSeq - 1;
  }

  append(chunk: unknown, options: { terminal?: boolean } = {}): number {
    if (this.failure) throw this.failure;
    const seq = this.#nextSeq++;
    this.log.enqueue({ writer: this, seq, data: serializeChunk(chunk), terminal: options.terminal ?? false });
    return seq;
  }

  /**
   * Hands the writer's last events to a status change that writes them in its own statement, where the group
   * commit would give them one more (decision 0015): takes the events no insert has picked up yet, at most
   * `max` of them (more are left to the group commit), waits until every event before them is durable, and
   * returns their data, to be numbered from the new `lastSeq + 1`. The writer then ends before them. Rejects
   * if the writer failed.
   */
  async takeTail(max: number): Promise<string[]> {
    const taken = this.log.takeQueued(this, max);
    if (taken.length > 0) this.#nextSeq = taken[0]!.seq;
    await this.flush();
    return taken.map((event) => event.data);
  }

  /** Resolves when every event appended so far is durable; rejects if the writer failed. */
  flush(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const seq = this.lastSeq;
    if (seq <= this.#durableSeq) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ seq, resolve, reject }));
  }

  markDurable(seq: number): void {
    this.#durableSeq = Math.max(this.#durableSeq, seq);
    const ready = this.#waiters.filter((waiter) => waiter.seq <= this.#durableSeq);
    if (ready.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => waiter.seq > this.#durableSeq);
    for (const waiter of ready) waiter.resolve();
  }

  fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }
}

/**
 * `= any($n::text[])` over `ids`: one statement text for a list of any length, so each of a compaction's
 * statements is prepared once per connection (`in ($1, …)` made a statement per length, each prepared anew and
 * holding one of the connection's named statements, decision 0009).
 */
const anyOf = (ids: readonly string[]) => sql<string>`any(${[...ids]}::text[])`;

/**
 * The group commit's insert: `run_event_pages` rows of format `PLAIN` (`plainPageText`), one per writer (or
 * more, of at most EVENTS_PER_PAGE events), where a row per event cost PostgreSQL a heap tuple, an index entry
 * and a JSON parse each, and compaction a delete each (docs/decisions/0014-group-commit-writes-pages.md). `$1`:
 * the pages' texts one after another; per page, in one order: `$2` its writer's run id (`text[]`), `$3` its
 * writer's epoch, `$4` and `$5` its first and last sequence numbers, `$6` its length in UTF-8 bytes (`int[]`).
 * The text becomes bytes once and each page is cut from them by offset: one statement text for any number of
 * pages. A page is skipped when its run was taken over (epoch mismatch); with `skipExisting`, a page already
 * present (a retried insert) too. Two writers of one run (a stale one and its successor) are told apart by
 * their epochs.
 */
const appendSql = (skipExisting: boolean) => `
  with fenced as (
    -- The fence holds under concurrency: a status change by anyone holds the run row until it commits, so
    -- this waits and reads the new epoch; if this commits first, the change sees its rows. The rows are
    -- locked in id order, as a heartbeat locks them: different orders would deadlock. Each run is looked up
    -- by its key: \`id = any($2)\` let the planner scan every run row once the table was small (a new
    -- install, a benchmark), a cost paid by every insert.
    select u.id, r.epoch
    from (select distinct id from unnest($2::text[]) as t(id) order by id) u
    cross join lateral (select r.epoch from runs r where r.id = u.id for share) r
  ),
  -- Once: inlined, the conversion would run again for every page.
  batch as materialized (select convert_to($1::text, 'UTF8') as bytes),
  inserted as (
    insert into run_event_pages (run_id, first_seq, last_seq, events)
    select w.id, w.first_seq, w.last_seq, substring(b.bytes from w.start + 1 for w.length)
    from (
      select w.*, (sum(w.length) over (order by w.n) - w.length)::int as start
      from unnest($2::text[], $3::int[], $4::int[], $5::int[], $6::int[])
        with ordinality as w(id, epoch, first_seq, last_seq, length, n)
    ) w
    cross join batch b
    join fenced f on f.id = w.id and f.epoch = w.epoch
    ${skipExisting ? 'on conflict do nothing' : ''}
  )
  -- The epochs the insert was fenced by: cheaper than counting the rows it returns, and as telling.
  select id, epoch from fenced`;
const APPEND_SQL = appendSql(false);
const APPEND_SKIPPING_SQL = appendSql(true);
type AppendParameters = [
  pages: string,
  runIds: string[],
  epochs: number[],
  firstSeqs: string,
  lastSeqs: string,
  byteLengths: string,
];

/**
 * Integers as PostgreSQL's array literal (`{1,2,3}`), for an `int[]` parameter: the driver would quote and
 * escape each element of a JavaScript array, two regular expressions per event of a batch.
 */
const intArrayLiteral = (values: readonly number[]) => `{${values.join(',')}}`;

/** Most page bytes written by one insert during a compaction, so a batch of long runs is sent in parts. */
export const PAGE_BYTES_PER_INSERT = 4 * 1024 * 1024;

/** A compacted page as its `run_event_pages` row. */
interface PageRow {
  runId: string;
  firstSeq: number;
  lastSeq: number;
  bytes: Buffer;
}

/**
 * Inserts a compaction's pages in statements of at most `PAGE_BYTES_PER_INSERT` bytes (past a statement's first
 * page), each with ONE statement text whatever its number of pages: the pages' bytes go as one `bytea`, cut
 * apart by offset and length, and their other columns as arrays. A `values` list made a text per number of
 * pages, each prepared anew on every connection and holding one of its named statements (decision 0009).
 */
async function insertPages(tx: Transaction<Database>, rows: readonly PageRow[]): Promise<void> {
  for (const batch of insertBatches(rows)) {
    const runIds = batch.map((row) => row.runId);
    const firstSeqs = batch.map((row) => row.firstSeq);
    const lastSeqs = batch.map((row) => row.lastSeq);
    const lengths = batch.map((row) => row.bytes.length);
    // Where each page starts in `bytes`, from 0.
    let end = 0;
    const starts = lengths.map((length) => (end += length) - length);
    const bytes = Buffer.concat(batch.map((row) => row.bytes));
    await sql`insert into run_event_pages (run_id, first_seq, last_seq, events)
      select p.run_id, p.first_seq, p.last_seq, substring(${bytes}::bytea from p.start + 1 for p.length)
      from unnest(${runIds}::text[], ${firstSeqs}::int[], ${lastSeqs}::int[], ${starts}::int[], ${lengths}::int[])
        as p(run_id, first_seq, last_seq, start, length)`.execute(tx);
  }
}

/** Page rows cut into inserts of at most `PAGE_BYTES_PER_INSERT` bytes (past each insert's first page). */
function insertBatches(rows: readonly PageRow[]): PageRow[][] {
  const batches: PageRow[][] = [];
  let batch: PageRow[] = [];
  let bytes = 0;
  for (const row of rows) {
    if (batch.length > 0 && bytes + row.bytes.length > PAGE_BYTES_PER_INSERT) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(row);
    bytes += row.bytes.length;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/**
 * Durable events of a run with `seq > after`, oldest first, at most `limit`, from rows and pages in ONE
 * statement: a compaction that commits between two statements could otherwise hide events from both.
 */
async function readEvents(
  db: Db | Transaction<Database>,
  runId: string,
  after: number,
  limit: number,
): Promise<{ seq: number; data: string }[]> {
  const result = await eventRows(runId, after, upToOf(after, limit), limit).execute(db);
  return eventsOfRows(result.rows, after, limit);
}

/**
 * A statement that reads a run's events after `after` (as `EventLog.read`: at most `limit`, up to `upTo`,
 * which is `upToOf(after, limit)`) and the row `visible` finds, in ONE round trip: `visible` is a query of at
 * most one row under the reader's access check, and `runId` the run to read (an id, or a column of that row:
 * `sql.ref('visible_run.<column>')`). A resume makes it where a check beside the read took two
 * (`RunService.readOwned`, `RunService.activeOfOwnedChat`), and compiles it once per shape (`StatementShapes`:
 * every value may be a placeholder). `visibleRunOf` reads its result.
 */
export function visibleRunStatement<V extends object>(
  db: Db,
  visible: Expression<V>,
  values: { runId: string | RawBuilder<string | null>; after: number; upTo: number; limit: number },
): Compilable<V & VisibleEventRow> {
  const { runId, after, upTo, limit } = values;
  // Materialized: inlined, the row's subqueries (a run's last sequence number) ran again for every event row.
  const statement = sql<V & VisibleEventRow>`
    with visible_run as materialized ${visible}
    select visible_run.*, e.seq as event_seq, e.data as event_data, e.last_seq as event_last_seq,
           e.events as event_page
      from visible_run left join lateral (${eventRows(runId, after, upTo, limit)}) as e on true`;
  return { compile: () => statement.compile(db) };
}

/**
 * The visible row and the events of `visibleRunStatement`'s result, read with `after` and `limit`. Undefined
 * when the statement found no row (and then it read no event); no events when the row's run is null.
 */
export function visibleRunOf<V extends object>(
  result: QueryResult<V & VisibleEventRow>,
  after: number,
  limit: number,
): { row: V; events: LogEvent[] } | undefined {
  const first = result.rows[0];
  if (!first) return undefined;
  // A row without events after `after` has null event columns.
  const rows = first.event_seq === null ? [] : result.rows;
  const events = eventsOfRows(
    rows.map((row) => ({
      seq: row.event_seq!,
      data: row.event_data,
      last_seq: row.event_last_seq,
      events: row.event_page,
    })),
    after,
    limit,
  );
  const { event_seq: _seq, event_data: _data, event_last_seq: _lastSeq, event_page: _page, ...row } = first;
  return { row: row as unknown as V, events: logEventsOf(events) };
}

/** The last sequence number a read of `limit` events after `after` may return. */
export function upToOf(after: number, limit: number): number {
  return Math.min(after + limit, MAX_SEQ);
}

/** `eventRows`' columns as `visibleRunStatement` selects them beside the visible row's. */
export interface VisibleEventRow {
  event_seq: number | null;
  event_data: string | null;
  event_last_seq: number | null;
  event_page: Uint8Array | null;
}

/** Events read from the log, each marked whether it is the run's terminal one. */
function logEventsOf(events: { seq: number; data: string }[]): LogEvent[] {
  return events.map((event) => ({ ...event, terminal: isTerminalRunEventData(event.data) }));
}

/**
 * A row of `eventRows`: an event (`data`), a plain page (`data`, its events' lines, and `last_seq`) or a
 * compressed page (`events` and `last_seq`).
 */
interface EventRow {
  seq: number;
  data: string | null;
  last_seq: number | null;
  events: Uint8Array | null;
}

/**
 * The rows and pages that hold a run's events `after + 1 … upTo` (`upToOf(after, limit)`: `after + limit`, at
 * most the largest sequence number). Sequence numbers are dense (invariant 7), so the pages are exactly those
 * that start at or before `upTo` and end after `after`; and since no page holds more than EVENTS_PER_PAGE
 * events, they end by `upTo + EVENTS_PER_PAGE - 1`, which bounds the scan of the primary key
 * `(run_id, last_seq)` to them and at most a page's worth past `upTo`.
 */
function eventRows(
  runId: string | RawBuilder<string | null>,
  after: number,
  upTo: number,
  limit: number,
): RawBuilder<EventRow> {
  return sql<EventRow>`
    (select seq, chunk::text as data, null::integer as last_seq, null::bytea as events
       from run_events where run_id = ${runId} and seq > ${after} and seq <= ${upTo}
       order by seq limit ${limit})
    union all
    (select ${pageColumns}
       from run_event_pages
      where run_id = ${runId} and last_seq > ${after}
        and last_seq <= least(${upTo}::bigint + ${sql.lit(EVENTS_PER_PAGE - 1)}, ${sql.lit(MAX_SEQ)})::integer
        and first_seq <= ${upTo})`;
}

/**
 * A `run_event_pages` row as `EventRow`'s columns: a plain page's events as text (PGlite parses a `bytea`
 * result about ten times slower than text), a compressed page's as bytes.
 */
const isPlain = sql<boolean>`get_byte(substring(events from 1 for 1), 0) = ${sql.lit(PLAIN)}`;
const pageColumns = sql`first_seq as seq,
  case when ${isPlain} then convert_from(substring(events from 2), 'UTF8') end as data,
  last_seq,
  case when ${isPlain} then null else events end as events`;

/** The events of `eventRows`' rows, pages decoded, oldest first, at most `limit`. */
function eventsOfRows(
  rows: readonly EventRow[],
  after: number,
  limit: number,
): { seq: number; data: string }[] {
  const events: { seq: number; data: string }[] = [];
  for (const row of rows) {
    if (row.last_seq === null) events.push({ seq: row.seq, data: row.data! });
    else if (row.events === null) {
      events.push(...decodePlainPage({ firstSeq: row.seq, lastSeq: row.last_seq, text: row.data! }, after));
    } else {
      events.push(...decodePage({ firstSeq: row.seq, lastSeq: row.last_seq, bytes: row.events }, after));
    }
  }
  events.sort((a, b) => a.seq - b.seq);
  return events.length > limit ? events.slice(0, limit) : events;
}

/**
 * A row of compaction's read: an event or a compressed page (`EventRow`'s columns), or all of a run's plain
 * pages (`data` their texts joined, `first_seqs` and `last_seqs` per page in the same order, comma-separated:
 * the driver's parser of an `integer[]` took longer over a paced run's thousand pages than their decoding).
 */
type CompactionRow = EventRow & {
  run_id: string;
  first_seqs: string | null;
  last_seqs: string | null;
};

const numbersOf = (list: string) => list.split(',').map(Number);

/** The events of a run's `CompactionRow`s, oldest first. */
function eventsOfCompactionRows(rows: readonly CompactionRow[]): { seq: number; data: string }[] {
  const plain = rows.find((row) => row.first_seqs !== null);
  const others = rows.filter((row) => row.first_seqs === null);
  const events = eventsOfRows(others, 0, Number.POSITIVE_INFINITY);
  if (!plain) return events;
  const pages = decodePlainPages({
    firstSeqs: numbersOf(plain.first_seqs!),
    lastSeqs: numbersOf(plain.last_seqs!),
    text: plain.data!,
  });
  // In the order the database read the pages (usually the key's); status changes' rows, few, merged in.
  const all = events.length === 0 ? pages : [...events, ...pages];
  return all.every((event, index) => index === 0 || all[index - 1]!.seq < event.seq)
    ? all
    : all.sort((a, b) => a.seq - b.seq);
}

/**
 * Chunks as the events that follow `lastSeq`, serialized once: for a caller that inserts them itself, in a
 * statement of its own that creates the run (`RunService.begin`).
 */
export function numberEvents(chunks: unknown[], lastSeq: number): LogEvent[] {
  return numberSerialized(chunks.map(serializeChunk), lastSeq);
}

/** Events of serialized chunks (`serializeChunk`), numbered after `lastSeq`. */
export function numberSerialized(data: string[], lastSeq: number): LogEvent[] {
  return data.map((text, index): LogEvent => ({
    seq: lastSeq + index + 1,
    data: text,
    terminal: isTerminalRunEventData(text),
  }));
}

/**
 * JSON text for a chunk that PostgreSQL accepts: its JSON functions reject the NUL character, so NULs in
 * strings become U+FFFD instead of failing the batch the event shares with other runs.
 */
export function serializeChunk(chunk: unknown): string {
  const data = JSON.stringify(chunk);
  if (!data.includes('\\u0000')) return data;
  return JSON.stringify(chunk, (_key, value: unknown) =>
    typeof value === 'string' ? value.replaceAll('\u0000', '\ufffd') : value,
  );
}
