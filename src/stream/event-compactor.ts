import type { Logger } from 'pino';
import type { Metrics } from '../metrics.ts';
import type { CompactionResult, EventLog } from './event-log.ts';

/**
 * Finished runs one transaction compacts at most, and one sweep schedules at most: a backlog (a restart, an
 * upgrade) drains over several batches and sweeps.
 */
export const COMPACTION_SWEEP_LIMIT = 50;

/**
 * On a store without autovacuum (PGlite): events compacted between two `VACUUM run_events`, so the rows'
 * space is reused by new rows instead of the table growing forever. About 5 MB of dead rows.
 */
export const VACUUM_AFTER_EVENTS = 20_000;

/**
 * How long the first run scheduled into an empty queue waits for others to join its batch (ms). A batch
 * costs the same few round trips whatever its size, so under load, when many runs end each second, the runs
 * ending within this window share one transaction instead of paying one each; a finished run's pages are
 * never urgent, since its rows serve every read until then.
 */
const COMPACTION_GATHER_MS = 100;

/**
 * The pause between two batches (ms), at least. A trickle, not a burst: when many runs end together, the runs
 * still streaming get the event loop between two compactions (on PGlite every statement runs on it).
 */
const COMPACTION_PAUSE_MS = 5;

/**
 * After a batch, the compactor pauses this many times as long as the batch took, so that a backlog is worked
 * off in at most a quarter of the time. A paced run leaves a page per token (1,000 rows to read and delete),
 * and when a wave of such runs ended together, back-to-back batches took CPU the runs still streaming needed
 * (docs/benchmarks.md: the schedule p99 while a paced wave's runs end).
 */
const COMPACTION_PAUSE_PER_BATCH_TIME = 3;

/**
 * With more than this many full batches waiting, the compactor pauses only `COMPACTION_PAUSE_MS` between
 * batches. At a quarter of the time, runs that keep ending faster than that could be compacted would grow the
 * queue (their ids in memory) and leave ever more finished runs in their written form, many times the size of
 * their pages, without bound; past this backlog compaction takes what it needs until it is back under.
 */
const COMPACTION_BACKLOG_BATCHES = 4;

/**
 * Events one batch compacts at most on PGlite, where each statement holds the event loop: about two runs of
 * 1,000 events (a batch of 50 such runs held it for most of a second, and the streams still running felt it).
 */
export const PGLITE_COMPACTION_BATCH_EVENTS = 2_000;

export interface EventCompactorOptions {
  log: EventLog;
  logger: Logger;
  /** Finished runs one transaction compacts and one `sweep` schedules, at most. @default COMPACTION_SWEEP_LIMIT */
  sweepLimit?: number;
  /** Vacuum `run_events` after this many events were compacted (PGlite); absent: never (autovacuum does). */
  vacuumAfterEvents?: number;
  /** Events one batch reads at most (the rest go in the next batch). @default MAX_COMPACTION_BATCH_EVENTS */
  maxBatchEvents?: number;
  /** Where the queue's length is shown (`outrun_compaction_queue`): a backlog that keeps growing shows there. */
  metrics?: Metrics;
  /**
   * How long a finished run's events are kept (`OUTRUN_EVENT_RETENTION_DAYS`): each sweep deletes the events
   * of compacted runs that finished longer ago. @default forever
   */
  retentionMs?: number;
}

/**
 * Batches of `sweepLimit` runs one sweep deletes the events of, at most: 500 runs every sweep interval (10 s),
 * over 4 million runs a day, so a backlog (retention turned on over a year of runs) drains over many sweeps.
 */
const RETENTION_BATCHES_PER_SWEEP = 10;

/**
 * Compacts finished runs' events into pages in the background, off every run's path, in batches: a run is
 * scheduled once its ending has committed, waits up to `COMPACTION_GATHER_MS` for the runs ending with it,
 * and each batch of up to `sweepLimit` runs is compacted in one transaction (`EventLog.compactMany`). The
 * sweep catches runs whose scheduling a process took down with it. A failed batch is tried again run by run
 * (one run that cannot be compacted does not hold the others back); a run that fails alone is logged and
 * left to the next sweep. Compaction never fails anything else.
 */
export class EventCompactor {
  readonly #log: EventLog;
  readonly #logger: Logger;
  readonly #sweepLimit: number;
  readonly #vacuumAfterEvents: number | undefined;
  readonly #maxBatchEvents: number | undefined;
  readonly #metrics: Metrics | undefined;
  readonly #retentionMs: number | undefined;
  #eventsSinceVacuum = 0;
  readonly #queued = new Set<string>();
  /** When the oldest run in the queue was scheduled (`performance.now()`): its batch starts by `+ GATHER_MS`. */
  #gatheringSince = 0;
  /** Ends the current gathering wait at once (a full batch, a sweep, `close`). */
  #endGathering: (() => void) | null = null;
  /** Ends the pause between two batches at once (`close`). */
  #endPause: (() => void) | null = null;
  #working: Promise<void> | null = null;
  #sweeping: Promise<number> | null = null;
  #closed = false;

  constructor(options: EventCompactorOptions) {
    this.#log = options.log;
    this.#logger = options.logger;
    this.#sweepLimit = options.sweepLimit ?? COMPACTION_SWEEP_LIMIT;
    this.#vacuumAfterEvents = options.vacuumAfterEvents;
    this.#maxBatchEvents = options.maxBatchEvents;
    this.#metrics = options.metrics;
    this.#retentionMs = options.retentionMs;
  }

