import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LoadLimit, nextLimit } from './load-limit.ts';
import { WorkerSlots } from './worker-slots.ts';

const bounds = { base: 100, max: 1000, maxLoopDelayMs: 50 };

describe('nextLimit', () => {
  it('grows a step while every slot is taken and the loop keeps up, the larger the further under the bound', () => {
    expect(nextLimit({ ...bounds, limit: 100, taken: 100, delayMs: 0 })).toBe(200);
    expect(nextLimit({ ...bounds, limit: 100, taken: 100, delayMs: 10 })).toBe(180);
    expect(nextLimit({ ...bounds, limit: 300, taken: 300, delayMs: 40 })).toBe(360);
    expect(nextLimit({ ...bounds, limit: 300, taken: 300, delayMs: 49.9 })).toBe(305);
    expect(nextLimit({ ...bounds, limit: 300, taken: 300, delayMs: 50 })).toBe(305);
  });

  it('stops at the maximum', () => {
    expect(nextLimit({ ...bounds, limit: 950, taken: 950, delayMs: 0 })).toBe(1000);
    expect(nextLimit({ ...bounds, limit: 1000, taken: 1000, delayMs: 0 })).toBe(1000);
  });

  it('falls under what executes when the loop is late, so nothing more is admitted', () => {
    expect(nextLimit({ ...bounds, limit: 400, taken: 400, delayMs: 51 })).toBe(360);
    expect(nextLimit({ ...bounds, limit: 400, taken: 300, delayMs: 80 })).toBe(270);
  });

  it('never falls under the base', () => {
    expect(nextLimit({ ...bounds, limit: 105, taken: 105, delayMs: 500 })).toBe(100);
    expect(nextLimit({ ...bounds, limit: 100, taken: 40, delayMs: 500 })).toBe(100);
  });

  it('sits one step above what executes while slots are spare, so a sudden wave is admitted in steps', () => {
    expect(nextLimit({ ...bounds, limit: 600, taken: 200, delayMs: 25 })).toBe(300);
    expect(nextLimit({ ...bounds, limit: 600, taken: 10, delayMs: 5 })).toBe(100);
    expect(nextLimit({ ...bounds, limit: 220, taken: 200, delayMs: 25 })).toBe(220);
  });

  it('moves by at least a few runs from a small limit', () => {
    expect(nextLimit({ base: 2, max: 10, maxLoopDelayMs: 20, limit: 2, taken: 2, delayMs: 0 })).toBe(7);
  });
});

describe('LoadLimit', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  function loadLimit(delays: number[]) {
    const reads: number[] = [];
    const raises: number[] = [];
    const limit: LoadLimit = new LoadLimit({
      base: 2,
      max: 20,
      maxLoopDelayMs: 20,
      intervalMs: 100,
      taken: () => limit.limit, // every slot taken
      readDelayMs: () => {
        const delay = delays.shift() ?? 0;
        reads.push(delay);
        return delay;
      },
      onRaise: () => raises.push(limit.limit),
    });
    return { limit, reads, raises };
  }

  it('reads the loop only once started, and no more once closed', () => {
    const { limit, reads } = loadLimit([]);
    vi.advanceTimersByTime(1_000);
    expect(reads).toEqual([]);
    limit.start();
    limit.start(); // once
    vi.advanceTimersByTime(300);
    expect(reads).toHaveLength(3);
    limit.close();
    vi.advanceTimersByTime(1_000);
    expect(reads).toHaveLength(3);
    limit.start(); // harmless once closed
    vi.advanceTimersByTime(1_000);
    expect(reads).toHaveLength(3);
  });

  it('reads the loop only while at least half the base runs execute, and is the base below that', () => {
    let taken = 8;
    const reads: number[] = [];
    const limit = new LoadLimit({
      base: 8,
      max: 100,
      maxLoopDelayMs: 20,
      intervalMs: 100,
      taken: () => taken,
      readDelayMs: () => {
        reads.push(0);
        return 0;
      },
      onRaise: () => {},
    });
    limit.start();
    vi.advanceTimersByTime(200);
    expect(reads).toHaveLength(2);
    expect(limit.limit).toBeGreaterThan(8);
    taken = 3; // under half the base: no reading, and the limit falls back to the base
    vi.advanceTimersByTime(500);
    expect(reads).toHaveLength(2);
    expect(limit.limit).toBe(8);
    taken = 4; // half the base again: the first reading only resumes sampling, the next one reads it
    vi.advanceTimersByTime(100);
    expect(reads).toHaveLength(2);
    vi.advanceTimersByTime(100);
    expect(reads).toHaveLength(3);
    limit.close();
  });

  it('tells the queue each time the limit rises, and only then', () => {
    const { limit, raises } = loadLimit([0, 0, 50, 50, 0]);
    limit.start();
    vi.advanceTimersByTime(500);
    // 2 → 7 → 14 (doubling at no delay), held at 14 then lowered to 12 and 10 (late loop), then 20 (the max).
    expect(raises).toEqual([7, 14, 20]);
    expect(limit.limit).toBe(20);
    limit.close();
  });
});

describe('WorkerSlots with a load limit', () => {
  it('is a fixed count when the base is at or over the maximum', () => {
    const slots = new WorkerSlots({
      concurrency: 2,
      load: { base: 100, maxLoopDelayMs: 30 },
      onFree: () => {},
    });
    expect(slots.limit).toBe(2);
    expect([slots.take(), slots.take(), slots.take()]).toEqual([true, true, false]);
  });

  it('admits the base at once when the maximum is above it', () => {
    const slots = new WorkerSlots({
      concurrency: 10,
      load: { base: 3, maxLoopDelayMs: 30, readDelayMs: () => 100 },
      onFree: () => {},
    });
    expect(slots.limit).toBe(3);
    expect([slots.take(), slots.take(), slots.take(), slots.take()]).toEqual([true, true, true, false]);
    void slots.close();
  });
});
