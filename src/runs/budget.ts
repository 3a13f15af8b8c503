import { costOf, type ModelPrice } from '../agent/prices.ts';
import type { Budget } from '../protocol/agent.ts';
import type { RunUsage } from '../protocol/run.ts';
import type { DailyAllowance } from '../quotas/quota-service.ts';

/** Which limit of a budget ran out. */
export type BudgetExceeded = 'steps' | 'tokens' | 'cost' | 'duration';

/** What a run has spent so far, across every execution. */
export interface Spend {
  steps: number;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  /** Time spent running (not waiting), in milliseconds. */
  runningMs: number;
}

/** Tokens in a text, estimated the way the scripted model counts them (DESIGN §6): characters / 4. */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/**
 * Holds a run to its budget (invariant 11). Before each model call it refuses a call the rest of the budget
 * cannot afford (the prompt's estimated tokens); during a step it counts each output chunk as a token, so a
 * step that crosses the budget is cut at the chunk that crossed it; after each step it adds the tokens the
 * provider reported. Spend carried over from earlier executions is never given back.
 */
export class BudgetMeter {
  readonly #budget: Budget;
  readonly #price: ModelPrice | null;
  readonly #spent: Spend;
  readonly #startedAt: number;
  readonly #now: () => number;
  /** What the workspace's daily quota leaves, shared with its other executions in this process. */
  readonly #quota: DailyAllowance | null;
  readonly #spentAtStart: Spend;
  /** What this execution has added to the allowance's count so far. */
  readonly #shared = { tokens: 0, costUsd: 0 };
  /** What this execution spent outside finished steps: cut steps (as estimated then) and context summaries. */
  readonly #outside = { tokens: 0, costUsd: 0 };
  /** Whether the workspace has a daily quota for this execution to count against. */
  readonly #limitsQuota: boolean;
  /** Whether any limit depends on output while a step streams (else `onOutput` has nothing to check). */
  readonly #limitsOutput: boolean;
  /** Whether the limit that ran out was the workspace's quota rather than the run's budget. */
  quotaExceeded = false;
  #stepPrompt = 0;
  #stepOutput = 0;
  #stepStartedAt = 0;

  constructor(options: {
    budget: Budget;
    price: ModelPrice | null;
    spent: Spend;
    quota?: DailyAllowance;
    now?: () => number;
  }) {
    this.#budget = options.budget;
    this.#price = options.price;
    this.#spent = { ...options.spent };
    this.#spentAtStart = { ...options.spent };
    this.#quota = options.quota ?? null;
    const { maxTokens, maxCostUsd, maxDurationMs } = options.budget;
    this.#limitsQuota = this.#quota !== null && (this.#quota.tokens !== null || this.#quota.costUsd !== null);
    this.#limitsOutput =
      maxTokens !== undefined || maxCostUsd !== undefined || maxDurationMs !== undefined || this.#limitsQuota;
    this.#now = options.now ?? Date.now;
    this.#startedAt = this.#now();
  }

  get budget(): Budget {
    return this.#budget;
  }

  /** Everything spent, including the step under way (estimated until the provider reports). */
  spent(): Spend {
    const inStep = this.#stepStartedAt > 0;
    return {
      steps: this.#spent.steps,
      inputTokens: this.#spent.inputTokens + (inStep ? this.#stepPrompt : 0),
      outputTokens: this.#spent.outputTokens + (inStep ? this.#stepOutput : 0),
      costUsd: this.#spent.costUsd + (inStep ? this.#stepEstimate().costUsd : 0),
      runningMs: this.#spent.runningMs + (this.#now() - this.#startedAt),
    };
  }

  /** Milliseconds of running time the duration budget has left (0 when spent); `null` without one. */
  durationLeftMs(): number | null {
    const { maxDurationMs } = this.#budget;
    if (maxDurationMs === undefined) return null;
    return Math.max(0, maxDurationMs - this.spent().runningMs);
  }

