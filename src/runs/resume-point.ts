import type { UIMessage } from 'ai';
import { isToolPart, MessageProjector } from '../protocol/message-projector.ts';
import type { RunRow } from '../store/schema.ts';
import type { EventLog } from '../stream/event-log.ts';
import type { FinishedStep } from './agent-loop.ts';
import type { Spend } from './budget.ts';
import type { RunUsage } from './run-object.ts';
import type { RunService } from './run-service.ts';

type Part = UIMessage['parts'][number];

/** Where a resumed run goes on: what its earlier executions streamed and the steps they finished. */
export interface ResumePoint {
  projector: MessageProjector;
  stepsDone: number;
  finishedParts: UIMessage['parts'];
  /** The last finished step called no tool: the model gave its final answer before the crash. */
  loopEnded: boolean;
}

/** A person's answer to a tool call that waited for approval. */
interface ApprovalAnswer {
  approved: boolean;
  reason?: string;
}

/** A step the log shows finished: its parts and the sequence number of its `finish-step`. */
interface LoggedStep {
  parts: UIMessage['parts'];
  seq: number;
}

/**
 * Where a resumed run goes on. The log is the truth: every step whose `finish-step` is durable counts as
 * finished (one whose record a crash lost is recorded now); a step it cut short was closed by
 * `data-step-interrupted` when the run was handed back, and is redone.
 */
export async function findResumePoint(options: {
  runId: string;
  log: Pick<EventLog, 'replay'>;
  runs: Pick<RunService, 'listSteps'>;
  /** Records a finished step whose record a crash lost. */
  recordStep: (step: FinishedStep) => Promise<void>;
}): Promise<ResumePoint> {
  const { projector, steps, answers } = await replayLog(options.log, options.runId);
  // A step's parts are as they were when it finished; a call that waited for approval got its output (or its
  // denial) later, in the execution the answer resumed. Each call is taken as it is now, and answered
  // approvals still waiting for it reach the model as responses: the SDK then runs approved calls and reports
  // denials. (Taken as it was, an executed call would reach the model with no result, which it refuses.)
  const latest = toolPartsById(projector.parts());
  const finished = steps.map((step) => ({
    ...step,
    parts: step.parts.map((part) => withApprovalAnswer(latestOf(part, latest), answers)),
  }));
  const recorded = await options.runs.listSteps(options.runId);
  await recordLostSteps({ finished, recordedCount: recorded.length, recordStep: options.recordStep });
  const last = finished.at(-1)?.parts;
  return {
    projector,
    stepsDone: finished.length,
    finishedParts: finished.flatMap((step) => step.parts),
    loopEnded: last !== undefined && !last.some(isToolPart),
  };
}

/** Replays a run's log: the projector it builds, the steps it shows finished and the approval answers in it. */
async function replayLog(
  log: Pick<EventLog, 'replay'>,
  runId: string,
): Promise<{ projector: MessageProjector; steps: LoggedStep[]; answers: Map<string, ApprovalAnswer> }> {
  const projector = new MessageProjector();
  const steps: LoggedStep[] = [];
  const answers = new Map<string, ApprovalAnswer>();
  for await (const { seq, chunk } of log.replay(runId)) {
    const step = projector.push(chunk as never);
    if (step) steps.push({ parts: step.parts, seq });
    const answer = chunk as {
      type: string;
      data?: { approvalId: string; approved: boolean; reason?: string | null };
    };
    if (answer.type === 'data-tool-approval' && answer.data) {
      answers.set(answer.data.approvalId, {
        approved: answer.data.approved,
        reason: answer.data.reason ?? undefined,
      });
    }
  }
  return { projector, steps, answers };
}

/** Records the finished steps past the last recorded one: a crash lost their records, the log kept them. */
async function recordLostSteps(options: {
  finished: LoggedStep[];
  recordedCount: number;
  recordStep: (step: FinishedStep) => Promise<void>;
}): Promise<void> {
  const { finished } = options;
  for (let index = options.recordedCount; index < finished.length; index++) {
    await options.recordStep({
      step: index + 1,
      parts: finished[index]!.parts,
      usage: null,
      costUsd: null,
      lastSeq: finished[index]!.seq,
      startedAt: new Date(),
    });
  }
}

/** The message's tool parts by their call id. */
function toolPartsById(parts: readonly Part[]): Map<string, Part> {
  const byId = new Map<string, Part>();
  for (const part of parts) {
    const id = (part as { toolCallId?: unknown }).toolCallId;
    if (isToolPart(part) && typeof id === 'string') byId.set(id, part);
  }
  return byId;
}

/** A tool part as the message holds it now (with what happened to its call since); any other part as it is. */
function latestOf(part: Part, latest: Map<string, Part>): Part {
  if (!isToolPart(part)) return part;
  return latest.get((part as { toolCallId: string }).toolCallId) ?? part;
}

/** A tool part waiting for approval, with the person's answer applied when there is one. */
function withApprovalAnswer(part: Part, answers: Map<string, ApprovalAnswer>): Part {
  const tool = part as { state?: string; approval?: { id: string } };
  if (tool.state !== 'approval-requested' || !tool.approval) return part;
  const answer = answers.get(tool.approval.id);
  if (!answer) return part;
  return {
    ...part,
    state: 'approval-responded',
    approval: { id: tool.approval.id, approved: answer.approved, reason: answer.reason },
  } as Part;
}

/** What the run spent before this execution: its stored totals, and the time its finished steps took. */
export async function spentBefore(options: {
  row: RunRow;
  stepsDone: number;
  runs: Pick<RunService, 'listSteps'>;
}): Promise<Spend> {
  const { row } = options;
  // Only an earlier execution of this run can have finished steps.
  const steps = row.attempt > 1 ? await options.runs.listSteps(row.id) : [];
  return spentByRun({ row, stepsDone: options.stepsDone, steps });
}

/**
 * What a run has spent over its executions so far, as its next execution's budget counts it: the totals stored
 * on its row (`usage`, `cost_usd`), `stepsDone` steps, and the running time its finished steps took.
 */
export function spentByRun(options: {
  row: Pick<RunRow, 'usage' | 'cost_usd'>;
  stepsDone: number;
  /** The run's finished steps (`run_steps`). */
  steps: readonly { started_at: Date; finished_at: Date }[];
}): Spend {
  const usage = (options.row.usage as RunUsage | null) ?? {};
  return {
    steps: options.stepsDone,
    inputTokens: usage.inputTokens ?? 0,
    outputTokens: usage.outputTokens ?? 0,
    costUsd: options.row.cost_usd ?? 0,
    runningMs: options.steps.reduce(
      (sum, step) => sum + (step.finished_at.getTime() - step.started_at.getTime()),
      0,
    ),
  };
}
