import type { Logger } from 'pino';
import { QueueClosedError, runJobKey, type QueueSlot, type RunJob, type RunQueue } from './queue.ts';
import type { LoadAdmissionOptions } from './load-limit.ts';
import { WorkerSlots } from './worker-slots.ts';

export interface MemoryQueueOptions {
  /** Jobs handled at once; the rest wait in order. @default 10000 */
  concurrency?: number;
  /** Admission by load: only `base` of the `concurrency` slots whatever the load (decision 0016). @default none */
  load?: LoadAdmissionOptions;
  /** Where a handler's error is reported. @default none: handlers own their errors */
  logger?: Logger;
}

/** The in-process queue of a single instance: FIFO with a concurrency limit. */
export class MemoryQueue implements RunQueue {
  readonly #waiting: RunJob[] = [];
  readonly #slots: WorkerSlots;
  /** Runs with a job waiting or being handled: the dedupe set. */
  readonly #queued = new Set<string>();
  #handler: ((job: RunJob) => Promise<void>) | null = null;
  #closed = false;

  constructor(options: MemoryQueueOptions = {}) {
    this.#slots = new WorkerSlots({
      concurrency: options.concurrency ?? 10_000,
      load: options.load,
      logger: options.logger,
      onFree: () => this.#pump(),
    });
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

  admissionLimit(): number {
    return this.#slots.limit;
  }

  reserve(): QueueSlot | null {
    if (!this.#handler || this.#closed || this.#waiting.length > 0) return null;
    return this.#slots.reserve();
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#slots.close();
  }

  #pump(): void {
    const handler = this.#handler;
    if (!handler) return;
    while (!this.#closed && this.#waiting.length > 0 && this.#slots.take()) {
      const job = this.#waiting.shift()!;
      const key = runJobKey(job);
      this.#slots.run(() => handler(job), 'a run job failed', {
        runId: job.runId,
        settled: () => this.#queued.delete(key),
      });
    }
  }
}
