import type { RunObject, RunUsage, RunWaiting, RunError, RunStatus, RunTrigger } from '../protocol/run.ts';
import { roundUsd } from '../agent/prices.ts';
import type { RunRow } from '../store/schema.ts';

export type { RunObject, RunUsage };

const iso = (value: Date | null): string | null => (value ? value.toISOString() : null);

/** The public shape of a run (DESIGN §4) from its row. */
export function toRunObject(row: RunRow): RunObject {
  return {
    id: row.id,
    chatId: row.chat_id,
    agentId: row.agent_id,
    status: row.status as RunStatus,
    trigger: row.trigger as RunTrigger,
    parentRunId: row.parent_run_id,
    scheduleId: row.schedule_id,
    model: row.model,
    error: (row.error as RunError | null) ?? null,
    waiting: (row.waiting as RunWaiting | null) ?? null,
    stepCount: row.step_count,
    usage: (row.usage as RunUsage | null) ?? null,
    costUsd: row.cost_usd === null ? null : roundUsd(row.cost_usd),
    attempt: row.attempt,
    assistantMessageId: row.assistant_message_id,
    stopRequestedAt: iso(row.stop_requested_at),
    queuedAt: iso(row.queued_at),
    startedAt: iso(row.started_at),
    finishedAt: iso(row.finished_at),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    metadata: row.metadata ?? null,
  };
}
