import type { UIMessage } from 'ai';
import type { Logger } from 'pino';
import type { Budget, RunConfig } from '../protocol/agent.ts';
import type { MessageProjector } from '../protocol/message-projector.ts';
import type { PendingApproval, RunWaiting } from '../protocol/run.ts';
import type { Clock } from '../clock.ts';
import { OutrunError } from '../errors.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import type { RunRow } from '../store/schema.ts';
import { LeaseLostError, type RunEventWriter } from '../stream/event-log.ts';
import { PersistenceFailedError, type AgentLoopResult, type FinishedStep } from './agent-loop.ts';
import type { BudgetExceeded, Spend } from './budget.ts';
import { Ending, INTERRUPTED_BY_BUDGET, INTERRUPTED_BY_SHUTDOWN, type Lifecycle } from './lifecycle.ts';
import { isToolPart } from '../protocol/message-projector.ts';
import type { RunUsage } from './run-object.ts';
import { RunErrorCode } from './run-status.ts';

/**
 * Why this instance stops executing a run before its loop ends: a stop (the run ends `aborted`), a shutdown
 * (the run is handed back to `pending` for the next owner), a lost lease (someone else owns it), the budget
 * (`onExceeded` decides), or the model's silence (`OUTRUN_MODEL_IDLE_TIMEOUT_MS`: the run fails as on the
 * model's error, which the loop reports).
 */
export type AbortReason = typeof RunErrorCode.stopped | 'released' | 'lease_lost' | 'budget' | 'model_idle';

/** How long a waiting run waits by default (`OUTRUN_WAIT_TTL_MS`): 7 days. */
const DEFAULT_WAIT_TTL_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * Most events a status change writes for its owner's writer (decision 0015): as rows of `run_events`, one heap
 * tuple and index entry each, where the group commit would write one page; a run's tail is a handful.
 */
const MAX_TAIL_EVENTS = 32;

/** What the owner does with its run once the agent loop returned. */
export type RunOutcome =
  /** Another instance owns the run now: leave it alone. */
  | { type: 'lease-lost' }
  /** This instance shuts down: hand the run back to `pending` for the next owner. */
  | { type: 'release' }
  /** End the run. */
  | { type: 'end'; ending: Ending }
  /** The step budget ran out under `onExceeded: 'continue'`: end the run and start its follow-up. */
  | { type: 'continue' }
  /** Wait for a person to answer the tool calls that need approval. */
  | { type: 'wait-for-approval'; approvals: PendingApproval[] }
  /** The budget ran out under `onExceeded: 'pause'`: wait for `POST /v1/runs/:id/continue`. */
  | { type: 'wait-for-budget'; exceeded: BudgetExceeded; cutStep: boolean };

/** The run's columns that change with its outcome: what it spent and how many steps it finished. */
export interface SpendChanges {
  usage: string;
  cost_usd: number;
  step_count: number;
}

/** What settling a run needs of the executor's collaborators. */
export interface RunOutcomeDeps {
  lifecycle: Lifecycle;
  logger: Logger;
  faults: Faults;
  clock?: Clock;
  /** How long a waiting run waits for an answer. @default 7 days */
  waitTtlMs?: number;
  /** Starts the follow-up of a run whose step budget said `continue` (the engine's). */
  continueRun?: (run: RunRow, config: RunConfig) => Promise<unknown>;
}

/** Whether the last step of a message called a tool (the model meant to go on). */
function lastStepCalledTool(parts: UIMessage['parts']): boolean {
  const lastStart = parts.map((part) => part.type).lastIndexOf('step-start');
  return parts.slice(Math.max(0, lastStart)).some(isToolPart);
}

/**
 * Decides what becomes of a run once its agent loop returned, first match wins: a lost lease or a
 * shutdown leaves the run to its next owner; a stop ends it `aborted`; a model error ends it `failed`; a
 * used-up workspace quota ends it `aborted`/`quota_exceeded`; a used-up budget follows `onExceeded`; tool
 * calls that need approval make it wait; anything else ends it `succeeded`.
 */
