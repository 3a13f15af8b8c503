import { describe, expect, it } from 'vitest';
import { median, summarize } from '../bench/support/stats.ts';

// The benchmarks' own arithmetic: the scorecard's medians of rounds are read straight off it.
describe('bench statistics', () => {
  it('takes the middle value of an odd count and the mean of the two middle ones of an even count', () => {
    expect(median([1.6, 1.19, 1.22])).toBe(1.22);
    expect(median([2, 1, 4, 3])).toBe(2.5);
    expect(median([5])).toBe(5);
    expect(median([])).toBeNaN();
  });

  it('leaves its input in the order given', () => {
    const values = [3, 1, 2];
    median(values);
    expect(values).toEqual([3, 1, 2]);
  });

  it('summarizes by nearest rank', () => {
    const summary = summarize([10, 20, 30, 40]);
    expect(summary).toMatchObject({ count: 4, mean: 25, p50: 20, max: 40 });
  });
});
