/**
 * Signals between instances: "events appended to run X", "stop run X". Messages are plain JSON values;
 * delivery is at-most-once and best effort, so every consumer can fall back to the database (a live
 * reader re-reads the log on a gap; a stop is also recorded on the run row).
 */
export interface Bus {
  publish(channel: string, message: unknown): Promise<void>;
  /** Calls `handler` for each message on `channel` until the returned function is called. */
  subscribe(channel: string, handler: (message: unknown) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export const BusChannel = {
  /** Events of one run became durable: `{ events: LogEvent[] }`. */
  runEvents: (runId: string) => `run-events:${runId}`,
  /** A stop was recorded for a run: `{ runId }`. One channel for all runs; executors filter locally. */
  runStop: 'run-stop',
} as const;
