import { Queue, Worker, type KeepJobs } from 'bullmq';
import pino, { type Logger } from 'pino';
import { redactUrl } from '../bus/redis-reachable.ts';
import { QueueClosedError, QueueUnavailableError, runJobKey, type RunJob, type RunQueue } from './queue.ts';

export interface BullMqQueueOptions {
  /** The Redis server, e.g. `redis://127.0.0.1:6379`. */
  url: string;
  /** The BullMQ queue every instance of one deployment shares. @default 'outrun-runs' */
  queueName?: string;
  /** BullMQ's key prefix: keys are `<prefix>:<queueName>:…`. Separates deployments (or test files) on one server. @default 'bull' */
  prefix?: string;
  /** Jobs this instance handles at once, once `process` has made it a worker. @default 100 */
  concurrency?: number;
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
}

/** The name every run job carries in BullMQ (for dashboards; the queue holds only run jobs). */
const JOB_NAME = 'run';

/**
 * The run queue of a scale-out deployment, on BullMQ. A job's id is its run id, so BullMQ itself keeps a run
 * from being queued twice while its job exists. Jobs live in Redis: they outlive the instance that enqueued
 * them, and a job whose worker died is taken over by another worker once its lock expires (BullMQ's
 * stalled-job check).
 */
export class BullMqQueue implements RunQueue {
  readonly #queue: Queue<RunJob>;
  readonly #options: BullMqQueueOptions;
  readonly #name: string;
  readonly #prefix: string;
  readonly #logger: Logger;
  #worker: Worker<RunJob> | null = null;
  #closing: Promise<void> | null = null;
  #producerClosed = false;
  #lastErrorLoggedAt = 0;

  constructor(options: BullMqQueueOptions) {
    this.#options = options;
    this.#name = options.queueName ?? 'outrun-runs';
    this.#prefix = options.prefix ?? 'bull';
    this.#logger = options.logger ?? pino();
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
    if (this.#closing) throw new QueueClosedError();
    if (this.#worker) throw new Error('This run queue already has a handler.');
    const worker = new Worker<RunJob>(
      this.#name,
      async (job) => {
        await handler({ runId: job.data.runId, epoch: job.data.epoch });
      },
      {
        // Workers block on Redis: BullMQ needs unlimited retries per request on their connections.
        connection: { url: this.#options.url, maxRetriesPerRequest: null },
        prefix: this.#prefix,
        concurrency: this.#options.concurrency ?? 100,
      },
    );
    worker.on('error', (error: Error) => this.#connectionError('worker', error));
    worker.on('failed', (job, error: Error) =>
      this.#logger.error({ err: error, queue: this.#name, runId: job?.data.runId }, 'a run job failed'),
    );
    this.#worker = worker;
  }

  /** Logs a connection error once per second at most: ioredis reports one per reconnect attempt. */
  #connectionError(role: 'producer' | 'worker', error: Error): void {
    const now = Date.now();
    if (now - this.#lastErrorLoggedAt < 1000) return;
    this.#lastErrorLoggedAt = now;
    this.#logger.warn({ err: error, queue: this.#name, connection: role }, 'run queue connection error');
  }

  /** Stops the worker (after its running jobs return), then closes the producer's connection. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.#worker?.close();
      } finally {
        this.#producerClosed = true;
        await this.#queue.close();
      }
    })();
    return this.#closing;
  }
}
