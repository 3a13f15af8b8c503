/** Where lease and schedule code reads the time, so tests can move it instead of editing rows. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** A clock a test moves by hand. */
export class ManualClock implements Clock {
  #now: number;

  constructor(start: Date = new Date()) {
    this.#now = start.getTime();
  }

  now(): Date {
    return new Date(this.#now);
  }

  advance(ms: number): void {
    this.#now += ms;
  }
}

/**
 * How long a poller that knows its next due time sleeps: until `next`, but never past `maxMs` (work another
 * instance recorded is found at the latest then) and never less than zero; `maxMs` when nothing is due.
 */
export function delayUntil(next: Date | null, now: Date, maxMs: number): number {
  if (!next) return maxMs;
  return Math.min(maxMs, Math.max(0, next.getTime() - now.getTime()));
}