export function decideOutcome(options: {
  result: AgentLoopResult;
  /** Why this instance stopped executing the run, if it did. */
  reason: AbortReason | null;
  /** Whether the run's abort signal fired. */
  aborted: boolean;
  budget: Budget;
  /** Whether the limit that ran out was the workspace's daily quota rather than the run's budget. */
  quotaExceeded: boolean;
  /** The run's message parts so far; read only when an explicit step budget ran out. */
  parts: () => UIMessage['parts'];
}): RunOutcome {
  const { result, reason, aborted, budget } = options;
  if (reason === 'lease_lost') return { type: 'lease-lost' };
  if (reason === 'released') return { type: 'release' };
  if (reason === RunErrorCode.stopped || (aborted && reason !== 'budget' && reason !== 'model_idle')) {
    return { type: 'end', ending: Ending.aborted(RunErrorCode.stopped, { sendAbort: !result.sawAbort }) };
  }
  if (result.errorText !== null) {
    // The SDK already streamed the model's `error` chunk (held back only for a context overflow).
    const ending = Ending.failed(RunErrorCode.modelError, {
      message: result.errorText,
      sendError: result.contextOverflow,
    });
    return { type: 'end', ending };
  }
  const exceeded =
    result.budgetExceeded ??
    // An explicit step budget the model wanted to go past (its last step called a tool).
    (budget.maxSteps !== undefined &&
    result.stepsDone >= budget.maxSteps &&
    !aborted &&
    lastStepCalledTool(options.parts())
      ? 'steps'
      : null);
  if (exceeded && options.quotaExceeded) {
    // The workspace's daily quota ran out mid-run: the run ends, keeping what it streamed.
    return { type: 'end', ending: Ending.aborted(RunErrorCode.quotaExceeded) };
  }
  if (exceeded) return budgetOutcome({ budget, exceeded, cutStep: result.budgetCutStep });
  if (result.approvals.length > 0) return { type: 'wait-for-approval', approvals: result.approvals };
  return { type: 'end', ending: Ending.succeeded() };
}

/**
 * The budget ran out. `pause` (the default) makes the run wait for `POST /v1/runs/:id/continue` (a step
 * the budget cut is closed as interrupted, and redone after); `abort` ends it `aborted`/`budget_exceeded`
 * with its partial output; `continue` (step budgets only) ends it and starts a follow-up run.
 */
function budgetOutcome(options: { budget: Budget; exceeded: BudgetExceeded; cutStep: boolean }): RunOutcome {
  const onExceeded = options.budget.onExceeded ?? 'pause';
  if (onExceeded === 'abort') return { type: 'end', ending: Ending.aborted(RunErrorCode.budgetExceeded) };
  if (onExceeded === 'continue' && options.exceeded === 'steps') return { type: 'continue' };
  return { type: 'wait-for-budget', exceeded: options.exceeded, cutStep: options.cutStep };
}

/** The run's columns that record what this execution left it at. */
export function spendChanges(spent: Spend, stepsDone: number): SpendChanges {
  return {
    usage: JSON.stringify({ inputTokens: spent.inputTokens, outputTokens: spent.outputTokens }),
    cost_usd: spent.costUsd,
    step_count: stepsDone,
  };
}

