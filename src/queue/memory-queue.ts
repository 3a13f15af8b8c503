import type { Logger } from 'pino';
import { QueueClosedError, runJobKey, type QueueSlot, type RunJob, type RunQueue } from './queue.ts';

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
  /** Slots handed out by `reserve` and not yet running or released. */
  #reserved = 0;
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

  reserve(): QueueSlot | null {
    if (!this.#handler || this.#closed || this.#waiting.length > 0) return null;
    if (this.#running.size + this.#reserved >= this.#concurrency) return null;
    this.#reserved += 1;
    let taken = false;
    const take = (): boolean => {
      if (taken) return false;
      taken = true;
      this.#reserved -= 1;
      return true;
    };
    return {
      run: (task) => {
        if (!take()) return;
        this.#track(task, 'a locally claimed run failed');
      },
      release: () => {
        if (take()) this.#pump();
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#running]);
  }

  #pump(): void {
    const handler = this.#handler;
    if (!handler) return;
    while (
      !this.#closed &&
      this.#running.size + this.#reserved < this.#concurrency &&
      this.#waiting.length > 0
    ) {
      const job = this.#waiting.shift()!;
      this.#track(() => handler(job), 'a run job failed', { runId: job.runId, key: runJobKey(job) });
    }
  }

  /** Runs `work` as one of the `concurrency` handled at once; its slot frees when it settles. */
  #track(work: () => Promise<void>, failure: string, job?: { runId: string; key: string }): void {
    // Handlers own their errors (the executor settles every run it claims); this only keeps the queue alive.
    const task: Promise<void> = Promise.resolve()
      .then(work)
      .catch((error: unknown) => this.#logger?.error({ err: error, runId: job?.runId }, failure))
      .finally(() => {
        this.#running.delete(task);
        if (job) this.#queued.delete(job.key);
        this.#pump();
      });
    this.#running.add(task);
  }
}
