import type { EventLog, LogEvent } from './event-log.ts';

/**
 * What a follower yields: consecutive events (one batch per read or per live delivery, so a writer can send
 * them in one write), or a keep-alive carrying the last durable sequence number seen.
 */
export type FollowItem =
  { kind: 'events'; events: LogEvent[]; end: boolean } | { kind: 'ping'; lastSeq: number };

export interface FollowOptions {
  log: EventLog;
  runId: string;
  /** Yield events with `seq > after`. @default 0 */
  after?: number;
  /** Whether the run has already ended (consulted when the log holds nothing past `after`). */
  isFinished: () => Promise<boolean>;
  /** A keep-alive is yielded after at most this long without events (jittered down by up to 25 %). @default 15000 */
  keepAliveMs?: number;
  /** Live events buffered before the follower drops them and re-reads the log instead. @default 10000 */
  maxBuffered?: number;
  signal?: AbortSignal;
}

const PAGE = 1000;

/**
 * Follows a run's event log: replays durable events after `after`, then tails live ones, yielding each
 * sequence number exactly once and in order, until the terminal `data-run` event (`end: true`).
 *
 * It subscribes before it reads, so an event is either in the read or arrives live; live events that do
 * not continue the sequence (a gap, or a buffer that overflowed for a slow reader) send it back to the
 * log, which holds every event that was ever published.
 */
export async function* followRun(options: FollowOptions): AsyncGenerator<FollowItem> {
  const { log, runId, signal } = options;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const maxBuffered = options.maxBuffered ?? 10_000;
  let lastSeq = options.after ?? 0;
  let buffer: LogEvent[] = [];
  let overflowed = false;
  let wake: (() => void) | null = null;
  const notify = () => {
    const resolve = wake;
    wake = null;
    resolve?.();
  };

  const unsubscribe = await log.subscribe(runId, (events) => {
    if (overflowed) return;
    if (buffer.length + events.length > maxBuffered) {
      overflowed = true;
      buffer = [];
    } else buffer.push(...events);
    notify();
  });
  signal?.addEventListener('abort', notify, { once: true });

  try {
    let needsRead = true;
    while (!signal?.aborted) {
      if (needsRead) {
        overflowed = false;
        const events = await log.read({ runId, after: lastSeq, limit: PAGE });
        const batch = consecutive(events, lastSeq);
        if (batch.events.length > 0) {
          lastSeq = batch.lastSeq;
          yield { kind: 'events', events: batch.events, end: batch.end };
          if (batch.end) return;
        }
        if (events.length === PAGE) continue;
        needsRead = false;
        if (events.length === 0 && (await options.isFinished())) {
          // Finished and nothing after `lastSeq`: the terminal event was consumed earlier, or `after` was past it.
          // Re-read once in case the terminal event was committed between the read and the status check.
          const tail = consecutive(await log.read({ runId, after: lastSeq, limit: PAGE }), lastSeq);
          if (tail.events.length > 0) yield { kind: 'events', events: tail.events, end: true };
          return;
        }
      }

      if (overflowed) {
        needsRead = true;
        continue;
      }
      if (buffer.length === 0) {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await new Promise<boolean>((resolve) => {
          wake = () => resolve(false);
          // Between 75 % and 100 % of the interval: never later than promised, and readers that went quiet
          // together (a wave of runs waiting on tools) do not all re-read the log in the same instant.
          timer = setTimeout(() => resolve(true), keepAliveMs * (0.75 + 0.25 * Math.random()));
        });
        clearTimeout(timer);
        if (timedOut) {
          yield { kind: 'ping', lastSeq };
          // A quiet run may have been settled by an instance whose bus message never reached us.
          needsRead = true;
        }
        continue;
      }

      const live = buffer;
      buffer = [];
      const batch = consecutive(live, lastSeq);
      // Live events that do not continue the sequence mean something was missed: the log has it.
      if (batch.gap) needsRead = true;
      if (batch.events.length > 0) {
        lastSeq = batch.lastSeq;
        yield { kind: 'events', events: batch.events, end: batch.end };
        if (batch.end) return;
      }
    }
  } finally {
    signal?.removeEventListener('abort', notify);
    await unsubscribe();
  }
}

/**
 * The events of `events` that continue the sequence after `lastSeq`: duplicates are skipped, and a gap or
 * the terminal event ends the batch.
 */
function consecutive(
  events: LogEvent[],
  lastSeq: number,
): { events: LogEvent[]; lastSeq: number; end: boolean; gap: boolean } {
  const batch: LogEvent[] = [];
  for (const event of events) {
    if (event.seq <= lastSeq) continue;
    if (event.seq !== lastSeq + 1) return { events: batch, lastSeq, end: false, gap: true };
    batch.push(event);
    lastSeq = event.seq;
    if (event.terminal) return { events: batch, lastSeq, end: true, gap: false };
  }
  return { events: batch, lastSeq, end: false, gap: false };
}