/** Carries out an outcome through the lifecycle. Throws `LeaseLostError` for a lost lease. */
export async function settleRun(options: {
  deps: RunOutcomeDeps;
  row: RunRow;
  epoch: number;
  config: RunConfig;
  outcome: RunOutcome;
  projector: MessageProjector;
  changes: SpendChanges;
  /** The owner's writer, whose last events may not be written yet. */
  writer: RunEventWriter;
  /** The loop's last finished step, not recorded yet: an ending or a wait records it. */
  step?: FinishedStep;
}): Promise<void> {
  const { deps, row, epoch, config, outcome, projector, changes, writer, step } = options;
  const context = { runId: row.id, chatId: row.chat_id, attempt: row.attempt };
  if (outcome.type === 'lease-lost') throw new LeaseLostError(row.id);
  // The events the group commit has not picked up yet go in the status change's own statement, one round trip
  // less per run (decision 0015); not where the change closes an interrupted step (a budget cut mid-step, a
  // hand-back), which it reads from the log: there they are written first.
  const closesStep = outcome.type === 'release' || (outcome.type === 'wait-for-budget' && outcome.cutStep);
  const tail = closesStep ? await writer.flush().then(() => []) : await writer.takeTail(MAX_TAIL_EVENTS);
  const lastSeq = writer.lastSeq;
  switch (outcome.type) {
    case 'release': {
      await deps.faults.hit(FaultPoint.beforeRelease, { runId: row.id });
      // The run's totals include what the cut step spent: the next owner's budget goes on from them.
      const released = await deps.lifecycle.handBack({
        runId: row.id,
        epoch,
        reason: INTERRUPTED_BY_SHUTDOWN,
        changes,
      });
      deps.logger.info({ ...context, released: released !== null }, 'run released on shutdown');
      return;
    }
    case 'end':
      await endRun({ deps, row, epoch, ending: outcome.ending, projector, changes, lastSeq, tail, step });
      return;
    case 'continue': {
      const ended = await endRun({
        deps,
        row,
        epoch,
        ending: Ending.succeeded(),
        projector,
        changes,
        lastSeq,
        tail,
        step,
        continuationOwed: true,
      });
      if (!ended) return;
      // The follow-up is owed on the parent's row now: a process that dies here leaves it to the sweeper.
      await deps.faults.hit(FaultPoint.beforeContinuation, { runId: row.id });
      await deps.continueRun?.(ended, config).catch((error: unknown) => {
        // A refusal (the chat was deleted meanwhile, a quota) is the workspace's state, not a fault.
        if (error instanceof OutrunError) {
          deps.logger.warn({ runId: row.id, code: error.code }, `no continuation: ${error.message}`);
        } else
          deps.logger.error(
            { err: error, runId: row.id },
            'starting the continuation failed; the sweeper retries',
          );
      });
      return;
    }
    case 'wait-for-approval': {
      const waiting: RunWaiting = {
        reason: 'approval',
        approvals: outcome.approvals,
        expiresAt: waitExpiresAt(deps),
      };
      await deps.lifecycle.wait({ runId: row.id, epoch, waiting, changes, lastSeq, tail, step });
      deps.logger.info({ ...context, approvals: outcome.approvals.length }, 'run waits for approval');
      return;
    }
    case 'wait-for-budget': {
      const usage = JSON.parse(changes.usage) as RunUsage;
      const waiting: RunWaiting = {
        reason: 'budget',
        exceeded: outcome.exceeded,
        usage,
        budget: { ...config.budget },
        expiresAt: waitExpiresAt(deps),
      };
      await deps.lifecycle.wait({
        runId: row.id,
        epoch,
        waiting,
        changes,
        closeInterruptedStep: outcome.cutStep ? INTERRUPTED_BY_BUDGET : undefined,
        lastSeq,
        tail,
        step,
      });
      deps.logger.info(
        { runId: row.id, chatId: row.chat_id, exceeded: outcome.exceeded },
        'run paused: budget used up',
      );
      return;
    }
  }
}

/** Ends a run its owner holds, with the parts it streamed, and logs the ending. */
async function endRun(options: {
  deps: RunOutcomeDeps;
  row: RunRow;
  epoch: number;
  ending: Ending;
  projector: MessageProjector;
  changes: SpendChanges;
  lastSeq?: number;
  tail?: readonly string[];
  step?: FinishedStep;
  continuationOwed?: boolean;
}): Promise<RunRow | null> {
  const { deps, row, ending } = options;
  const ended = await deps.lifecycle.end({
    runId: row.id,
    epoch: options.epoch,
    ending,
    parts: options.projector.parts(),
    changes: options.changes,
    lastSeq: options.lastSeq,
    tail: options.tail,
    step: options.step,
    owner: row,
    continuationOwed: options.continuationOwed,
  });
  if (ended) {
    deps.logger.info(
      { runId: row.id, chatId: row.chat_id, status: ending.status, code: ending.error?.code },
      'run ended',
    );
  }
  return ended?.row ?? null;
}

/**
 * The error code of a run that failed by throwing: before the loop owned the run it never started;
 * after, a write the log could not make is a persistence failure, anything else an internal error.
 */
export function failureCode(options: {
  loopOwnsRun: boolean;
  writerFailed: boolean;
  error: unknown;
}): RunErrorCode {
  if (!options.loopOwnsRun) return RunErrorCode.startFailed;
  return options.writerFailed || options.error instanceof PersistenceFailedError
    ? RunErrorCode.persistenceFailed
    : RunErrorCode.internalError;
}

function waitExpiresAt(deps: Pick<RunOutcomeDeps, 'clock' | 'waitTtlMs'>): string {
  return new Date(
    (deps.clock?.now() ?? new Date()).getTime() + (deps.waitTtlMs ?? DEFAULT_WAIT_TTL_MS),
  ).toISOString();
}
