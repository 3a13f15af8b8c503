import { Queue, WaitingError, Worker, type Job, type KeepJobs } from 'bullmq';
import pino, { type Logger } from 'pino';
import { LogEvery } from '../logger.ts';
import { redactUrl } from '../bus/redis-reachable.ts';
import {
  QueueClosedError,
  QueueUnavailableError,
  runJobKey,
  type QueueSlot,
  type RunJob,
  type RunQueue,
} from './queue.ts';
import type { LoadAdmissionOptions } from './load-limit.ts';
import { WorkerSlots } from './worker-slots.ts';

export interface BullMqQueueOptions {
  /** The Redis server, e.g. `redis://127.0.0.1:6379`. */
  url: string;
  /** The BullMQ queue every instance of one deployment shares. @default 'outrun-runs' */
  queueName?: string;
  /** BullMQ's key prefix: keys are `<prefix>:<queueName>:…`. Separates deployments (or test files) on one server. @default 'bull' */
  prefix?: string;
  /** Runs this instance executes at once, once `process` has made it a worker (its slots). @default 100 */
  concurrency?: number;
  /** Admission by load: only `base` of the `concurrency` slots whatever the load (decision 0016). @default none */
  load?: LoadAdmissionOptions;
  /**
   * Which completed jobs Redis keeps. A kept job still holds its run id, so the run cannot be enqueued again
   * while it is kept. @default true (removed at once)
   */
  removeOnComplete?: boolean | number | KeepJobs;
  /** Which failed jobs Redis keeps; as `removeOnComplete`. @default true (removed at once) */
  removeOnFail?: boolean | number | KeepJobs;
  /** Where failed jobs and connection errors are reported. @default a pino logger on stdout */
  logger?: Logger;
  /** How long `enqueue` waits for Redis to take a job before it rejects with `QueueUnavailableError`. @default 1500 */
  enqueueTimeoutMs?: number;
  /** How long `close()` waits for BullMQ's worker, then its producer, to close. @default CLOSE_TIMEOUT_MS */
  closeTimeoutMs?: number;
}

/** The name every run job carries in BullMQ (for dashboards; the queue holds only run jobs). */
const JOB_NAME = 'run';

/** How long a job waits on a full worker for a slot before it goes back to the queue for any worker with room. */
const HAND_BACK_AFTER_MS = 1000;

/**
 * How long `close()` waits for BullMQ to close its worker or producer. After a Redis outage BullMQ's close can
 * wait forever on a connection that stays parked in ioredis' `reconnecting` state (seen here with BullMQ 5:
 * `outrun serve` never exited after SIGTERM; taskforcesh/bullmq#4656, still open in 6.7). Past this, the
 * connection is dropped.
 */
export const CLOSE_TIMEOUT_MS = 5_000;

/**
 * The run queue of a scale-out deployment, on BullMQ (decision 0010). A job's id is its run and epoch, so
 * BullMQ itself keeps a run from being queued twice while its job waits. Jobs live in Redis and outlive the
 * instance that enqueued them.
 *
 * A job only dispatches: the worker's `concurrency` slots are this adapter's, and BullMQ's worker (one job at
 * a time) waits for a free slot, starts the run's handler in it and completes the job. Runs claimed by their
 * start (`reserve`) hold the same slots. Once dispatched, a run is owned through its lease alone: if its
 * worker dies, the sweeper hands it back when the lease runs out, and a new job dispatches it again.
 */
export class BullMqQueue implements RunQueue {
  readonly #queue: Queue<RunJob>;
  readonly #options: BullMqQueueOptions;
  readonly #name: string;
  readonly #prefix: string;
  readonly #logger: Logger;
  /** Runs executing here, dispatched or claimed by their start. */
  readonly #slots: WorkerSlots;
  #worker: Worker<RunJob> | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  #producerClosed = false;
  /** ioredis reports a connection error per reconnect attempt: one line a second at most. */
  readonly #connectionErrors = new LogEvery(1000);
  /** The job keys whose runs execute here: a second delivery of one is dropped. */
  readonly #keysRunning = new Set<string>();
  /** Wakes the dispatcher waiting for a slot, if it waits. */
  #wakeDispatcher: (() => void) | null = null;
  /** BullMQ's last fetch found no job waiting (its `drained` event, cleared by `active`): jobs go first. */
  #drained = false;

