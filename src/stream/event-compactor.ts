import type { Logger } from 'pino';
import type { EventLog } from './event-log.ts';

/** Finished runs one sweep compacts at most: a backlog (a restart, an upgrade) drains over several sweeps. */
export const COMPACTION_SWEEP_LIMIT = 50;

/**
 * On a store without autovacuum (PGlite): events compacted between two `VACUUM run_events`, so the rows'
 * space is reused by new rows instead of the table growing forever. About 5 MB of dead rows.
 */
export const VACUUM_AFTER_EVENTS = 20_000;

export interface EventCompactorOptions {
  log: EventLog;
  logger: Logger;
  /** Finished runs one `sweep` compacts at most. @default COMPACTION_SWEEP_LIMIT */
  sweepLimit?: number;
  /** Vacuum `run_events` after this many events were compacted (PGlite); absent: never (autovacuum does). */
  vacuumAfterEvents?: number;
}

/**
 * Compacts finished runs' events into pages in the background, one run at a time, off every run's path: a
 * run is scheduled once its ending has committed, and the sweep catches runs whose scheduling a process
 * took down with it. A failure is logged and left to the next sweep; it never fails anything else.
 */
/** The pause between two runs' compactions (ms). */
const COMPACTION_PAUSE_MS = 5;

export class EventCompactor {
  readonly #log: EventLog;
  readonly #logger: Logger;
  readonly #sweepLimit: number;
  readonly #vacuumAfterEvents: number | undefined;
  #eventsSinceVacuum = 0;
  readonly #queued = new Set<string>();
  #working: Promise<void> | null = null;
  #sweeping: Promise<number> | null = null;
  #closed = false;

  constructor(options: EventCompactorOptions) {
    this.#log = options.log;
    this.#logger = options.logger;
    this.#sweepLimit = options.sweepLimit ?? COMPACTION_SWEEP_LIMIT;
    this.#vacuumAfterEvents = options.vacuumAfterEvents;
  }

  /** Compacts `runId` soon (it must have ended; a run that has not is left alone). */
  schedule(runId: string): void {
    if (this.#closed) return;
    this.#queued.add(runId);
    this.#working ??= this.#work().finally(() => (this.#working = null));
  }

  /**
   * Schedules up to `sweepLimit` finished runs whose events are still rows and waits until they are done.
   * Returns how many it scheduled.
   */
  sweep(): Promise<number> {
    if (this.#closed) return Promise.resolve(0);
    this.#sweeping ??= (async () => {
      try {
        const runIds = await this.#log.uncompactedRuns(this.#sweepLimit);
        for (const runId of runIds) this.schedule(runId);
        await this.idle();
        return runIds.length;
      } finally {
        this.#sweeping = null;
      }
    })();
    return this.#sweeping;
  }

  /** Resolves once every scheduled run has been compacted (or has failed to be). */
  async idle(): Promise<void> {
    while (this.#working) await this.#working;
  }

  /** Takes no new runs and waits for the one in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#queued.clear();
    await this.idle();
    await this.#sweeping?.catch(() => {});
  }

  async #work(): Promise<void> {
    // Yield first, so the ending that scheduled the run has returned to its caller before any work starts.
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (const runId of this.#queued) {
      this.#queued.delete(runId);
      try {
        const result = await this.#log.compact(runId);
        if (result.compacted) {
          this.#logger.debug({ runId, events: result.events, pages: result.pages }, 'compacted run events');
          this.#eventsSinceVacuum += result.events;
        }
      } catch (error) {
        this.#logger.warn({ err: error, runId }, 'compacting the run’s events failed; the sweep retries');
      }
      await this.#vacuumIfDue();
      // A trickle, not a burst: when many runs end together, the runs still streaming get the loop between
      // two compactions (on PGlite every statement runs on it).
      await new Promise<void>((resolve) => setTimeout(resolve, COMPACTION_PAUSE_MS));
    }
  }

  async #vacuumIfDue(): Promise<void> {
    if (this.#vacuumAfterEvents === undefined || this.#eventsSinceVacuum < this.#vacuumAfterEvents) return;
    this.#eventsSinceVacuum = 0;
    await this.#log.vacuum().catch((error: unknown) => {
      this.#logger.warn({ err: error }, 'vacuuming run_events failed');
    });
  }
}
