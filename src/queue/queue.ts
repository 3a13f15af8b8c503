/** A run waiting for a worker. */
export interface RunJob {
  runId: string;
  /**
   * The run's epoch when it became `pending`. Every status change bumps it, so the job of a run handed back
   * (released, requeued, answered) is not mistaken for an older job of the same run, which may still exist.
   * @default 0
   */
  epoch?: number;
}

/** The key jobs are deduplicated by: one job per run and epoch. */
export function runJobKey(job: RunJob): string {
  return `${job.runId}.${job.epoch ?? 0}`;
}

/**
 * Dispatch of runs to workers. `enqueue` hands a run over; `process` makes this instance a worker.
 *
 * Every adapter keeps this contract (one conformance suite, `test/queue.test.ts`, runs against each):
 * - Every enqueued job is handled, unless it is deduplicated (below) or the queue closes first.
 * - At most one job per run and epoch (`runJobKey`) exists at a time: `enqueue` of a key whose job is still
 *   waiting or being handled is a no-op. Once that job has ended, enqueueing the key again dispatches it again.
 * - A job may still be delivered more than once (a worker crash, a stalled job taken over): the handler's
 *   claim on the run row makes that harmless.
 * - At most `concurrency` jobs are handled at once per worker (per instance).
 * - A handler that throws fails only its own job; the queue goes on. Handlers should own their errors.
 * - `close` stops taking jobs and resolves once the handlers already running have returned. Jobs still
 *   waiting are left: a shared queue keeps them for another worker; the in-process queue drops them, and a
 *   restart resumes their runs. While `close` waits for running handlers, `enqueue` still hands runs to other
 *   workers (a shutdown releases its unfinished runs that way); once closed, `enqueue` rejects.
 *
 * - `enqueue` is bounded: when the backend is unreachable it rejects with `QueueUnavailableError` within its
 *   timeout (1.5 s for BullMQ) rather than waiting for the backend to come back. The run stays `pending` in
 *   the database, which is the truth; the sweeper enqueues it again later. A job whose `enqueue` timed out
 *   may still be added once the backend is back; the dedupe key and the handler's claim make that harmless.
 *
 * Adapters differ where the backend does: the in-process queue dies with its process; the BullMQ queue keeps
 * jobs in Redis, and a job whose worker died is redelivered by BullMQ's stalled-job check (after its lock
 * expires, 30 s by default).
 */
export interface RunQueue {
  /** Hands a run over. Rejects with `QueueUnavailableError` when the backend does not take it in time. */
  enqueue(job: RunJob): Promise<void>;
  /** Starts handling jobs with `handler` on this instance. Call it once. */
  process(handler: (job: RunJob) => Promise<void>): void;
  /** Stops taking jobs and waits for the ones being handled to return. */
  close(): Promise<void>;
  /**
   * A slot on this instance for a run the caller claims and executes itself, skipping the hop through the
   * queue (a run claimed in its start transaction). Null when this instance is not a worker, every slot is
   * taken, or jobs are waiting (they go first). The slot counts against `concurrency` until the task given
   * to `run` settles, or `release` gives it back unused. Only the in-process queue has slots: a BullMQ
   * worker whose concurrency is lowered while local runs hold slots takes up the freed slots again only when
   * one of its own jobs ends, which could leave queued runs waiting behind one long job.
   */
  reserve?(): QueueSlot | null;
}

/** A reserved place among a worker's `concurrency` jobs (see `RunQueue.reserve`). */
export interface QueueSlot {
  /** Runs `task` in the slot; the slot is freed when it settles. */
  run(task: () => Promise<void>): void;
  /** Gives the slot back unused. Harmless after `run`. */
  release(): void;
}

/** Thrown by `enqueue` on a queue that was closed. */
export class QueueClosedError extends Error {
  readonly code = 'queue_closed';
  constructor() {
    super('The run queue is closed.');
    this.name = 'QueueClosedError';
  }
}

/** Thrown by `enqueue` when the backend (Redis) does not take the job in time. */
export class QueueUnavailableError extends Error {
  readonly code = 'queue_unavailable';
  constructor(message = 'The run queue is unavailable.', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QueueUnavailableError';
  }
}