  constructor(options: BullMqQueueOptions) {
    this.#options = options;
    this.#name = options.queueName ?? 'outrun-runs';
    this.#prefix = options.prefix ?? 'bull';
    this.#logger = options.logger ?? pino();
    this.#slots = new WorkerSlots({
      concurrency: options.concurrency ?? 100,
      load: options.load,
      logger: this.#logger.child({ queue: this.#name }),
      onFree: () => this.#wakeDispatcher?.(),
    });
    this.#queue = new Queue<RunJob>(this.#name, {
      connection: { url: options.url },
      prefix: this.#prefix,
      defaultJobOptions: {
        attempts: 1,
        removeOnComplete: options.removeOnComplete ?? true,
        removeOnFail: options.removeOnFail ?? true,
      },
    });
    this.#queue.on('error', (error: Error) => this.#connectionError('producer', error));
  }

  async enqueue(job: RunJob): Promise<void> {
    // While the worker drains on shutdown, runs it releases are still handed to the other workers.
    if (this.#producerClosed) throw new QueueClosedError();
    const added = this.#queue.add(
      JOB_NAME,
      { runId: job.runId, epoch: job.epoch ?? 0 },
      { jobId: runJobKey(job) },
    );
    // ioredis keeps a command for the outage's length (its offline queue): bound the wait, not the command.
    added.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        added,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new QueueUnavailableError(
                  `Redis at ${redactUrl(this.#options.url)} did not take the run job in time.`,
                ),
              ),
            this.#options.enqueueTimeoutMs ?? 1500,
          );
        }),
      ]);
    } catch (error) {
      if (this.#producerClosed) throw new QueueClosedError();
      if (error instanceof QueueUnavailableError) throw error;
      throw new QueueUnavailableError(`Redis at ${redactUrl(this.#options.url)} did not take the run job.`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  process(handler: (job: RunJob) => Promise<void>): void {
    if (this.#closed) throw new QueueClosedError();
    if (this.#worker) throw new Error('This run queue already has a handler.');
    const worker = new Worker<RunJob>(this.#name, (job, token) => this.#dispatch(job, token, handler), {
      // Workers block on Redis: BullMQ needs unlimited retries per request on their connections.
      connection: { url: this.#options.url, maxRetriesPerRequest: null },
      prefix: this.#prefix,
      // One job at a time: dispatching takes a moment, and a full worker holds at most one job.
      concurrency: 1,
    });
    worker.on('drained', () => (this.#drained = true));
    worker.on('active', () => (this.#drained = false));
    worker.on('error', (error: Error) => this.#connectionError('worker', error));
    worker.on('failed', (job, error: Error) =>
      this.#logger.error(
        { err: error, queue: this.#name, runId: job?.data.runId },
        'dispatching a run job failed',
      ),
    );
    this.#worker = worker;
  }

  admissionLimit(): number {
    return this.#slots.limit;
  }

  /**
   * A slot for a run the caller claims and executes itself: only while a slot is free and BullMQ's last
   * fetch found no job waiting, so jobs keep their turn as far as this worker can see.
   */
  reserve(): QueueSlot | null {
    if (!this.#worker || this.#closed || !this.#drained) return null;
    return this.#slots.reserve();
  }

  /** BullMQ's processor: starts the job's run in a free slot and returns, which completes the job. */
  async #dispatch(
    job: Job<RunJob>,
    token: string | undefined,
    handler: (job: RunJob) => Promise<void>,
  ): Promise<void> {
    const data: RunJob = { runId: job.data.runId, epoch: job.data.epoch };
    const key = runJobKey(data);
    if (this.#keysRunning.has(key)) return;
    if (!(await this.#takeSlot())) {
      // No room here in time, or closing: back to the front of the wait list, for any worker with room.
      await job.moveToWait(token);
      throw new WaitingError();
    }
    this.#keysRunning.add(key);
    this.#slots.run(() => handler(data), 'a run job failed', {
      runId: data.runId,
      settled: () => this.#keysRunning.delete(key),
    });
  }

  /** Waits up to `HAND_BACK_AFTER_MS` for a free slot and takes it; false if none came or the queue closes. */
  async #takeSlot(): Promise<boolean> {
    const deadline = Date.now() + HAND_BACK_AFTER_MS;
    while (!this.#closed && this.#slots.full) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#wakeDispatcher = resolve;
        timer = setTimeout(resolve, remaining);
      });
      clearTimeout(timer);
      this.#wakeDispatcher = null;
    }
    return !this.#closed && this.#slots.take();
  }

  /** Closes BullMQ's worker or producer, or gives up on it after `CLOSE_TIMEOUT_MS` and drops its connection. */
  async #closeBounded(role: 'producer' | 'worker', closable: Worker<RunJob> | Queue<RunJob>): Promise<void> {
    const timeoutMs = this.#options.closeTimeoutMs ?? CLOSE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      closable.close().then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (closed) return;
    this.#logger.warn(
      { queue: this.#name, connection: role, timeoutMs },
      'run queue did not close in time; dropping its Redis connection',
    );
    // Not awaited: a disconnect waits for the same `end` event the close did.
    void closable.disconnect().catch(() => {});
  }

  /** Logs a connection error once per second at most, with how many more there were. */
  #connectionError(role: 'producer' | 'worker', error: Error): void {
    const held = this.#connectionErrors.take();
    if (held === null) return;
    this.#logger.warn(
      { err: error, queue: this.#name, connection: role, held },
      'run queue connection error',
    );
  }

  /**
   * Stops dispatching (a job waiting for a slot goes back to the queue), waits for the runs executing in
   * this worker's slots to return, then closes the producer's connection.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#wakeDispatcher?.();
      try {
        if (this.#worker) await this.#closeBounded('worker', this.#worker);
        await this.#slots.close();
      } finally {
        this.#producerClosed = true;
        await this.#closeBounded('producer', this.#queue);
      }
    })();
    return this.#closing;
  }
}