  /** Before a model call with a prompt of about `promptTokens`: which limit it would break, if any. */
  beforeCall(promptTokens: number): BudgetExceeded | null {
    // Says which limit refused this call: a summary refused before it does not decide how the run ends.
    this.quotaExceeded = false;
    const exceeded = this.#wouldBreak({ inputTokens: promptTokens });
    if (exceeded) return exceeded;
    this.#stepPrompt = promptTokens;
    this.#stepOutput = 0;
    this.#stepStartedAt = this.#now();
    // The call is made: its prompt counts against the quota for the workspace's other executions at once.
    this.#share(this.spent());
    return null;
  }

  /**
   * Before a model call outside the steps (a context summary) with a prompt of about `inputTokens` and an
   * answer of at most `outputTokens`: which limit it would break, if any. Such a call is not streamed, so it
   * cannot be cut mid-way: all of it must fit. It is refused too when the run could not make another step.
   */
  beforeOutsideCall(usage: { inputTokens: number; outputTokens: number }): BudgetExceeded | null {
    return this.#wouldBreak(usage);
  }

  /** Which limit a model call that may use `usage` would break, before it is made. */
  #wouldBreak(usage: { inputTokens: number; outputTokens?: number }): BudgetExceeded | null {
    const { maxSteps, maxTokens, maxCostUsd, maxDurationMs } = this.#budget;
    const spent = this.spent();
    if (maxSteps !== undefined && spent.steps >= maxSteps) return 'steps';
    if (maxDurationMs !== undefined && spent.runningMs >= maxDurationMs) return 'duration';
    const tokens = usage.inputTokens + (usage.outputTokens ?? 0);
    if (maxTokens !== undefined && spent.inputTokens + spent.outputTokens + tokens > maxTokens)
      return 'tokens';
    const costUsd = costOf(usage, this.#price);
    if (maxCostUsd !== undefined && spent.costUsd + costUsd > maxCostUsd) return 'cost';
    return this.#overQuota(spent, { tokens, costUsd });
  }

  /** One output chunk of the step under way: which limit it crossed, if any. */
  onOutput(tokens = 1): BudgetExceeded | null {
    this.#stepOutput += tokens;
    // The common case, once per streamed chunk: nothing to hold the step to.
    if (!this.#limitsOutput) return null;
    const { maxTokens, maxCostUsd, maxDurationMs } = this.#budget;
    const spent = this.spent();
    if (maxTokens !== undefined && spent.inputTokens + spent.outputTokens > maxTokens) return 'tokens';
    if (maxCostUsd !== undefined && spent.costUsd > maxCostUsd) return 'cost';
    if (maxDurationMs !== undefined && spent.runningMs > maxDurationMs) return 'duration';
    return this.#overQuota(spent);
  }

  /**
   * Whether the workspace's spend since this execution began (its own and that of the workspace's other
   * executions in this process), plus a call's `extra`, is past what the daily quota left.
   */
  #overQuota(spent: Spend, extra = { tokens: 0, costUsd: 0 }): BudgetExceeded | null {
    const quota = this.#quota;
    if (!quota) return null;
    this.#share(spent);
    const since = quota.spentSince();
    const exceeded =
      quota.tokens !== null && since.tokens + extra.tokens > quota.tokens
        ? 'tokens'
        : quota.costUsd !== null && since.costUsd + extra.costUsd > quota.costUsd
          ? 'cost'
          : null;
    if (exceeded) this.quotaExceeded = true;
    return exceeded;
  }

