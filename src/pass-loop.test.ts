import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { delayAfterPass, PassLoop } from './pass-loop.ts';

describe('PassLoop', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  /** A loop whose passes sleep `delayMs` after each, and finish only when `finish()` is called. */
  function loop(delayMs: number) {
    const started: number[] = [];
    let finish = () => {};
    const passes = new PassLoop(
      () =>
        new Promise<number>((resolve) => {
          started.push(Date.now());
          finish = () => resolve(delayMs);
        }),
    );
    return { passes, started, finish: () => finish() };
  }

  it('runs a pass at once, then the next after the delay the last one returned', async () => {
    const { passes, started, finish } = loop(1_000);
    passes.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(started).toHaveLength(1);
    finish();
    await vi.advanceTimersByTimeAsync(999);
    expect(started).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(started).toHaveLength(2);
    passes.stop();
  });

  it('runs a nudged pass at once, or right after the pass in flight', async () => {
    const { passes, started, finish } = loop(60_000);
    passes.start();
    await vi.advanceTimersByTimeAsync(0);
    finish();
    await vi.advanceTimersByTimeAsync(10);
    passes.nudge(); // idle, sleeping a minute: a pass now
    await vi.advanceTimersByTimeAsync(0);
    expect(started).toHaveLength(2);
    passes.nudge(); // in flight: one more as soon as it ends, not a minute later
    passes.nudge();
    await vi.advanceTimersByTimeAsync(100);
    expect(started).toHaveLength(2);
    finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(started).toHaveLength(3);
    finish();
    await vi.advanceTimersByTimeAsync(59_999);
    expect(started).toHaveLength(3);
    passes.stop();
  });

  it('starts no pass once stopped, and lets the one in flight finish', async () => {
    const { passes, started, finish } = loop(10);
    passes.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(passes.running).toBe(true);
    passes.stop();
    // A pass that loops over batches reads this to stop early.
    expect(passes.running).toBe(false);
    passes.nudge();
    expect(passes.inFlight).not.toBeNull();
    finish();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(started).toHaveLength(1);
    expect(passes.inFlight).toBeNull();
  });
});

describe('delayAfterPass', () => {
  const passBegan = new Date('2026-01-01T00:00:00.000Z');
  const now = new Date(passBegan.getTime() + 50);
  const at = (ms: number) => new Date(passBegan.getTime() + ms);

  it('sleeps until the next due time, at most the interval, the interval when nothing is due', () => {
    expect(delayAfterPass({ next: at(1_050), passBegan, now, maxMs: 10_000 })).toBe(1_000);
    expect(delayAfterPass({ next: at(60_000), passBegan, now, maxMs: 10_000 })).toBe(10_000);
    expect(delayAfterPass({ next: null, passBegan, now, maxMs: 10_000 })).toBe(10_000);
    expect(delayAfterPass({ next: at(20), passBegan, now, maxMs: 10_000 })).toBe(0); // came due during the pass
  });

  it('waits a second, not zero, for what was due already when the pass began', () => {
    expect(delayAfterPass({ next: at(0), passBegan, now, maxMs: 10_000 })).toBe(1_000);
    expect(delayAfterPass({ next: at(-5_000), passBegan, now, maxMs: 200 })).toBe(200);
  });
});
