import type { Logger } from 'pino';
import type { QueueSlot } from './queue.ts';

/**
 * A worker's `concurrency` slots, shared by both queue adapters: a run handled from a job and a run claimed by
 * its start (`RunQueue.reserve`) each hold one until it settles. `onFree` is called each time one frees.
 */
export class WorkerSlots {
  readonly #concurrency: number;
  readonly #logger: Logger | undefined;
  readonly #onFree: () => void;
  readonly #running = new Set<Promise<void>>();
  #taken = 0;

  constructor(options: { concurrency: number; logger?: Logger; onFree: () => void }) {
    this.#concurrency = options.concurrency;
    this.#logger = options.logger;
    this.#onFree = options.onFree;
  }

  get full(): boolean {
    return this.#taken >= this.#concurrency;
  }

  /** Takes a free slot; false when every slot is taken. */
  take(): boolean {
    if (this.full) return false;
    this.#taken += 1;
    return true;
  }

  /** A free slot for a caller to `run` a task in or `release`, the first of the two only; null when full. */
  reserve(): QueueSlot | null {
    if (!this.take()) return null;
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      return true;
    };
    return {
      run: (task) => {
        if (settle()) this.run(task, 'a locally claimed run failed');
      },
      release: () => {
        if (settle()) this.#free();
      },
    };
  }

  /**
   * Runs `work` in a slot already taken; the slot frees when it settles, after `settled`. Handlers own their
   * errors (the executor settles every run it claims): a rejection is only logged, as `failure`.
   */
  run(
    work: () => Promise<void>,
    failure: string,
    options: { runId?: string; settled?: () => void } = {},
  ): void {
    const task: Promise<void> = Promise.resolve()
      .then(work)
      .catch((error: unknown) => this.#logger?.error({ err: error, runId: options.runId }, failure))
      .finally(() => {
        this.#running.delete(task);
        options.settled?.();
        this.#free();
      });
    this.#running.add(task);
  }

  /** Resolves once no task runs in a slot (tasks started meanwhile included). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }

  #free(): void {
    this.#taken -= 1;
    this.#onFree();
  }
}
