import type { EventLog, LogEvent } from './event-log.ts';

/**
 * What a follower yields: consecutive events (one batch per read or per live delivery, so a writer can send
 * them in one write), or a keep-alive carrying the last durable sequence number known (see `FollowSink.ping`).
 */
export type FollowItem =
  { kind: 'events'; events: LogEvent[]; end: boolean } | { kind: 'ping'; lastSeq: number };

export interface FollowOptions {
  log: EventLog;
  runId: string;
  /** Yield events with `seq > after`. @default 0 */
  after?: number;
  /**
   * Whether the run has already ended: asked when the log holds nothing past `after` and the follower has
   * delivered nothing yet.
   */
  isFinished: () => Promise<boolean>;
  /** A keep-alive is yielded after at most this long without events (jittered down by up to 25 %). @default 15000 */
  keepAliveMs?: number;
  /** Live events buffered before the follower drops them and re-reads the log instead. @default 10000 */
  maxBuffered?: number;
  /**
   * Nothing is delivered before this resolves, but the follower subscribes and reads meanwhile: a route can
   * check the reader's access to the run while the first page is on its way. Close the follower instead of
   * resolving it to end the follow.
   */
  ready?: Promise<void>;
  /**
   * Makes the follower's first read in place of `log.read` (with the same `after` and `limit`): a route folds
   * the reader's access check into it, one statement where a check beside the read took two. A rejection ends
   * the follow with that failure. Not with `fresh`, which reads nothing first.
   */
  readFirst?: (page: { after: number; limit: number }) => Promise<LogEvent[]>;
  /**
   * The first page, already read (events after `after`, oldest first) by the statement that found the run
   * (useChat's resume): delivered in place of a first read. It was read before the follower subscribed, so
   * the log is read again once the subscription is made. Not with `readFirst` or `fresh`.
   */
  firstPage?: LogEvent[];
  /**
   * The run had no events yet when the follower subscribed (a streaming start subscribes before it begins its
   * run): every event will arrive live, so the follower reads nothing first. A gap still sends it to the log.
   */
  fresh?: boolean;
  signal?: AbortSignal;
}

/**
 * Where a `RunFollower` delivers. Each method returns whether the reader takes more right away; `false`
 * pauses the follower (live events are buffered meanwhile) until `resume()`.
 */
export interface FollowSink {
  /**
   * Consecutive events after the last ones delivered; `end` when the last is the run's terminal event.
   * `live`: the events came from the bus, whose event objects every reader on this instance shares (a read's
   * belong to this follower alone).
   */
  events(events: LogEvent[], end: boolean, live: boolean): boolean;
  /**
   * A keep-alive after a quiet interval, with the last durable sequence number known: the last delivered (or
   * `after`), or the log's last for a reader that resumed ahead of the log. Never one the log does not hold.
   */
  ping(lastSeq: number): boolean;
}

/**
 * Events a follower's first read asks for (and a route that reads the first page itself, `firstPage`): small,
 * so that a resuming reader's first write goes out sooner.
 */
export const FIRST_PAGE = 100;
/** Events per later read. */
const PAGE = 1000;

/**
 * A replay found the log empty past what it delivered although the run has ended and its terminal event never
 * came: the run's events were deleted under it (`OUTRUN_EVENT_RETENTION_DAYS`). `run()` rejects with it; a
 * reader that reconnects is told why (`410 events_expired`).
 */
export class LogTruncatedError extends Error {
  constructor(runId: string, lastSeq: number) {
    super(`The events of run ${runId} after ${lastSeq} were deleted while it was being replayed.`);
    this.name = 'LogTruncatedError';
  }
}

type FollowerState =
  /** Reading the log or draining buffered live events; live events are buffered. */
  | 'catching-up'
  /** Caught up: the bus handler hands live events to the sink as they arrive. */
  | 'live'
  /** The sink asked for a pause; live events are buffered until `resume()`. */
  | 'paused'
  /** The terminal event was delivered, the follower was closed, or it failed. */
  | 'ended';

/**
 * Follows a run's event log: replays durable events after `after`, then tails live ones, delivering each
 * sequence number exactly once and in order, until the terminal `data-run` event (`end: true`).
 *
 * It subscribes before it reads, so an event is either in the read or arrives live. Where subscribing takes
 * a round trip (a networked bus, a run this instance does not follow yet), its first read goes out first
 * and is delivered at once; it subscribes after that, unless the read held the run's end, and reads the log
 * again once the subscription is confirmed. Live events that do not continue the sequence (a gap, or a buffer
 * that overflowed for a slow reader) send it back to the log, which holds every event that was ever published. Once caught up, live events go to the sink from the
 * bus handler itself: a reader costs no promise, timer or allocation per event, which is what lets one run
 * fan out to many readers.
 */
