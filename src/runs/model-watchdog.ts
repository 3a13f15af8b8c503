/**
 * Ends a model call whose provider has gone silent (decision 0025): a stream that stalls mid-answer, or a
 * request that never answers, would otherwise hold its run `running` for good, since the lease heartbeat keeps
 * a live process's run alive and only a stop ends a run. The watchdog aborts its `signal` (with a
 * `ModelIdleError`) once the model has sent nothing for `idleMs` while nothing of the run's own was under way
 * (`hold`: a tool executing, the loop waiting on a step's usage).
 *
 * A chunk costs one increment (`activity`): a timer ticks every `idleMs / TICKS` and trips on the `TICKS`-th
 * tick in a row that saw no chunk and no hold, so the call is cut after `idleMs` to `idleMs × (1 + 1/TICKS)` of
 * silence, never before. The AI SDK's own `timeout.chunkMs` re-arms a timer per chunk and counts a tool's
 * execution as silence.
 */
export class ModelWatchdog {
  readonly #idleMs: number;
  readonly #controller = new AbortController();
  #chunks = 0;
  #chunksAtLastTick = 0;
  #silentTicks = 0;
  #holds = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(idleMs: number) {
    this.#idleMs = idleMs;
    this.#timer = setInterval(() => this.#tick(), Math.max(1, Math.floor(idleMs / TICKS)));
    this.#timer.unref();
  }

  /** Aborted, with a `ModelIdleError` as its reason, when the model has been silent too long. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the watchdog cut the call. */
  get fired(): boolean {
    return this.#controller.signal.aborted;
  }

  /** The model sent something. */
  activity(): void {
    this.#chunks += 1;
  }

  /** Something of the run's own is under way (not the model's silence) until the returned release is called. */
  hold(): () => void {
    this.#holds += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds -= 1;
      this.#chunks += 1;
    };
  }

  /** Stops watching (the call ended). */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    if (this.#holds > 0 || this.#chunks !== this.#chunksAtLastTick) {
      this.#chunksAtLastTick = this.#chunks;
      this.#silentTicks = 0;
      return;
    }
    this.#silentTicks += 1;
    if (this.#silentTicks < TICKS) return;
    this.stop();
    this.#controller.abort(new ModelIdleError(this.#idleMs));
  }
}

/** The model sent nothing for the configured time (`OUTRUN_MODEL_IDLE_TIMEOUT_MS`). */
export class ModelIdleError extends Error {
  constructor(idleMs: number) {
    super(`The model sent nothing for ${formatSeconds(idleMs)}; the call was ended.`);
    this.name = 'ModelIdleError';
  }
}

/** Ticks per idle period: the most a call may run past its idle time is one tick. */
const TICKS = 8;

function formatSeconds(ms: number): string {
  const seconds = ms / 1000;
  return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)} s`;
}
