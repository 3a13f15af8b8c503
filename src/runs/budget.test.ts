import { describe, expect, it } from 'vitest';
import type { DailyAllowance } from '../quotas/quota-service.ts';
import { BudgetMeter, usedUpLimit } from './budget.ts';

const PRICE = { inputPerMillion: 1, outputPerMillion: 2 };
const NOTHING_SPENT = { steps: 0, inputTokens: 0, outputTokens: 0, costUsd: 0, runningMs: 0 };

/** A daily allowance of `tokens` that nothing else in the workspace spends from. */
function allowance(tokens: number): DailyAllowance {
  let spent = 0;
  return {
    tokens,
    costUsd: null,
    spentSince: () => ({ tokens: spent, costUsd: 0 }),
    add: (added) => (spent += added),
    recorded: () => {},
    close: () => {},
    refresh: async () => {},
  };
}

describe('BudgetMeter', () => {
  it('refuses a call outside the steps unless its prompt and its longest answer both fit, and starts no step', () => {
    const meter = new BudgetMeter({ budget: { maxTokens: 1_000 }, price: PRICE, spent: NOTHING_SPENT });
    expect(meter.beforeOutsideCall({ inputTokens: 100, outputTokens: 901 })).toBe('tokens');
    expect(meter.beforeOutsideCall({ inputTokens: 100, outputTokens: 900 })).toBeNull();
    // Asking spent nothing: the whole budget is still there for a step.
    expect(meter.spent()).toMatchObject({ inputTokens: 0, outputTokens: 0 });
    expect(meter.beforeCall(1_000)).toBeNull();
  });

  it('refuses a call outside the steps when the run could make no further step', () => {
    const meter = new BudgetMeter({
      budget: { maxSteps: 2 },
      price: PRICE,
      spent: { ...NOTHING_SPENT, steps: 2 },
    });
    expect(meter.beforeOutsideCall({ inputTokens: 1, outputTokens: 1 })).toBe('steps');
  });

  it('does not end a run as out of quota because a summary was refused by the quota before a step fitted', () => {
    const meter = new BudgetMeter({
      budget: { maxSteps: 1 },
      price: PRICE,
      spent: NOTHING_SPENT,
      quota: allowance(500),
    });
    expect(meter.beforeOutsideCall({ inputTokens: 200, outputTokens: 1_000 })).toBe('tokens');
    expect(meter.quotaExceeded).toBe(true);
    // The step that follows fits the quota, and it is the budget's step limit that stops the run after it.
    expect(meter.beforeCall(200)).toBeNull();
    expect(meter.quotaExceeded).toBe(false);
    meter.endStep({ inputTokens: 200, outputTokens: 10 });
    expect(meter.beforeCall(10)).toBe('steps');
    expect(meter.quotaExceeded).toBe(false);
  });

  it('counts a finished step the provider reported no usage for by its estimate, and prices it', () => {
    const meter = new BudgetMeter({ budget: {}, price: PRICE, spent: NOTHING_SPENT });
    expect(meter.beforeCall(400)).toBeNull();
    for (let chunk = 0; chunk < 25; chunk++) meter.onOutput(1);
    const step = meter.endStep({});
    expect(step.usage).toEqual({ inputTokens: 400, outputTokens: 25 });
    expect(step.costUsd).toBeCloseTo((400 * 1 + 25 * 2) / 1_000_000, 12);
    expect(meter.spent()).toMatchObject({ steps: 1, inputTokens: 400, outputTokens: 25 });

    // What the provider did report is kept as it is.
    expect(meter.beforeCall(400)).toBeNull();
    meter.onOutput(1);
    expect(meter.endStep({ inputTokens: 380, outputTokens: 30 }).usage).toEqual({
      inputTokens: 380,
      outputTokens: 30,
    });
  });
});

describe('usedUpLimit', () => {
  it('names the limit spend has reached, and none while every limit has room left', () => {
    const spent = { steps: 2, inputTokens: 30, outputTokens: 10, costUsd: 0.5, runningMs: 1_000 };
    expect(usedUpLimit({ maxSteps: 2 }, spent)).toBe('steps');
    expect(usedUpLimit({ maxSteps: 3, maxTokens: 40 }, spent)).toBe('tokens');
    expect(usedUpLimit({ maxCostUsd: 0.5 }, spent)).toBe('cost');
    expect(usedUpLimit({ maxDurationMs: 1_000 }, spent)).toBe('duration');
    expect(
      usedUpLimit({ maxSteps: 3, maxTokens: 41, maxCostUsd: 0.6, maxDurationMs: 1_001 }, spent),
    ).toBeNull();
    expect(usedUpLimit({}, spent)).toBeNull();
  });
});