  /**
   * Reads the workspace's daily usage again, so that steps other processes recorded since count; before a
   * model call after the first. A failed read keeps what was read before.
   */
  async refreshQuota(): Promise<void> {
    if (this.#limitsQuota) await this.#quota?.refresh().catch(() => {});
  }

  /**
   * What this execution spent outside the steps it finished: the steps it cut, the one under way if any, and
   * its context summaries' model calls. No `run_steps` row holds it.
   */
  outsideSteps(): { tokens: number; costUsd: number } {
    const inStep = this.#stepStartedAt > 0 ? this.#stepEstimate() : { tokens: 0, costUsd: 0 };
    return { tokens: this.#outside.tokens + inStep.tokens, costUsd: this.#outside.costUsd + inStep.costUsd };
  }

  /** What the step under way has spent so far, by its estimate. */
  #stepEstimate(): { tokens: number; costUsd: number } {
    return {
      tokens: this.#stepPrompt + this.#stepOutput,
      costUsd: costOf({ inputTokens: this.#stepPrompt, outputTokens: this.#stepOutput }, this.#price),
    };
  }

  /** A model call outside the steps (a context summary) used `usage`: spent like a step's. */
  addOutsideSteps(usage: RunUsage): void {
    const tokens = (usage.inputTokens ?? 0) + (usage.outputTokens ?? 0);
    const costUsd = costOf(usage, this.#price);
    this.#spent.inputTokens += usage.inputTokens ?? 0;
    this.#spent.outputTokens += usage.outputTokens ?? 0;
    this.#spent.costUsd += costUsd;
    this.#outside.tokens += tokens;
    this.#outside.costUsd += costUsd;
    this.#share(this.spent());
  }

  /** A finished step is in `run_steps` now, with the usage and cost the provider reported for it. */
  recorded(usage: RunUsage | null, costUsd: number | null): void {
    this.#quota?.recorded((usage?.inputTokens ?? 0) + (usage?.outputTokens ?? 0), costUsd ?? 0);
  }

  /** Brings what this execution added to the quota's shared count up to what it has spent. */
  #share(spent: Spend): void {
    if (!this.#quota) return;
    const start = this.#spentAtStart;
    const tokens = spent.inputTokens + spent.outputTokens - start.inputTokens - start.outputTokens;
    const costUsd = spent.costUsd - start.costUsd;
    this.#quota.add(tokens - this.#shared.tokens, costUsd - this.#shared.costUsd);
    this.#shared.tokens = tokens;
    this.#shared.costUsd = costUsd;
  }

  /**
   * A step finished: its reported usage replaces the estimate. Returns what the step counts: the reported usage,
   * with the estimate in place of a count the provider did not report (an OpenAI-compatible server may report
   * none), and its cost. That is what the step records, so its spend stays counted after a resume and in the
   * workspace's daily usage.
   */
  endStep(reported: RunUsage): { usage: RunUsage; costUsd: number } {
    const usage: RunUsage = {
      ...reported,
      inputTokens: reported.inputTokens ?? this.#stepPrompt,
      outputTokens: reported.outputTokens ?? this.#stepOutput,
    };
    const costUsd = costOf(usage, this.#price);
    this.#spent.steps += 1;
    this.#spent.inputTokens += usage.inputTokens!;
    this.#spent.outputTokens += usage.outputTokens!;
    this.#spent.costUsd += costUsd;
    this.#stepStartedAt = 0;
    // The reported usage replaces the step's estimate in the shared count too.
    this.#share(this.spent());
    return { usage, costUsd };
  }

  /** A step was cut short: what it is estimated to have spent stays spent. */
  cutStep(): Spend {
    const spent = this.spent();
    if (this.#stepStartedAt > 0) {
      const estimate = this.#stepEstimate();
      this.#outside.tokens += estimate.tokens;
      this.#outside.costUsd += estimate.costUsd;
    }
    this.#spent.inputTokens = spent.inputTokens;
    this.#spent.outputTokens = spent.outputTokens;
    this.#spent.costUsd = spent.costUsd;
    this.#stepStartedAt = 0;
    this.#share(spent);
    return spent;
  }

  /** After a step: whether the next call is already out of budget for a limit that needs no estimate. */
  exhausted(): BudgetExceeded | null {
    return usedUpLimit(this.#budget, this.spent());
  }
}

/**
 * The limit of `budget` that `spent` has used up, if any: with it, no model call can be made, whatever its
 * prompt (the checks of `BudgetMeter` that need no estimate of the call). Steps come first, then time.
 */
export function usedUpLimit(budget: Budget, spent: Spend): BudgetExceeded | null {
  const { maxSteps, maxTokens, maxCostUsd, maxDurationMs } = budget;
  if (maxSteps !== undefined && spent.steps >= maxSteps) return 'steps';
  if (maxDurationMs !== undefined && spent.runningMs >= maxDurationMs) return 'duration';
  if (maxTokens !== undefined && spent.inputTokens + spent.outputTokens >= maxTokens) return 'tokens';
  if (maxCostUsd !== undefined && spent.costUsd >= maxCostUsd) return 'cost';
  return null;
}
