import type { Logger } from 'pino';
import { QueueClosedError, runJobKey, type RunJob, type RunQueue } from './queue.ts';

export interface MemoryQueueOptions {
  /** Jobs handled at once; the rest wait in order. @default 10000 */
  concurrency?: number;
  /** Where a handler's error is reported. @default none: handlers own their errors */
  logger?: Logger;
}

/** The in-process queue of a single instance: FIFO with a concurrency limit. */
export class MemoryQueue implements RunQueue {
  readonly #waiting: RunJob[] = [];
  readonly #running = new Set<Promise<void>>();
  /** Runs with a job waiting or being handled: the dedupe set. */
  readonly #queued = new Set<string>();
  readonly #concurrency: number;
  readonly #logger: Logger | undefined;
  #handler: ((job: RunJob) => Promise<void>) | null = null;
  #closed = false;

  constructor(options: MemoryQueueOptions = {}) {
    this.#concurrency = options.concurrency ?? 10_000;
    this.#logger = options.logger;
  }

  async enqueue(job: RunJob): Promise<void> {
    if (this.#closed) throw new QueueClosedError();
    const key = runJobKey(job);
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    this.#waiting.push({ runId: job.runId, epoch: job.epoch ?? 0 });
    this.#pump();
  }

  process(handler: (job: RunJob) => Promise<void>): void {
    this.#handler = handler;
    this.#pump();
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#running]);
  }

  #pump(): void {
    const handler = this.#handler;
    if (!handler) return;
    while (!this.#closed && this.#running.size < this.#concurrency && this.#waiting.length > 0) {
      const job = this.#waiting.shift()!;
      // Handlers own their errors (the executor settles every run it claims); this only keeps the queue alive.
      const task: Promise<void> = Promise.resolve()
        .then(() => handler(job))
        .catch((error: unknown) => this.#logger?.error({ err: error, runId: job.runId }, 'a run job failed'))
        .finally(() => {
          this.#running.delete(task);
          this.#queued.delete(runJobKey(job));
          this.#pump();
        });
      this.#running.add(task);
    }
  }
}
