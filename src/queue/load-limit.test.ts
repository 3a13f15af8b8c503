import { describe, expect, it } from 'vitest';
import { nextLimit } from './load-limit.ts';

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
