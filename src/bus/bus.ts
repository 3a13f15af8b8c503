/**
 * Signals between instances: "events appended to run X", "stop run X". Delivery is at-most-once and best
 * effort (a Redis connection that drops loses what was published meanwhile), so every consumer can fall back
 * to the database: a live reader re-reads the log on a gap; a stop is also recorded on the run row.
 *
 * Every adapter keeps this contract (one conformance suite, `test/bus.test.ts`, runs against each):
 * - A message is a JSON value (publishers only send JSON). Handlers treat it as read-only: the in-process
 *   adapter hands every handler the publisher's own object (no copy on the hot path of every event batch);
 *   a networked adapter hands them a decoded copy.
 * - A handler whose `subscribe` has resolved receives every message published on its channel afterwards,
 *   barring transport loss; messages published through one instance arrive in publish order. Delivery may be
 *   synchronous (in-process) or asynchronous (Redis): handlers assume neither.
 * - A handler that throws (or returns a promise that rejects) is logged; the other handlers still receive the
 *   message and `publish` is unaffected.
 * - The function `subscribe` returns is idempotent; once called, its handler receives nothing more, even a
 *   message already in flight. Subscribing the same function twice delivers to it twice.
 * - `close` is idempotent and ends all delivery; afterwards `publish` and `subscribe` reject, and
 *   unsubscribing is a no-op.
 */
export interface Bus {
  /** Sends `message` to every current subscriber of `channel`, on any instance. */
  publish(channel: string, message: unknown): Promise<void>;
  /** Calls `handler` for each message on `channel` until the returned function is called. */
  subscribe(channel: string, handler: (message: unknown) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export const BusChannel = {
  /** Events of one run became durable: `{ runId, events: LogEvent[] }`. */
  runEvents: (runId: string) => `run-events:${runId}`,
  /** A stop was recorded for a run: `{ runId }`. One channel for all runs; executors filter locally. */
  runStop: 'run-stop',
} as const;

/** Thrown by `publish` and `subscribe` on a bus that was closed. */
export class BusClosedError extends Error {
  readonly code = 'bus_closed';
  constructor() {
    super('The bus is closed.');
    this.name = 'BusClosedError';
  }
}
