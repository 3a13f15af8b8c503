import type { Logger } from 'pino';
import { LoadLimit, type LoadAdmissionOptions } from './load-limit.ts';
import type { QueueSlot } from './queue.ts';

/**
 * A worker's slots, shared by both queue adapters: a run handled from a job and a run claimed by its start
 * (`RunQueue.reserve`) each hold one until it settles. At most `concurrency` are taken at once; with `load`,
 * only `load.base` of them whatever the load and the rest while the event loop keeps up (`LoadLimit`).
 * `onFree` is called each time a slot frees or the load limit rises.
 */
export class WorkerSlots {
  readonly #concurrency: number;
  readonly #loadLimit: LoadLimit | null;
  readonly #logger: Logger | undefined;
  readonly #onFree: () => void;
  readonly #running = new Set<Promise<void>>();
  #taken = 0;

  constructor(options: {
    concurrency: number;
    load?: LoadAdmissionOptions;
    logger?: Logger;
    onFree: () => void;
  }) {
    this.#concurrency = options.concurrency;
    this.#logger = options.logger;
    this.#onFree = options.onFree;
    this.#loadLimit =
      options.load && options.load.base < options.concurrency
        ? new LoadLimit({
            ...options.load,
            max: options.concurrency,
            taken: () => this.#taken,
            onRaise: () => this.#onFree(),
          })
        : null;
  }

  /** Slots that may be taken at once now: `concurrency`, or the load limit under it. */
  get limit(): number {
    return this.#loadLimit?.limit ?? this.#concurrency;
  }

  get full(): boolean {
    return this.#taken >= this.limit;
  }

  /** Takes a free slot; false when every slot is taken. */
  take(): boolean {
    this.#loadLimit?.start(); // only a worker takes slots: a process that only enqueues reads no delay
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

  /** Resolves once no task runs in a slot (tasks started meanwhile included), then stops the load limit. */
  async close(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
    this.#loadLimit?.close();
  }

  #free(): void {
    this.#taken -= 1;
    this.#onFree();
  }
}
