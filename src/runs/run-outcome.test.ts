import type { UIMessage } from 'ai';
import { describe, expect, it } from 'vitest';
import type { Budget } from '../protocol/agent.ts';
import type { AgentLoopResult } from './agent-loop.ts';
import { Ending } from './lifecycle.ts';
import { decideOutcome, type AbortReason } from './run-outcome.ts';
import { RunErrorCode } from './run-status.ts';

const LOOP_ENDED: AgentLoopResult = {
  errorText: null,
  sawAbort: false,
  stepsDone: 2,
  budgetExceeded: null,
  budgetCutStep: false,
  approvals: [],
  contextOverflow: false,
  overflowedPrompt: null,
  unrecordedStep: null,
};

const APPROVAL = { approvalId: 'approval_1', toolCallId: 'call_1', toolName: 'weather', input: {} };

const TOOL_STEP: UIMessage['parts'] = [
  { type: 'step-start' },
  { type: 'dynamic-tool', toolName: 'weather', toolCallId: 'call_1', state: 'input-available', input: {} },
];
const TEXT_STEP: UIMessage['parts'] = [{ type: 'step-start' }, { type: 'text', text: 'Done.' }];

function decide(
  options: {
    result?: Partial<AgentLoopResult>;
    reason?: AbortReason | null;
    aborted?: boolean;
    budget?: Budget;
    quotaExceeded?: boolean;
    parts?: UIMessage['parts'];
  } = {},
) {
  return decideOutcome({
    result: { ...LOOP_ENDED, ...options.result },
    reason: options.reason ?? null,
    aborted: options.aborted ?? false,
    budget: options.budget ?? {},
    quotaExceeded: options.quotaExceeded ?? false,
    parts: () => options.parts ?? TEXT_STEP,
  });
}

describe('decideOutcome', () => {
  it('ends a loop that finished without trouble succeeded', () => {
    expect(decide()).toEqual({ type: 'end', ending: Ending.succeeded() });
  });

  it('leaves a run whose lease was lost, or that this instance released, to its next owner', () => {
    expect(decide({ reason: 'lease_lost', aborted: true, result: { errorText: 'boom' } })).toEqual({
      type: 'lease-lost',
    });
    expect(decide({ reason: 'released', aborted: true, result: { approvals: [APPROVAL] } })).toEqual({
      type: 'release',
    });
  });

  it('ends a stopped run aborted, sending the abort chunk only when the loop did not', () => {
    expect(decide({ reason: RunErrorCode.stopped, aborted: true })).toEqual({
      type: 'end',
      ending: Ending.aborted(RunErrorCode.stopped, { sendAbort: true }),
    });
    expect(decide({ aborted: true, result: { sawAbort: true } })).toEqual({
      type: 'end',
      ending: Ending.aborted(RunErrorCode.stopped, { sendAbort: false }),
    });
  });

  it('ends a run whose model failed as failed/model_error with the model’s own message', () => {
    expect(decide({ result: { errorText: 'overloaded', budgetExceeded: 'tokens' } })).toEqual({
      type: 'end',
      ending: Ending.failed(RunErrorCode.modelError, { message: 'overloaded', sendError: false }),
    });
  });

  it('ends a run aborted/quota_exceeded when the workspace quota ran out, whatever the budget says', () => {
    expect(
      decide({
        reason: 'budget',
        aborted: true,
        quotaExceeded: true,
        budget: { onExceeded: 'pause' },
        result: { budgetExceeded: 'tokens' },
      }),
    ).toEqual({ type: 'end', ending: Ending.aborted(RunErrorCode.quotaExceeded) });
  });

  it('follows onExceeded when the budget ran out: pause by default, abort, or continue for steps', () => {
    expect(decide({ result: { budgetExceeded: 'tokens', budgetCutStep: true } })).toEqual({
      type: 'wait-for-budget',
      exceeded: 'tokens',
      cutStep: true,
    });
    expect(decide({ budget: { onExceeded: 'abort' }, result: { budgetExceeded: 'cost' } })).toEqual({
      type: 'end',
      ending: Ending.aborted(RunErrorCode.budgetExceeded),
    });
    expect(decide({ budget: { onExceeded: 'continue' }, result: { budgetExceeded: 'steps' } })).toEqual({
      type: 'continue',
    });
    expect(decide({ budget: { onExceeded: 'continue' }, result: { budgetExceeded: 'tokens' } })).toEqual({
      type: 'wait-for-budget',
      exceeded: 'tokens',
      cutStep: false,
    });
  });

  it('counts an explicit step budget as exceeded only when the last step called a tool', () => {
    const budget = { maxSteps: 2 };
    expect(decide({ budget, parts: [...TEXT_STEP, ...TOOL_STEP] })).toEqual({
      type: 'wait-for-budget',
      exceeded: 'steps',
      cutStep: false,
    });
    expect(decide({ budget, parts: [...TOOL_STEP, ...TEXT_STEP] })).toEqual({
      type: 'end',
      ending: Ending.succeeded(),
    });
  });

  it('makes a run wait for approval when tool calls need a person and no limit ran out', () => {
    expect(decide({ result: { approvals: [APPROVAL] } })).toEqual({
      type: 'wait-for-approval',
      approvals: [APPROVAL],
    });
  });
});
