import type { RunJob, RunQueue } from './queue.ts';

export interface MemoryQueueOptions {
  /** Jobs handled at once; the rest wait in order. @default 10000 */
  concurrency?: number;
}

/** The in-process queue of a single instance: FIFO with a concurrency limit. */
export class MemoryQueue implements RunQueue {
  readonly #waiting: RunJob[] = [];
  readonly #running = new Set<Promise<void>>();
  readonly #concurrency: number;
  #handler: ((job: RunJob) => Promise<void>) | null = null;
  #closed = false;

  constructor(options: MemoryQueueOptions = {}) {
    this.#concurrency = options.concurrency ?? 10_000;
  }

  async enqueue(job: RunJob): Promise<void> {
    if (this.#closed) throw new Error('the run queue is closed');
    this.#waiting.push(job);
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
        .catch(() => {})
        .finally(() => {
          this.#running.delete(task);
          this.#pump();
        });
      this.#running.add(task);
    }
  }
}
