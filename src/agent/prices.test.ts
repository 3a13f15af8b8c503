import { describe, expect, it } from 'vitest';
import { costOf, roundUsd } from './prices.ts';

describe('roundUsd', () => {
  it('drops the binary float tail of a sum of costs, to the picodollar', () => {
    expect(0.1 + 0.2).not.toBe(0.3);
    expect(roundUsd(0.1 + 0.2)).toBe(0.3);
    expect(roundUsd(0.00015000000000000001)).toBe(0.00015);
    const steps = [costOf({ inputTokens: 25, outputTokens: 5 }, { inputPerMillion: 1, outputPerMillion: 2 })];
    steps.push(steps[0]!, steps[0]!);
    expect(roundUsd(steps.reduce((sum, cost) => sum + cost, 0))).toBe(0.000105);
    expect(roundUsd(1e-13)).toBe(0);
  });
});