  /** Compacts `runId` soon (it must have ended; a run that has not is left alone). */
  schedule(runId: string): void {
    if (this.#closed) return;
    if (this.#queued.size === 0) this.#gatheringSince = performance.now();
    this.#queued.add(runId);
    this.#metrics?.compactionQueue.set(this.#queued.size);
    // A full batch has nothing left to wait for.
    if (this.#queued.size >= this.#sweepLimit) this.#endGathering?.();
    this.#working ??= this.#work().finally(() => (this.#working = null));
  }

  /**
   * Schedules up to `sweepLimit` finished runs whose events are still rows and waits until they are done;
   * then, with `retentionMs`, deletes the events of runs past it (`deleteExpired`). Returns how many runs it
   * scheduled for compaction.
   */
  sweep(): Promise<number> {
    if (this.#closed) return Promise.resolve(0);
    this.#sweeping ??= (async () => {
      try {
        const runIds = await this.#log.uncompactedRuns(this.#sweepLimit);
        for (const runId of runIds) this.schedule(runId);
        // These runs ended a while ago: waiting for others to join them would gain nothing.
        this.#endGathering?.();
        await this.idle();
        await this.deleteExpired();
        return runIds.length;
      } finally {
        this.#sweeping = null;
      }
    })();
    return this.#sweeping;
  }

  /**
   * Deletes the events of compacted runs that finished more than `retentionMs` ago, `sweepLimit` runs per
   * transaction, up to `RETENTION_BATCHES_PER_SWEEP` transactions. Returns how many runs lost their events.
   */
  async deleteExpired(): Promise<number> {
    if (this.#retentionMs === undefined) return 0;
    let deleted = 0;
    for (let batch = 0; batch < RETENTION_BATCHES_PER_SWEEP && !this.#closed; batch++) {
      const runs = await this.#log.deleteExpiredEvents(this.#retentionMs, this.#sweepLimit);
      deleted += runs;
      if (runs < this.#sweepLimit) break;
    }
    if (deleted > 0)
      this.#logger.info({ runs: deleted }, "deleted finished runs' events past their retention");
    return deleted;
  }

  /** Resolves once every scheduled run has been compacted (or has failed to be). */
  async idle(): Promise<void> {
    while (this.#working) await this.#working;
  }

  /** Takes no new runs and waits for the batch in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#queued.clear();
    this.#metrics?.compactionQueue.set(0);
    this.#endGathering?.();
    this.#endPause?.();
    await this.idle();
    await this.#sweeping?.catch(() => {});
  }

  async #work(): Promise<void> {
    // Yield first, so the ending that scheduled the run has returned to its caller before any work starts.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#queued.size > 0) {
      await this.#gather();
      const batch: string[] = [];
      for (const runId of this.#queued) {
        if (batch.length === this.#sweepLimit) break;
        batch.push(runId);
        this.#queued.delete(runId);
      }
      this.#metrics?.compactionQueue.set(this.#queued.size);
      if (batch.length === 0) break;
      // What is left over has waited already: its batch gathers from now.
      if (this.#queued.size > 0) this.#gatheringSince = performance.now();
      const started = performance.now();
      await this.#compact(batch);
      await this.#vacuumIfDue();
      // Between two batches only: with nothing queued, `idle()` and `close()` need not wait (a run scheduled
      // later gathers for COMPACTION_GATHER_MS first anyway).
      if (this.#queued.size === 0) break;
      const behind = this.#queued.size > COMPACTION_BACKLOG_BATCHES * this.#sweepLimit;
      const pauseMs = behind
        ? COMPACTION_PAUSE_MS
        : Math.max(COMPACTION_PAUSE_MS, (performance.now() - started) * COMPACTION_PAUSE_PER_BATCH_TIME);
      const pause = endableDelay(pauseMs);
      this.#endPause = pause.end;
      await pause.done;
      this.#endPause = null;
    }
  }

  /** Waits until the oldest queued run has gathered for `COMPACTION_GATHER_MS`, the batch is full, or it is ended. */
  async #gather(): Promise<void> {
    const waitMs = this.#gatheringSince + COMPACTION_GATHER_MS - performance.now();
    if (waitMs <= 0 || this.#queued.size >= this.#sweepLimit || this.#closed) return;
    const gathering = endableDelay(waitMs);
    this.#endGathering = gathering.end;
    await gathering.done;
    this.#endGathering = null;
  }

  async #compact(runIds: string[]): Promise<void> {
    let results: Map<string, CompactionResult>;
    try {
      results = await this.#log.compactMany(runIds, { maxEvents: this.#maxBatchEvents });
    } catch (error) {
      if (runIds.length === 1) {
        this.#logger.warn(
          { err: error, runId: runIds[0] },
          'compacting the run’s events failed; the sweep retries',
        );
        return;
      }
      // One run that cannot be compacted must not hold its batch back: each one alone, then.
      this.#logger.warn(
        { err: error, runIds },
        'compacting a batch of runs’ events failed; trying them one by one',
      );
      for (const runId of runIds) await this.#compact([runId]);
      return;
    }
    let runs = 0;
    let events = 0;
    for (const [runId, result] of results) {
      if (result.compacted) {
        runs += 1;
        events += result.events;
      } else if (result.reason === 'deferred') {
        this.schedule(runId);
      }
    }
    if (runs > 0) this.#logger.debug({ runs, events, scheduled: runIds.length }, 'compacted run events');
    this.#eventsSinceVacuum += events;
  }

  async #vacuumIfDue(): Promise<void> {
    if (this.#vacuumAfterEvents === undefined || this.#eventsSinceVacuum < this.#vacuumAfterEvents) return;
    this.#eventsSinceVacuum = 0;
    await this.#log.vacuum().catch((error: unknown) => {
      this.#logger.warn({ err: error }, 'vacuuming run_events failed');
    });
  }
}

/** A wait of `ms` that `end()` cuts short. */
function endableDelay(ms: number): { done: Promise<void>; end: () => void } {
  let end!: () => void;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    end = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { done, end };
}
