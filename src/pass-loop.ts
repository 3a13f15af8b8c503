/**
 * A background pass run again and again: each pass returns how long to sleep before the next one, and
 * `nudge()` asks for one now (at once when none is in flight, else as soon as it ends). The schedule runner
 * and the webhook dispatcher each run on one, sleeping until their next due time (decision 0017).
 */
export class PassLoop {
  /** One pass; resolves to the delay (ms) before the next. Handles its own errors: it must not reject. */
  readonly #pass: () => Promise<number>;
  #running = false;
  #timer: NodeJS.Timeout | null = null;
  #inFlight: Promise<void> | null = null;
  #nudged = false;

  constructor(pass: () => Promise<number>) {
    this.#pass = pass;
  }

  /** Between `start()` and `stop()`: a pass that loops over batches stops early once this is false. */
  get running(): boolean {
    return this.#running;
  }

  /** The pass in flight, if any: `stop()` does not wait for it. */
  get inFlight(): Promise<void> | null {
    return this.#inFlight;
  }

  /** Runs a first pass now, then on. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#after(0);
  }

  nudge(): void {
    if (!this.#running) return;
    if (this.#inFlight) this.#nudged = true;
    else this.#after(0);
  }

  /** No pass starts after this; one in flight finishes (`inFlight`). */
  stop(): void {
    this.#running = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #after(delayMs: number): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#inFlight = this.#pass().then((nextDelayMs) => {
        this.#inFlight = null;
        if (!this.#running) return;
        const again = this.#nudged;
        this.#nudged = false;
        this.#after(again ? 0 : nextDelayMs);
      });
    }, delayMs);
    this.#timer.unref();
  }
}

/** How soon a pass runs again after one that failed or left something due: a second, or `maxMs` if shorter. */
export function retryDelay(maxMs: number): number {
  return Math.min(maxMs, 1_000);
}

/**
 * The sleep after a pass of a poller that read its next due time `next`: until then, at most `maxMs` (what
 * another instance wrote is found at the latest then), `maxMs` when nothing is due. When `next` was due
 * already when the pass began — another instance's transaction holds it, or handling it failed — the
 * `retryDelay`, never at once: a contended due time does not become a busy loop.
 */
export function delayAfterPass(options: {
  next: Date | null;
  passBegan: Date;
  now: Date;
  maxMs: number;
}): number {
  const { next, passBegan, now, maxMs } = options;
  if (!next) return maxMs;
  if (next <= passBegan) return retryDelay(maxMs);
  return Math.min(maxMs, Math.max(0, next.getTime() - now.getTime()));
}
