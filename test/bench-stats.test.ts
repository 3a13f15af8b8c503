import { describe, expect, it } from 'vitest';
import { parseHostCpu, stealPercent } from '../bench/support/host-cpu.ts';
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

  it("reads the machine's CPU time and its stolen part from /proc/stat, and the share stolen between readings", () => {
    // user nice system idle iowait irq softirq steal guest guest_nice
    const before = parseHostCpu('cpu  100 0 20 800 10 0 5 65 0 0\ncpu0 50 0 10 400 5 0 2 33 0 0\n');
    expect(before).toEqual({ total: 1000, steal: 65 });
    const after = parseHostCpu('cpu  400 0 80 1000 10 0 5 505 7 0\n');
    expect(after).toEqual({ total: 2000, steal: 505 });
    expect(stealPercent(before, after)).toBeCloseTo(44);
    expect(stealPercent(null, after)).toBeNull();
    expect(stealPercent(after, after)).toBeNull();
    expect(parseHostCpu('intr 1 2 3')).toBeNull();
  });
});
