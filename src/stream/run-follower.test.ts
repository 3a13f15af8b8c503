import { describe, expect, it } from 'vitest';
import type { EventLog, LogEvent } from './event-log.ts';
import { followRun, RunFollower, type FollowSink } from './run-follower.ts';

/** An in-memory log: `append` makes events durable and publishes them, as the real one does after commit. */
class MemoryLog {
  readonly events: LogEvent[] = [];
  readonly reads: { after: number; limit: number }[] = [];
  readonly handlers = new Set<(events: LogEvent[]) => void>();
  /** Runs before a read answers (to publish events while a read is in flight). */
  beforeRead: (() => void) | null = null;

  append(count: number, options: { terminal?: boolean; publish?: boolean } = {}): LogEvent[] {
    const added: LogEvent[] = [];
    for (let index = 0; index < count; index++) {
      const seq = this.events.length + 1;
      const terminal = options.terminal === true && index === count - 1;
      added.push({
        seq,
        data: JSON.stringify({ type: terminal ? 'data-run' : 'text-delta', seq }),
        terminal,
      });
      this.events.push(added.at(-1)!);
    }
    if (options.publish !== false) this.publish(added);
    return added;
  }

  publish(events: LogEvent[]): void {
    for (const handler of [...this.handlers]) handler(events);
  }

  async read(options: { runId: string; after: number; limit?: number }): Promise<LogEvent[]> {
    const limit = options.limit ?? 1000;
    this.reads.push({ after: options.after, limit });
    await Promise.resolve();
    const before = this.beforeRead;
    this.beforeRead = null;
    before?.();
    return this.events.filter((event) => event.seq > options.after).slice(0, limit);
  }

  /**
   * Set, the log is on a networked bus that does not hold the run's channel yet: a subscription hears nothing
   * until this resolves (the server's confirmation), and `subscribe` resolves only then.
   */
  confirmation: Promise<void> | null = null;

  listening(): boolean {
    return this.confirmation === null;
  }

  /** How often `lastSeq` was asked. */
  lastSeqCalls = 0;

  async lastSeq(): Promise<number> {
    this.lastSeqCalls++;
    return this.events.length;
  }

  async subscribe(_runId: string, handler: (events: LogEvent[]) => void): Promise<() => Promise<void>> {
    if (this.confirmation) await this.confirmation;
    this.handlers.add(handler);
    return async () => void this.handlers.delete(handler);
  }

  asEventLog(): EventLog {
    return this as unknown as EventLog;
  }
}

/** A sink that records what it got; `accept` decides what each call returns. */
function recorder(accept: () => boolean = () => true) {
  const seqs: number[] = [];
  const batches: number[][] = [];
  const pings: number[] = [];
  let ended = false;
  const sink: FollowSink = {
    events(events, end) {
      batches.push(events.map((event) => event.seq));
      seqs.push(...events.map((event) => event.seq));
      if (end) ended = true;
      return accept();
    },
    ping(lastSeq) {
      pings.push(lastSeq);
      return accept();
    },
  };
  return { sink, seqs, batches, pings, ended: () => ended };
}

