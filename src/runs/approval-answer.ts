import { ConflictError } from '../errors.ts';
import type { EventLog } from '../stream/event-log.ts';

/** A person's answer to a tool call that waited for approval, as the run's log records it. */
export interface LoggedApprovalAnswer {
  approved: boolean;
  reason: string | null;
}

/**
 * The answer the run's log records for `approvalId` (its `data-tool-approval` event), from whichever of the
 * run's waits asked for it; null when the run never had that approval answered. The log is the one durable
 * record of an earlier wait's answers: the run's row keeps only its current wait, and its steps and message
 * keep the tool calls, not the answers. It reads the run's whole log, so it is for an approval that is not in
 * the run's current wait.
 */
export async function findApprovalAnswer(options: {
  log: Pick<EventLog, 'replay'>;
  runId: string;
  approvalId: string;
}): Promise<LoggedApprovalAnswer | null> {
  for await (const { chunk } of options.log.replay(options.runId)) {
    const event = chunk as {
      type?: unknown;
      data?: { approvalId?: unknown; approved?: unknown; reason?: unknown };
    };
    if (event.type !== 'data-tool-approval' || event.data?.approvalId !== options.approvalId) continue;
    return {
      approved: event.data.approved === true,
      reason: typeof event.data.reason === 'string' ? event.data.reason : null,
    };
  }
  return null;
}

/**
 * What a second answer to an approval gets, from the approvals route and from useChat's alike: `409
 * approval_already_answered`, with the answer given first.
 */
export function approvalAlreadyAnswered(earlier: Pick<LoggedApprovalAnswer, 'approved'>): ConflictError {
  return new ConflictError('approval_already_answered', 'This approval was already answered.', {
    approved: earlier.approved,
  });
}
