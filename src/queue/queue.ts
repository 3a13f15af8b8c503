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
 * - A key (`runJobKey`: run and epoch) is handled at most once at a time on an instance: `enqueue` of a key
 *   whose job waits is a no-op, and a job for a key whose handler runs on the instance that takes it is
 *   dropped there. Once that handler has returned, enqueueing the key again dispatches it again.
 * - A job may still be delivered more than once (a worker crash, a second instance enqueueing a key whose
 *   handler runs elsewhere): the handler's claim on the run row makes that harmless.
 * - At most `concurrency` handlers run at once per worker (per instance), counting the slots `reserve` gave.
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
 * waiting jobs in Redis for any worker, and a job ends once a worker's slot has taken its run (decision
 * 0010): a run whose worker died is handed back by the sweeper when its lease runs out, on either adapter.
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
   * taken, or jobs are waiting (they go first; with BullMQ, as far as this worker's last fetch saw). The
   * slot counts against `concurrency` until the task given to `run` settles, or `release` gives it back
   * unused.
   */
  reserve?(): QueueSlot | null;
  /** Runs this worker admits at once now: `concurrency`, or the load limit under it (decision 0016). */
  admissionLimit?(): number;
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