export class RunFollower {
  readonly #options: FollowOptions;
  readonly #sink: FollowSink;
  readonly #keepAliveMs: number;
  readonly #maxBuffered: number;
  #state: FollowerState = 'catching-up';
  #lastSeq: number;
  /**
   * Whether `lastSeq` is known to be a durable event's (or 0). Only a follower that has delivered nothing asks:
   * its cursor is the reader's `after`, which may be ahead of the log.
   */
  #cursorDurable: boolean;
  #buffer: LogEvent[] = [];
  #overflowed = false;
  #needsRead: boolean;
  #reads = 0;
  /** Whether the last read of the log filled its page (so the next one was expected to find more). */
  #lastReadFull = false;
  /**
   * The subscription, while the first page is read before it is confirmed (a networked bus that does not
   * hold the run's channel yet): that page's events are durable and may go out, but events committed
   * between its read and the confirmation reached neither, so the log is read again once it resolves.
   */
  #unconfirmed: Promise<unknown> | null = null;
  /**
   * Resolves once the first page (read before subscribing) was delivered, or the follower ended: the
   * subscription waits for it (see `run`).
   */
  readonly #firstPageDelivered: Promise<void>;
  #deliveredFirstPage!: () => void;
  /** `ready`, until awaited before the first delivery. */
  #ready: Promise<void> | null;
  #unsubscribe: (() => Promise<void>) | null = null;
  #timer: NodeJS.Timeout | undefined;
  /** When the last delivery or keep-alive happened (`performance.now()`). */
  #lastActivity = 0;
  /** The current keep-alive interval, jittered. */
  #period = 0;
  #failure: unknown = null;
  #settle: (() => void) | null = null;
  readonly #ended: Promise<void>;
  #subscribed!: (failure?: unknown) => void;

  /**
   * Resolves once `run()` has subscribed (or was closed first): from then on every event published for the
   * run reaches the follower. Rejects if subscribing failed (and so does `run()`).
   */
  readonly subscribed: Promise<void>;

  constructor(options: FollowOptions, sink: FollowSink) {
    if (options.fresh && (options.readFirst || options.firstPage)) {
      throw new Error('a fresh follower reads nothing first');
    }
    if (options.readFirst && options.firstPage) throw new Error('a follower reads its first page once');
    this.#options = options;
    this.#sink = sink;
    this.#keepAliveMs = options.keepAliveMs ?? 15_000;
    this.#maxBuffered = options.maxBuffered ?? 10_000;
    this.#lastSeq = options.after ?? 0;
    this.#cursorDurable = this.#lastSeq === 0;
    this.#needsRead = !options.fresh;
    this.#ready = options.ready ?? null;
    this.#ended = new Promise((resolve) => (this.#settle = resolve));
    this.#firstPageDelivered = new Promise((resolve) => (this.#deliveredFirstPage = resolve));
    this.subscribed = new Promise((resolve, reject) => {
      this.#subscribed = (failure) => (failure === undefined ? resolve() : reject(failure));
    });
    // Awaiting it is optional: `run()` rejects with the same failure.
    this.subscribed.catch(() => {});
  }

