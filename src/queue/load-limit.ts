import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** How a worker admits runs beyond its base count (decision 0016). */
export interface LoadAdmissionOptions {
  /** Runs admitted whatever the load. */
  base: number;
  /** Event-loop delay (ms, the p90 of a reading's samples) above which no run beyond `base` is admitted. */
  maxLoopDelayMs: number;
  /** How often the delay is read and the limit moved. @default 500 */
  intervalMs?: number;
  /**
   * Reads the event loop's delay (ms) since the previous read. For tests.
   * @default the p90 of a `monitorEventLoopDelay` histogram, less its resolution
   */
  readDelayMs?: () => number;
}

/** The sampling resolution of the delay histogram (ms): a timer every 10 ms, each sample how late it fired. */
const DELAY_RESOLUTION_MS = 10;
/**
 * A step is this share of the limit, scaled by how far under the bound the loop's delay is: a loop with no
 * delay doubles the limit in a reading, one just under the bound adds a few runs.
 */
const MAX_GROWTH = 1;
/** …and at least this many runs. */
const MIN_STEP = 5;
/** Over the delay bound, the limit falls to this share of the runs executing. */
const BACK_OFF = 0.9;

/**
 * The next limit on runs executing at once, from the last one, the runs executing (`taken`) and the event
 * loop's delay over the last reading. Over the bound it falls below what executes (nothing more is admitted
 * until enough runs end); under it, while every slot is taken, it grows a step, the larger the further under
 * the bound; with slots to spare it sits one step above what executes, so a sudden wave is admitted a step at
 * a time. Never below `base` nor above `max`.
 */
export function nextLimit(options: {
  limit: number;
  taken: number;
  delayMs: number;
  base: number;
  max: number;
  maxLoopDelayMs: number;
}): number {
  const { limit, taken, delayMs, base, max, maxLoopDelayMs } = options;
  const clamp = (value: number) => Math.max(base, Math.min(max, value));
  const headroom = Math.max(0, (maxLoopDelayMs - delayMs) / maxLoopDelayMs);
  const step = (count: number) => Math.max(MIN_STEP, Math.ceil(count * MAX_GROWTH * headroom));
  if (delayMs > maxLoopDelayMs) return clamp(Math.floor(Math.min(limit, taken) * BACK_OFF));
  if (taken >= limit) return clamp(limit + step(limit));
  return clamp(Math.min(limit, taken + step(taken)));
}

/**
 * A worker's limit on runs at once that follows its event loop: `base` runs are always admitted, more while
 * the loop's delay stays under `maxLoopDelayMs`, never more than `max`. Once started, reads the delay every
 * `intervalMs`, sampling the loop only while at least half the base runs execute; `onRaise` is called when
 * the limit rose (queued runs may now be admitted).
 */
export class LoadLimit {
  readonly #options: LoadAdmissionOptions & { max: number };
  readonly #taken: () => number;
  readonly #onRaise: () => void;
  readonly #histogram: IntervalHistogram | null;
  readonly #readDelayMs: () => number;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  #sampling = false;
  #limit: number;

  constructor(options: LoadAdmissionOptions & { max: number; taken: () => number; onRaise: () => void }) {
    this.#options = options;
    this.#taken = options.taken;
    this.#onRaise = options.onRaise;
    this.#limit = Math.min(options.base, options.max);
    if (options.readDelayMs) {
      this.#histogram = null;
      this.#readDelayMs = options.readDelayMs;
    } else {
      const histogram = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
      this.#histogram = histogram;
      this.#readDelayMs = () => {
        // No sample in a whole reading: the loop never got to the histogram's timer, so it was late, not idle.
        const delayMs =
          histogram.count > 0
            ? histogram.percentile(90) / 1e6 - DELAY_RESOLUTION_MS
            : Number.POSITIVE_INFINITY;
        histogram.reset();
        return Math.max(0, delayMs);
      };
    }
  }

  /** Starts reading the loop's delay, once; harmless when started or closed. */
  start(): void {
    if (this.#timer || this.#closed) return;
    this.#sample(true);
    this.#timer = setInterval(() => this.#read(), this.#options.intervalMs ?? 500);
    this.#timer.unref();
  }

  /** Runs admitted at once now. */
  get limit(): number {
    return this.#limit;
  }

  /** Stops reading the loop's delay; the limit stays where it is. */
  close(): void {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#sample(false);
  }

  /** Turns sampling the loop on or off; true when it was just turned on (nothing sampled yet). */
  #sample(on: boolean): boolean {
    if (on === this.#sampling) return false;
    this.#sampling = on;
    if (!on) {
      this.#histogram?.disable();
      return false;
    }
    this.#histogram?.enable();
    this.#histogram?.reset();
    return true;
  }

  #read(): void {
    const before = this.#limit;
    const taken = this.#taken();
    if (taken < this.#options.base / 2) {
      // Far under the base the loop's delay would change nothing: the limit is the base. Sampling stops (its
      // 10 ms timer would be most of an idle process's wake-ups) until half the base runs execute again.
      this.#sample(false);
      this.#limit = Math.min(this.#options.base, this.#options.max);
      return;
    }
    // Just resumed, nothing sampled yet: the next reading moves the limit.
    if (this.#sample(true)) return;
    this.#limit = nextLimit({
      limit: before,
      taken,
      delayMs: this.#readDelayMs(),
      base: this.#options.base,
      max: this.#options.max,
      maxLoopDelayMs: this.#options.maxLoopDelayMs,
    });
    if (this.#limit > before) this.#onRaise();
  }
}
