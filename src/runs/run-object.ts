import type { RunUsage } from '../protocol/run.ts';
import type { RunRow } from '../store/schema.ts';
import type { RunError, RunStatus, RunTrigger } from './run-status.ts';

/** The public shape of a run (DESIGN §4), as the API and the `data-run` stream chunks show it. */
export interface RunObject {
  id: string;
  chatId: string;
  status: RunStatus;
  trigger: RunTrigger;
  model: string;
  error: RunError | null;
  stepCount: number;
  usage: RunUsage | null;
  attempt: number;
  assistantMessageId: string | null;
  stopRequestedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export type { RunUsage };

const iso = (value: Date | null): string | null => (value ? value.toISOString() : null);

export function toRunObject(row: RunRow): RunObject {
  return {
    id: row.id,
    chatId: row.chat_id,
    status: row.status as RunStatus,
    trigger: row.trigger as RunTrigger,
    model: row.model,
    error: (row.error as RunError | null) ?? null,
    stepCount: row.step_count,
    usage: (row.usage as RunUsage | null) ?? null,
    attempt: row.attempt,
    assistantMessageId: row.assistant_message_id,
    stopRequestedAt: iso(row.stop_requested_at),
    startedAt: iso(row.started_at),
    finishedAt: iso(row.finished_at),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}