  /** The last sequence number delivered. */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /**
   * Subscribes, reads and delivers until the terminal event, `close()` or the signal; rejects if reading the
   * log failed. Call once.
   */
  async run(): Promise<void> {
    const signal = this.#options.signal;
    if (signal?.aborted) {
      this.#subscribed();
      return;
    }
    signal?.addEventListener('abort', this.close, { once: true });
    const { log, runId } = this.#options;
    try {
      // Where subscribing takes a round trip, the first page is read (or given) first, delivered at once, and
      // the follower subscribes only if that page did not end the run: a finished run's replay costs the bus
      // nothing, and a resume's first page does not share the thread with the bus's command. Events committed
      // between that read and the confirmation reached neither, so the log is read again once it comes. A first
      // page given was read before subscribing, so it is followed by a read of the log too.
      const { firstPage } = this.#options;
      const readsBeforeSubscribed = this.#needsRead && (firstPage !== undefined || !log.listening(runId));
      const subscribe = () => log.subscribe(runId, this.#onLive);
      const subscribing = (
        readsBeforeSubscribed
          ? this.#firstPageDelivered.then(() => (this.#state === 'ended' ? null : subscribe()))
          : subscribe()
      ).then(
        (done) => {
          this.#subscribed();
          return done;
        },
        (error: unknown) => {
          this.#subscribed(error ?? new Error('subscribing failed'));
          throw error;
        },
      );
      if (readsBeforeSubscribed) {
        this.#unconfirmed = subscribing;
        void this.#catchUp();
      }
      // A follower that ends first (its first page held the run's end, or it was closed) does not wait for the
      // confirmation: it leaves once the subscription is made, if it was made at all.
      const unsubscribe = await Promise.race([subscribing, this.#ended.then(() => null)]);
      if (unsubscribe === null) {
        void subscribing.then(
          (done) => done && leave(done),
          () => {},
        );
      } else {
        this.#unsubscribe = unsubscribe;
        if (this.#state !== 'ended') {
          this.#lastActivity = performance.now();
          this.#armKeepAlive(this.#nextPeriod());
          if (!readsBeforeSubscribed) void this.#catchUp();
          await this.#ended;
        }
      }
      if (this.#failure) throw this.#failure;
    } finally {
      this.#end();
      signal?.removeEventListener('abort', this.close);
      // Not awaited: the handler hears nothing more once it is called, and a reader's last frames need not wait
      // for the bus's server to confirm.
      if (this.#unsubscribe) leave(this.#unsubscribe);
    }
  }

  /** Goes on after the sink returned `false`. */
  resume(): void {
    if (this.#state !== 'paused') return;
    this.#state = 'catching-up';
    void this.#catchUp();
  }

  /** Stops following; `run()` resolves. */
  readonly close = (): void => this.#end();

  #end(failure?: unknown): void {
    if (this.#state === 'ended') return;
    this.#state = 'ended';
    if (failure !== undefined) this.#failure = failure;
    this.#buffer = [];
    clearTimeout(this.#timer);
    this.#deliveredFirstPage();
    this.#settle?.();
  }

  readonly #onLive = (events: LogEvent[]): void => {
    switch (this.#state) {
      case 'ended':
        return;
      case 'live': {
        // Caught up and nothing buffered: straight to the sink.
        const batch = consecutive(events, this.#lastSeq);
        // Live events that do not continue the sequence mean something was missed: the log has it.
        if (batch.gap) this.#needsRead = true;
        try {
          if (batch.events.length > 0) {
            if (!this.#deliver(batch, true)) return;
          } else if (batch.end) {
            // The run's end went by at or behind the cursor: a reader that resumed ahead of the log.
            this.#end();
            return;
          }
        } catch (error) {
          this.#end(error);
          return;
        }
        if (this.#needsRead) {
          this.#state = 'catching-up';
          void this.#catchUp();
        }
        return;
      }
      default:
        if (this.#overflowed) return;
        if (this.#buffer.length + events.length > this.#maxBuffered) {
          this.#overflowed = true;
          this.#buffer = [];
        } else for (const event of events) this.#buffer.push(event);
    }
  };

  /** Whether this follower has delivered any event (`lastSeq` starts at `after` and moves only by delivery). */
  #delivered(): boolean {
    return this.#lastSeq > (this.#options.after ?? 0);
  }

  /** Hands a batch to the sink; whether the follower goes on (not ended, not paused). */
  #deliver(batch: Batch, live: boolean): boolean {
    this.#lastSeq = batch.lastSeq;
    this.#lastActivity = performance.now();
    const more = this.#sink.events(batch.events, batch.end, live);
    if (batch.end) this.#end();
    if (this.#state === 'ended') return false;
    if (!more) this.#state = 'paused';
    return more;
  }

  /** Reads the log and drains buffered live events until caught up (then live), paused or ended. */
  async #catchUp(): Promise<void> {
    const { log, runId } = this.#options;
    try {
      while (this.#state === 'catching-up') {
        if (this.#needsRead) {
          this.#overflowed = false;
          const first = this.#reads++ === 0;
          const limit = first ? FIRST_PAGE : PAGE;
          const unconfirmed = this.#unconfirmed;
          const page = { runId, after: this.#lastSeq, limit };
          const { readFirst, firstPage } = this.#options;
          const events = await (!first ? log.read(page) : (firstPage ?? readFirst?.(page) ?? log.read(page)));
          if (!(await this.#whenReady())) return;
          if (unconfirmed) {
            // Read before the subscription was confirmed: deliver it, then read again once it is.
            const batch = consecutive(events, this.#lastSeq);
            if (batch.events.length > 0 && !this.#deliver(batch, false)) return;
            this.#deliveredFirstPage();
            await unconfirmed;
            this.#unconfirmed = null;
            if (this.#state !== 'catching-up') return;
            continue;
          }
          // An empty read right after a full one, from a follower that has delivered events but not the run's
          // end: the run may have ended with its events deleted since (checked below, only then).
          const maybeTruncated = events.length === 0 && this.#lastReadFull && this.#delivered();
          this.#lastReadFull = events.length === limit;
          if (maybeTruncated) {
            const found = await this.#truncated(limit);
            if (found === 'truncated' || this.#state !== 'catching-up') return;
            if (found === 'more') {
              this.#needsRead = true;
              continue;
            }
          }
          // A full page: there may be more, so read on before going live.
          this.#needsRead = events.length === limit;
          const batch = consecutive(events, this.#lastSeq);
          if (batch.events.length > 0) {
            if (!this.#deliver(batch, false)) return;
            // Let the sink's write reach the socket before the next read: an embedded database reads on this
            // thread, and Node sends a response's writes only once the current run of microtasks is over.
            if (this.#needsRead) await new Promise((resolve) => setImmediate(resolve));
            if (this.#state !== 'catching-up') return;
          }
          // Nothing after `lastSeq`, in a read made once subscribed: a run that ends from here on sends its end
          // live. Whether it has ended already is asked only while this follower has delivered nothing: an event
          // it delivered was not the terminal one, and the terminal event is the run's last, so its end is to come.
          if (events.length === 0 && !this.#delivered() && (await this.#options.isFinished())) {
            if (this.#state !== 'catching-up') return;
            // Finished and nothing after `lastSeq`: `after` was at or past the terminal event. Re-read once in
            // case the terminal event was committed between the read and the status check.
            const tail = consecutive(await log.read({ runId, after: this.#lastSeq, limit }), this.#lastSeq);
            if (this.#state !== 'catching-up') return;
            if (tail.events.length > 0) this.#deliver({ ...tail, end: true }, false);
            this.#end();
            return;
          }
          continue;
        }
        if (this.#overflowed) {
          this.#needsRead = true;
          continue;
        }
        // A fresh follower gets here without a read: nothing is delivered before `ready`.
        if (this.#ready && !(await this.#whenReady())) return;
        if (this.#buffer.length > 0) {
          const live = this.#buffer;
          this.#buffer = [];
          const batch = consecutive(live, this.#lastSeq);
          if (batch.gap) this.#needsRead = true;
          if (batch.events.length > 0) {
            if (!this.#deliver(batch, true)) return;
          } else if (batch.end) {
            this.#end();
            return;
          }
          continue;
        }
        this.#state = 'live';
      }
    } catch (error) {
      this.#end(error);
    }
  }

  /**
   * After an empty read that followed a full one: whether the run has ended with the log holding nothing more
   * and its terminal event never delivered (`truncated`: the follower ends with `LogTruncatedError`), or its
   * last events were committed between the read and the status check (`more`: read again), or neither.
   */
  async #truncated(limit: number): Promise<'truncated' | 'more' | 'no'> {
    const { log, runId } = this.#options;
    if (!(await this.#options.isFinished()) || this.#state !== 'catching-up') return 'no';
    const tail = await log.read({ runId, after: this.#lastSeq, limit });
    if (tail.length > 0) return 'more';
    this.#end(new LogTruncatedError(runId, this.#lastSeq));
    return 'truncated';
  }

  /** Waits for `ready` once, before the first delivery; whether the follower is still catching up. */
  async #whenReady(): Promise<boolean> {
    if (this.#ready) {
      await this.#ready;
      this.#ready = null;
    }
    return this.#state === 'catching-up';
  }

  #nextPeriod(): number {
    // Between 75 % and 100 % of the interval: never later than promised, and readers that went quiet
    // together (a wave of runs waiting on tools) do not all re-read the log in the same instant.
    return (this.#period = this.#keepAliveMs * (0.75 + 0.25 * Math.random()));
  }

  #armKeepAlive(delay: number): void {
    this.#timer = setTimeout(this.#onKeepAliveTimer, delay);
  }

  /** One timer per follower, re-armed for what is left of the interval rather than reset per event. */
  readonly #onKeepAliveTimer = (): void => {
    if (this.#state === 'ended') return;
    const idle = performance.now() - this.#lastActivity;
    if (idle < this.#period) {
      this.#armKeepAlive(this.#period - idle);
      return;
    }
    this.#lastActivity = performance.now();
    this.#armKeepAlive(this.#nextPeriod());
    // Only a caught-up follower is idle; one that is reading or paused is busy with its reader.
    if (this.#state !== 'live') return;
    if (!this.#cursorDurable && !this.#delivered()) {
      // Live events are buffered while the log's end is looked up.
      this.#state = 'catching-up';
      void this.#keepAliveAhead();
      return;
    }
    try {
      this.#keepAlive(this.#lastSeq);
    } catch (error) {
      this.#end(error);
    }
  };

  /** Sends a keep-alive naming `seq`, then re-reads the log (or pauses, if the sink asks to). */
  #keepAlive(seq: number): void {
    const state = this.#state;
    const more = this.#sink.ping(seq);
    if (this.#state !== state) return;
    // A quiet run may have been settled by an instance whose bus message never reached us.
    this.#needsRead = true;
    if (!more) {
      this.#state = 'paused';
      return;
    }
    this.#state = 'catching-up';
    void this.#catchUp();
  }

  /**
   * The keep-alive of a follower that has delivered nothing and whose cursor (the reader's `after`) is not known
   * to be durable: it may be ahead of the log, so the keep-alive names the lower of it and the log's last
   * sequence number. Once the log is found to reach the cursor, later keep-alives look nothing up.
   */
  async #keepAliveAhead(): Promise<void> {
    try {
      const logEnd = await this.#options.log.lastSeq(this.#options.runId);
      if (this.#state !== 'catching-up') return;
      if (logEnd >= this.#lastSeq) this.#cursorDurable = true;
      this.#keepAlive(Math.min(this.#lastSeq, logEnd));
    } catch (error) {
      this.#end(error);
    }
  }
}

/**
 * Follows a run as an async generator of `FollowItem`s (see `RunFollower`); the follower waits while the
 * consumer handles an item.
 */
export async function* followRun(options: FollowOptions): AsyncGenerator<FollowItem> {
  const queue: FollowItem[] = [];
  let wake: (() => void) | null = null;
  let finished = false;
  let failure: unknown = null;
  const push = (item: FollowItem): boolean => {
    queue.push(item);
    const resolve = wake;
    wake = null;
    resolve?.();
    return false;
  };
  const follower = new RunFollower(options, {
    events: (events, end) => push({ kind: 'events', events, end }),
    ping: (lastSeq) => push({ kind: 'ping', lastSeq }),
  });
  const running = follower.run().then(
    () => undefined,
    (error: unknown) => {
      failure = error;
    },
  );
  void running.then(() => {
    finished = true;
    const resolve = wake;
    wake = null;
    resolve?.();
  });
  try {
    for (;;) {
      const item = queue.shift();
      if (item) {
        yield item;
        if (queue.length === 0) follower.resume();
        continue;
      }
      if (finished) break;
      await new Promise<void>((resolve) => (wake = resolve));
    }
    if (failure) throw failure;
  } finally {
    follower.close();
    await running;
  }
}

/** Ends a subscription without waiting; an adapter logs its own failure to leave a channel. */
function leave(unsubscribe: () => Promise<void>): void {
  unsubscribe().catch(() => {});
}

interface Batch {
  events: LogEvent[];
  lastSeq: number;
  end: boolean;
  gap: boolean;
}

/**
 * The events of `events` that continue the sequence after `lastSeq`: duplicates are skipped, and a gap or
 * the terminal event ends the batch. `events` itself is returned when all of it continues the sequence. A
 * terminal event at or before `lastSeq` (a cursor that was ahead of the log) ends an empty batch: the run has
 * nothing more to deliver.
 */
function consecutive(events: LogEvent[], lastSeq: number): Batch {
  let seq = lastSeq;
  let index = 0;
  for (; index < events.length; index++) {
    const event = events[index]!;
    if (event.seq !== seq + 1) break;
    seq = event.seq;
    if (event.terminal) {
      return index === events.length - 1
        ? { events, lastSeq: seq, end: true, gap: false }
        : { events: events.slice(0, index + 1), lastSeq: seq, end: true, gap: false };
    }
  }
  if (index === events.length) return { events, lastSeq: seq, end: false, gap: false };
  const batch: LogEvent[] = [];
  for (const event of events) {
    if (event.seq <= lastSeq) {
      if (event.terminal) return { events: batch, lastSeq, end: true, gap: false };
      continue;
    }
    if (event.seq !== lastSeq + 1) return { events: batch, lastSeq, end: false, gap: true };
    batch.push(event);
    lastSeq = event.seq;
    if (event.terminal) return { events: batch, lastSeq, end: true, gap: false };
  }
  return { events: batch, lastSeq, end: false, gap: false };
}