/** A follower of run `r` in `log`, whose run is finished or not, delivering to `got`. */
function followerOf(log: MemoryLog, got: ReturnType<typeof recorder>, finished = false): RunFollower {
  return new RunFollower({ log: log.asEventLog(), runId: 'r', isFinished: async () => finished }, got.sink);
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/** The order in which the follower reads and subscribes (`'read'`, `'subscribe'`), as it calls them. */
function callsTo(log: MemoryLog): string[] {
  const calls: string[] = [];
  const read = log.read.bind(log);
  const subscribe = log.subscribe.bind(log);
  log.read = (options) => (calls.push('read'), read(options));
  log.subscribe = (runId, handler) => (calls.push('subscribe'), subscribe(runId, handler));
  return calls;
}

/** Puts `log` on a bus that must confirm subscriptions; returns the confirmation (the server's answer). */
function awaitConfirmation(log: MemoryLog): () => void {
  let confirm!: () => void;
  log.confirmation = new Promise<void>((resolve) => (confirm = resolve));
  return confirm;
}

describe('RunFollower', () => {
  it('replays the log, then hands each live batch to the sink as it is published, each seq once', async () => {
    const log = new MemoryLog();
    log.append(5);
    const got = recorder();
    const follower = followerOf(log, got);
    const running = follower.run();
    await tick();
    expect(got.seqs).toEqual([1, 2, 3, 4, 5]);
    log.append(1);
    // Delivered from the publish itself, before any await.
    expect(got.seqs).toEqual([1, 2, 3, 4, 5, 6]);
    log.append(3);
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual(Array.from({ length: 10 }, (_, index) => index + 1));
    expect(got.batches.slice(-2)).toEqual([[7, 8, 9], [10]]);
    expect(got.ended()).toBe(true);
    expect(log.handlers.size).toBe(0);
  });

  it('gives a reader that joins mid-run every sequence number once, also those published during its first read', async () => {
    const log = new MemoryLog();
    log.append(50);
    // Published after the subscription, while the first read is in flight: both in the read and live.
    log.beforeRead = () => log.append(3);
    const got = recorder();
    const running = new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 20, isFinished: async () => false },
      got.sink,
    ).run();
    await tick();
    log.append(2);
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual(Array.from({ length: 36 }, (_, index) => index + 21));
  });

  it('on a bus that must confirm the subscription, delivers its first read at once and reads again once confirmed', async () => {
    const log = new MemoryLog();
    log.append(50);
    const confirm = awaitConfirmation(log);
    const got = recorder();
    const follower = new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 20, isFinished: async () => false },
      got.sink,
    );
    const running = follower.run();
    await tick();
    // Read and delivered while the subscription waits for the server.
    expect(got.seqs).toEqual(Array.from({ length: 30 }, (_, index) => index + 21));
    // The run goes on and ends before the confirmation: its bus messages reach nobody.
    log.append(3);
    log.append(1, { terminal: true });
    expect(log.handlers.size).toBe(0);
    confirm();
    await running;
    expect(got.seqs).toEqual(Array.from({ length: 34 }, (_, index) => index + 21));
    expect(got.ended()).toBe(true);
    expect(log.reads).toEqual([
      { after: 20, limit: 100 },
      { after: 50, limit: 1000 },
    ]);
  });

  it('asks whether the run has ended only while it has delivered nothing', async () => {
    // Another instance's resume: the first page goes out, the read after the confirmation finds nothing new.
    const log = new MemoryLog();
    log.append(10);
    const confirm = awaitConfirmation(log);
    let asked = 0;
    const isFinished = async () => (asked++, false);
    const got = recorder();
    const running = new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 4, isFinished },
      got.sink,
    ).run();
    await tick();
    confirm();
    await tick();
    expect(log.reads).toEqual([
      { after: 4, limit: 100 },
      { after: 10, limit: 1000 },
    ]);
    // Event 10 was delivered and is not the terminal one: the run's end is still to come, live.
    expect(asked).toBe(0);
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual(Array.from({ length: 7 }, (_, index) => index + 5));

    // A reader that comes back at the run's end has been delivered nothing: it asks, and ends.
    const after = new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 11, isFinished: async () => (asked++, true) },
      recorder().sink,
    );
    await after.run();
    expect(asked).toBe(1);
  });

  it('on a bus that must confirm the subscription, sends its first read before it subscribes', async () => {
    const log = new MemoryLog();
    log.append(10);
    const confirm = awaitConfirmation(log);
    const calls = callsTo(log);
    const got = recorder();
    const running = followerOf(log, got).run();
    await tick();
    expect(calls).toEqual(['read', 'subscribe']);
    // Committed after the read, before the subscription was made: the read after the confirmation has them.
    log.append(1, { terminal: true });
    confirm();
    await running;
    expect(got.seqs).toEqual(Array.from({ length: 11 }, (_, index) => index + 1));
    expect(calls).toEqual(['read', 'subscribe', 'read']);
  });

  it('delivers a first page given in place of its first read, and reads the log once subscribed', async () => {
    const log = new MemoryLog();
    // Read by the route's statement; the run went on to its end before the follower subscribed.
    const firstPage = log.append(5);
    log.append(4);
    log.append(1, { terminal: true });
    const got = recorder();
    const running = new RunFollower(
      { log: log.asEventLog(), runId: 'r', firstPage, isFinished: async () => true },
      got.sink,
    ).run();
    await Promise.race([running, new Promise((resolve) => setTimeout(resolve, 500))]);
    expect(got.batches[0]).toEqual([1, 2, 3, 4, 5]);
    expect(got.seqs).toEqual(Array.from({ length: 10 }, (_, index) => index + 1));
    expect(got.ended()).toBe(true);
    expect(log.reads).toEqual([{ after: 5, limit: 1000 }]);
  });

  it('refuses a first page with readFirst or fresh: a follower reads its first page once, or none', () => {
    const log = new MemoryLog().asEventLog();
    const base = { log, runId: 'r', isFinished: async () => false };
    const { sink } = recorder();
    const readFirst = async () => [];
    expect(() => new RunFollower({ ...base, firstPage: [], readFirst }, sink)).toThrow(/once/);
    expect(() => new RunFollower({ ...base, firstPage: [], fresh: true }, sink)).toThrow(/nothing first/);
    expect(() => new RunFollower({ ...base, readFirst, fresh: true }, sink)).toThrow(/nothing first/);
  });

  it('on a bus that holds the run already, subscribes before it reads', async () => {
    const log = new MemoryLog();
    log.append(3);
    const calls = callsTo(log);
    const got = recorder();
    const running = followerOf(log, got).run();
    await tick();
    log.append(1, { terminal: true });
    await running;
    expect(calls).toEqual(['subscribe', 'read']);
    expect(got.seqs).toEqual([1, 2, 3, 4]);
  });

  it("on a bus that must confirm the subscription, ends at a first read that holds the run's end without subscribing", async () => {
    const log = new MemoryLog();
    log.append(5);
    log.append(1, { terminal: true });
    // Never confirmed: a follower that asked would wait for ever.
    log.confirmation = new Promise<void>(() => {});
    const calls = callsTo(log);
    const got = recorder();
    const follower = followerOf(log, got, true);
    await follower.run();
    // `subscribed` resolves for a follower that ended before it subscribed.
    const settled = await Promise.race([
      follower.subscribed.then(() => 'resolved'),
      new Promise((resolve) => setTimeout(resolve, 500, 'pending')),
    ]);
    expect(settled).toBe('resolved');
    expect(got.seqs).toEqual([1, 2, 3, 4, 5, 6]);
    expect(got.ended()).toBe(true);
    await tick();
    expect(calls).toEqual(['read']);
  });

  it('closed while its subscription waits for the confirmation, ends at once and leaves the channel once confirmed', async () => {
    const log = new MemoryLog();
    log.append(4);
    const confirm = awaitConfirmation(log);
    const calls = callsTo(log);
    const got = recorder();
    const follower = followerOf(log, got);
    const running = follower.run();
    await tick();
    expect(got.seqs).toEqual([1, 2, 3, 4]);
    expect(calls).toEqual(['read', 'subscribe']);
    follower.close();
    await running;
    confirm();
    await tick();
    expect(log.handlers.size).toBe(0);
  });

  it("ends at a first page given that holds the run's end without subscribing or reading", async () => {
    const log = new MemoryLog();
    log.append(2);
    const firstPage = [...log.events, ...log.append(1, { terminal: true })];
    const calls = callsTo(log);
    const got = recorder();
    await new RunFollower(
      { log: log.asEventLog(), runId: 'r', firstPage, isFinished: async () => true },
      got.sink,
    ).run();
    await tick();
    expect(got.seqs).toEqual([1, 2, 3]);
    expect(got.ended()).toBe(true);
    expect(calls).toEqual([]);
  });

  it('ends without waiting for the bus to confirm that it left the channel', async () => {
    const log = new MemoryLog();
    log.append(2);
    log.append(1, { terminal: true });
    const subscribe = log.subscribe.bind(log);
    // A bus whose server never answers the unsubscribe (the handler is off at the call, as the contract says).
    log.subscribe = async (runId, handler) => {
      const unsubscribe = await subscribe(runId, handler);
      return () => {
        void unsubscribe();
        return new Promise<void>(() => {});
      };
    };
    const got = recorder();
    await followerOf(log, got, true).run();
    expect(got.seqs).toEqual([1, 2, 3]);
    expect(log.handlers.size).toBe(0);
  });

  it('paused on its unconfirmed first read and resumed, still reads again after the confirmation', async () => {
    const log = new MemoryLog();
    log.append(10);
    const confirm = awaitConfirmation(log);
    let accepting = false;
    const got = recorder(() => accepting);
    const follower = followerOf(log, got);
    const running = follower.run();
    await tick();
    expect(got.seqs).toHaveLength(10);
    log.append(2);
    accepting = true;
    // Resumed before the confirmation: what it reads now may still miss events, so it reads once more after.
    follower.resume();
    await tick();
    expect(got.seqs).toHaveLength(12);
    log.append(1, { terminal: true });
    confirm();
    await running;
    expect(got.seqs).toEqual(Array.from({ length: 13 }, (_, index) => index + 1));
  });

  it('subscribes and reads before `ready`, delivers nothing until it resolves, and nothing at all if closed first', async () => {
    const log = new MemoryLog();
    log.append(5);
    /** A follower whose deliveries wait for `release()`. */
    const gated = (isFinished: boolean) => {
      let release!: () => void;
      const got = recorder();
      const follower = new RunFollower(
        {
          log: log.asEventLog(),
          runId: 'r',
          isFinished: async () => isFinished,
          ready: new Promise<void>((resolve) => (release = resolve)),
        },
        got.sink,
      );
      return { follower, got, release, running: follower.run() };
    };

    const allowed = gated(false);
    await tick();
    // Subscribed and read already; events published meanwhile wait with the read.
    expect(log.handlers.size).toBe(1);
    expect(log.reads).toHaveLength(1);
    log.append(2);
    await tick();
    expect(allowed.got.seqs).toEqual([]);
    allowed.release();
    await tick();
    expect(allowed.got.seqs).toEqual([1, 2, 3, 4, 5, 6, 7]);
    log.append(1, { terminal: true });
    await allowed.running;

    // Refused: closed while waiting, then released; nothing reaches the sink and the subscription ends.
    const refused = gated(true);
    await tick();
    refused.follower.close();
    refused.release();
    await refused.running;
    expect(refused.got.seqs).toEqual([]);
    expect(log.handlers.size).toBe(0);
  });

  it('fresh: reads nothing, takes every event live after `subscribed`, holds them until `ready`, and reads a gap', async () => {
    const log = new MemoryLog();
    let release!: () => void;
    const got = recorder();
    const follower = new RunFollower(
      {
        log: log.asEventLog(),
        runId: 'r',
        fresh: true,
        isFinished: async () => false,
        ready: new Promise<void>((resolve) => (release = resolve)),
      },
      got.sink,
    );
    const running = follower.run();
    await follower.subscribed;
    expect(log.handlers.size).toBe(1);
    // The run begins after the subscription: its first events arrive live and wait for `ready`.
    log.append(2);
    await tick();
    expect(got.seqs).toEqual([]);
    release();
    await tick();
    expect(got.seqs).toEqual([1, 2]);
    expect(log.reads).toEqual([]);
    log.append(1);
    // A lost bus message: the next live event shows the gap, and only then is the log read.
    log.append(1, { publish: false });
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual([1, 2, 3, 4, 5]);
    expect(log.reads).toEqual([{ after: 3, limit: 100 }]);
    expect(log.handlers.size).toBe(0);
  });

  it('rejects `subscribed` and `run()` when subscribing fails', async () => {
    const log = new MemoryLog();
    const failure = new Error('bus down');
    log.subscribe = async () => {
      throw failure;
    };
    const follower = new RunFollower(
      { log: log.asEventLog(), runId: 'r', fresh: true, isFinished: async () => false },
      recorder().sink,
    );
    const running = follower.run();
    await expect(follower.subscribed).rejects.toBe(failure);
    await expect(running).rejects.toBe(failure);
  });

  it('reads a first page of 100 events, then pages of 1,000', async () => {
    const log = new MemoryLog();
    log.append(2500, { publish: false });
    log.append(1, { terminal: true, publish: false });
    const got = recorder();
    await followerOf(log, got, true).run();
    expect(log.reads).toEqual([
      { after: 0, limit: 100 },
      { after: 100, limit: 1000 },
      { after: 1100, limit: 1000 },
      { after: 2100, limit: 1000 },
    ]);
    expect(got.seqs).toHaveLength(2501);
  });

  it('makes its first read with readFirst, the later ones on the log, and ends with readFirst’s failure', async () => {
    const log = new MemoryLog();
    log.append(150, { publish: false });
    log.append(1, { terminal: true, publish: false });
    const firstReads: { after: number; limit: number }[] = [];
    const readFirst = async (page: { after: number; limit: number }) => {
      firstReads.push({ after: page.after, limit: page.limit });
      return log.events.filter((event) => event.seq > page.after).slice(0, page.limit);
    };
    const got = recorder();
    await new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 20, isFinished: async () => true, readFirst },
      got.sink,
    ).run();
    expect(firstReads).toEqual([{ after: 20, limit: 100 }]);
    expect(log.reads).toEqual([{ after: 120, limit: 1000 }]);
    expect(got.seqs).toEqual(log.events.slice(20).map((event) => event.seq));

    // A first read that refuses (the reader may not see the run): nothing delivered, the follow fails with it.
    const refused = recorder();
    const denied = new Error('not yours');
    const follower = new RunFollower(
      {
        log: log.asEventLog(),
        runId: 'r',
        isFinished: async () => true,
        readFirst: () => Promise.reject(denied),
      },
      refused.sink,
    );
    await expect(follower.run()).rejects.toBe(denied);
    expect(refused.seqs).toEqual([]);
  });

  it('lets the macrotasks a delivery scheduled run before it reads the next page', async () => {
    const log = new MemoryLog();
    log.append(300, { publish: false });
    log.append(1, { terminal: true, publish: false });
    const order: string[] = [];
    const read = log.read.bind(log);
    log.read = async (options) => {
      order.push('read');
      return read(options);
    };
    await new RunFollower(
      { log: log.asEventLog(), runId: 'r', isFinished: async () => true },
      {
        events() {
          order.push('events');
          // Where Node sends a response's buffered writes.
          setImmediate(() => order.push('flushed'));
          return true;
        },
        ping: () => true,
      },
    ).run();
    expect(order.slice(0, 5)).toEqual(['read', 'events', 'flushed', 'read', 'events']);
  });

  it('re-reads the log when a live batch skips a sequence number', async () => {
    const log = new MemoryLog();
    const got = recorder();
    const running = followerOf(log, got).run();
    await tick();
    log.append(2);
    // Events 3 and 4 become durable, but their bus message is lost.
    log.append(2, { publish: false });
    log.append(1);
    await tick();
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('pauses while the sink is full, buffers live events, and goes on without loss or duplicate on resume', async () => {
    const log = new MemoryLog();
    let full = false;
    const got = recorder(() => !full);
    const follower = followerOf(log, got);
    const running = follower.run();
    await tick();
    full = true;
    log.append(1);
    expect(got.seqs).toEqual([1]);
    log.append(2);
    log.append(2);
    expect(got.seqs).toEqual([1]);
    full = false;
    follower.resume();
    await tick();
    expect(got.seqs).toEqual([1, 2, 3, 4, 5]);
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('drops its buffer past maxBuffered and reads the missed events from the log', async () => {
    const log = new MemoryLog();
    let full = false;
    const got = recorder(() => !full);
    const follower = new RunFollower(
      { log: log.asEventLog(), runId: 'r', isFinished: async () => false, maxBuffered: 3 },
      got.sink,
    );
    const running = follower.run();
    await tick();
    full = true;
    log.append(1);
    for (let index = 0; index < 5; index++) log.append(1);
    full = false;
    const readsBefore = log.reads.length;
    follower.resume();
    await tick();
    expect(log.reads.length).toBeGreaterThan(readsBefore);
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('sends a keep-alive with the last sequence number after a quiet interval, then re-reads the log', async () => {
    const log = new MemoryLog();
    log.append(3);
    const got = recorder();
    const follower = new RunFollower(
      { log: log.asEventLog(), runId: 'r', isFinished: async () => false, keepAliveMs: 40 },
      got.sink,
    );
    const running = follower.run();
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(got.pings.length).toBeGreaterThanOrEqual(1);
    expect(got.pings.every((seq) => seq === 3)).toBe(true);
    // Settled elsewhere, its bus message lost: the re-read after the next keep-alive finds the end.
    log.append(1, { terminal: true, publish: false });
    await running;
    expect(got.seqs).toEqual([1, 2, 3, 4]);
  });

  it('ends with nothing when the run ends at or behind a cursor that was ahead of its log', async () => {
    // Caught up and live when the run's last events go by, all at or before the cursor.
    const log = new MemoryLog();
    log.append(3);
    const got = recorder();
    const live = new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 50, isFinished: async () => false },
      got.sink,
    ).run();
    await tick();
    log.append(2);
    log.append(1, { terminal: true });
    await live;
    expect(got.seqs).toEqual([]);
    expect(log.handlers.size).toBe(0);

    // Still reading when they go by: buffered, then drained.
    const reading = new MemoryLog();
    reading.append(3);
    reading.beforeRead = () => reading.append(1, { terminal: true });
    const buffered = recorder();
    await new RunFollower(
      { log: reading.asEventLog(), runId: 'r', after: 50, isFinished: async () => false },
      buffered.sink,
    ).run();
    expect(buffered.seqs).toEqual([]);

    // A cursor exactly at the terminal event.
    const exact = new MemoryLog();
    exact.append(3);
    const atEnd = recorder();
    const running = new RunFollower(
      { log: exact.asEventLog(), runId: 'r', after: 4, isFinished: async () => false },
      atEnd.sink,
    ).run();
    await tick();
    exact.append(1, { terminal: true });
    await running;
    expect(atEnd.seqs).toEqual([]);
  });

  it("names the log's last sequence number in the keep-alive of a reader ahead of it, and never one past it", async () => {
    const log = new MemoryLog();
    log.append(3);
    const got = recorder();
    const follower = new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 1000, isFinished: async () => false, keepAliveMs: 40 },
      got.sink,
    );
    const running = follower.run();
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(got.pings.length).toBeGreaterThanOrEqual(1);
    expect(got.pings.every((seq) => seq === 3)).toBe(true);
    log.append(2);
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(got.pings.at(-1)).toBe(5);
    log.append(1, { terminal: true });
    await running;
    expect(got.seqs).toEqual([]);

    // A cursor at the log's end is durable: named as it is, looked up once.
    const atEnd = new MemoryLog();
    atEnd.append(3);
    const resumed = recorder();
    const atEndFollower = new RunFollower(
      { log: atEnd.asEventLog(), runId: 'r', after: 3, isFinished: async () => false, keepAliveMs: 40 },
      resumed.sink,
    );
    const following = atEndFollower.run();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(resumed.pings.length).toBeGreaterThanOrEqual(2);
    expect(resumed.pings.every((seq) => seq === 3)).toBe(true);
    expect(atEnd.lastSeqCalls).toBe(1);
    atEnd.append(1, { terminal: true });
    await following;
    expect(resumed.seqs).toEqual([4]);
  });

  it('ends with nothing past the end of a finished run, and stops on close', async () => {
    const log = new MemoryLog();
    log.append(2);
    log.append(1, { terminal: true });
    const got = recorder();
    await new RunFollower(
      { log: log.asEventLog(), runId: 'r', after: 3, isFinished: async () => true },
      got.sink,
    ).run();
    expect(got.seqs).toEqual([]);

    const open = new MemoryLog();
    const follower = new RunFollower(
      { log: open.asEventLog(), runId: 'r', isFinished: async () => false },
      recorder().sink,
    );
    const running = follower.run();
    await tick();
    follower.close();
    await running;
    expect(open.handlers.size).toBe(0);
  });
});

describe('followRun', () => {
  it('yields the same sequence as an async generator, one batch at a time', async () => {
    const log = new MemoryLog();
    log.append(4);
    const seen: number[] = [];
    const follow = (async () => {
      for await (const item of followRun({
        log: log.asEventLog(),
        runId: 'r',
        isFinished: async () => false,
      })) {
        if (item.kind === 'events') seen.push(...item.events.map((event) => event.seq));
      }
    })();
    await tick();
    log.append(2);
    log.append(1, { terminal: true });
    await follow;
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });
});
