/**
 * Ends a model call whose provider has gone silent (decision 0025): a stream that stalls mid-answer, or a
 * request that never answers, would otherwise hold its run `running` for good, since the lease heartbeat keeps
 * a live process's run alive and only a stop ends a run. The watchdog calls `onIdle` once the model has sent
 * nothing for `idleMs` while nothing of the run's own was under way (`hold`: a tool executing, the loop waiting
 * on a step's usage); the caller aborts the run's execution.
 *
 * A chunk costs it nothing: a timer ticks every `idleMs / TICKS`, reads the run's `progress` (the last sequence
 * number its stream appended: every chunk the model sends is appended), and trips on the `TICKS`-th tick in a
 * row that saw no progress and no hold, so the call is cut after `idleMs` to `idleMs × (1 + 1/TICKS)` of
 * silence, never before. The AI SDK's own `timeout.chunkMs` re-arms a timer per chunk and counts a tool's
 * execution as silence.
 */
export class ModelWatchdog {
  readonly idleMs: number;
  readonly #progress: () => number;
  readonly #onIdle: () => boolean;
  #fired = false;
  /** Holds released: each counts as progress. */
  #released = 0;
  #progressAtLastTick: number;
  #silentTicks = 0;
  #holds = 0;
  #timer: NodeJS.Timeout | undefined;

  /**
   * `progress` grows with every chunk the model sends; `onIdle` cuts the call and says whether it did (false:
   * the run was being stopped for another reason).
   */
  constructor(idleMs: number, progress: () => number, onIdle: () => boolean) {
    this.idleMs = idleMs;
    this.#progress = progress;
    this.#onIdle = onIdle;
    this.#progressAtLastTick = progress();
    this.#timer = setInterval(() => this.#tick(), Math.max(1, Math.floor(idleMs / TICKS)));
    this.#timer.unref();
  }

  /** Whether the watchdog cut the call. */
  get fired(): boolean {
    return this.#fired;
  }

  /** What the run's error says when the watchdog cut its call. */
  get message(): string {
    return modelIdleMessage(this.idleMs);
  }

  /** Something of the run's own is under way (not the model's silence) until the returned release is called. */
  hold(): () => void {
    this.#holds += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds -= 1;
      this.#released += 1;
    };
  }

  /** Stops watching (the call ended). */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const progress = this.#progress() + this.#released;
    if (this.#holds > 0 || progress !== this.#progressAtLastTick) {
      this.#progressAtLastTick = progress;
      this.#silentTicks = 0;
      return;
    }
    this.#silentTicks += 1;
    if (this.#silentTicks < TICKS) return;
    this.stop();
    this.#fired = this.#onIdle();
  }
}

/** The run's error message when its model sent nothing for `idleMs` (`OUTRUN_MODEL_IDLE_TIMEOUT_MS`). */
export function modelIdleMessage(idleMs: number): string {
  const seconds = idleMs / 1000;
  const shown = Number.isInteger(seconds) ? `${seconds} s` : `${idleMs} ms`;
  return `The model sent nothing for ${shown}; the call was ended.`;
}

/** Ticks per idle period: the most a call may run past its idle time is one tick. */
const TICKS = 8;
