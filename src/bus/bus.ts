import type { Logger } from 'pino';
import { jsonChannel, type Channel } from './channel.ts';
import { runEventsCodec, type RunEventsMessage } from './run-events-codec.ts';

export type { BusCodec, Channel } from './channel.ts';
export type { BusRunEvent, RunEventsMessage } from './run-events-codec.ts';

/**
 * Signals between instances: "events appended to run X", "stop run X". Delivery is at-most-once and best
 * effort (a Redis connection that drops loses what was published meanwhile), so every consumer can fall back
 * to the database: a live reader re-reads the log on a gap; a stop is also recorded on the run row. The
 * database is the truth; a bus failure is never a reason to fail a request whose write committed.
 *
 * Every adapter keeps this contract (one conformance suite, `test/bus.test.ts`, runs against each):
 * - A channel is a typed value (`BusChannel`) carrying its name and codec. Handlers treat a message as
 *   read-only (a run event's cached SSE `frame` aside): the in-process adapter hands every handler the
 *   publisher's own object (no codec, no copy on the hot path of every event batch); a networked adapter hands
 *   them what the channel's codec decoded, once per instance.
 * - A handler whose `subscribe` has resolved receives every message published on its channel afterwards,
 *   once, barring transport loss; messages published through one instance arrive in publish order, but
 *   messages from different instances in no particular order (an instance's own handlers get its publishes
 *   during `publish`, before those of others already on their way). Delivery may be synchronous (in-process,
 *   and a networked bus to the publishing instance's own handlers) or asynchronous (from other instances):
 *   handlers assume neither. A networked `subscribe` resolves only once the server confirmed the subscription;
 *   `listening` tells beforehand whether it will have to wait for that.
 * - `publish` and `subscribe` are bounded: while the transport is unreachable they reject with
 *   `BusUnavailableError` within a short timeout (about half a second for `publish`) instead of waiting.
 * - A handler that throws (or returns a promise that rejects) is logged; the other handlers still receive the
 *   message and `publish` is unaffected.
 * - The function `subscribe` returns is idempotent; once called, its handler receives nothing more, even a
 *   message already in flight. Subscribing the same function twice delivers to it twice.
 * - `close` is idempotent and ends all delivery; afterwards `publish` and `subscribe` reject with
 *   `BusClosedError`, and unsubscribing is a no-op.
 */
export interface Bus {
  /** Sends `message` to every current subscriber of `channel`, on any instance. */
  publish<T>(channel: Channel<T>, message: T): Promise<void>;
  /** Calls `handler` for each message on `channel` until the returned function is called. */
  subscribe<T>(channel: Channel<T>, handler: (message: T) => void): Promise<() => Promise<void>>;
  /**
   * Whether a handler subscribed to `channel` now would hear every message published from now on without
   * waiting for `subscribe` to resolve: in-process always, over a network only for a channel this instance
   * holds and the server confirmed already. Otherwise subscribing takes a round trip.
   */
  listening(channel: Channel<unknown>): boolean;
  /** Whether the bus can deliver now: connected, and every subscription confirmed (for `/readyz`). */
  ready(): boolean;
  close(): Promise<void>;
}

/** The channels of an Outrun deployment. */
export const BusChannel = {
  /** Events of one run became durable. Each event's JSON text crosses the wire verbatim. */
  runEvents: (runId: string): Channel<RunEventsMessage> => ({
    name: `run-events:${runId}`,
    codec: runEventsCodec,
  }),
  /** A stop was recorded for a run. One channel for all runs; executors filter locally. */
  runStop: jsonChannel<{ runId: string }>('run-stop'),
  /** An API key was revoked: every instance closes the streams it authorized. */
  apiKeyRevoked: jsonChannel<{ keyId: string }>('api-key-revoked'),
  /**
   * A schedule was written (its due time may now be sooner): every other instance's schedule runner reads
   * its next due time again. `from` names the writing instance, whose own runner was nudged directly.
   */
  schedulesChanged: jsonChannel<{ from: string }>('schedules-changed'),
} as const;

/**
 * Publishes without letting a bus failure escape: the failure is logged at `warn` and `false` returned. For
 * callers whose real work is already durable (a stop recorded on the row, events committed).
 */
export async function publishBestEffort<T>(options: {
  bus: Bus;
  channel: Channel<T>;
  message: T;
  logger: Logger;
}): Promise<boolean> {
  try {
    await options.bus.publish(options.channel, options.message);
    return true;
  } catch (error) {
    options.logger.warn({ err: error, channel: options.channel.name }, 'bus publish failed; continuing');
    return false;
  }
}

/** Thrown by `publish` and `subscribe` on a bus that was closed. */
export class BusClosedError extends Error {
  readonly code = 'bus_closed';
  constructor() {
    super('The bus is closed.');
    this.name = 'BusClosedError';
  }
}

/** Thrown by `publish` and `subscribe` when the transport (Redis) does not answer in time. */
export class BusUnavailableError extends Error {
  readonly code = 'bus_unavailable';
  constructor(message = 'The bus is unavailable.', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BusUnavailableError';
  }
}
