import type { Budget } from './agent.ts';

/** Shapes of the routes for waiting runs and schedules (DESIGN §4), shared by the server and its clients. */

/** `POST /v1/runs/:runId/approvals`. */
export interface ApprovalAnswer {
  approvalId: string;
  approved: boolean;
  /** Shown to the model with a denial. */
  reason?: string;
}

/** What a schedule does when its chat is busy as it fires. @default 'skip' */
export type ScheduleMultitask = 'skip' | 'enqueue' | 'interrupt';

/** A chat's schedule: a cron expression (with its time zone) or a single time `at`. */
export interface ScheduleObject {
  id: string;
  chatId: string;
  cron: string | null;
  /** The IANA time zone `cron` is read in. */
  timezone: string;
  at: string | null;
  input: { text: string } | { parts: unknown[] };
  multitask: ScheduleMultitask;
  enabled: boolean;
  nextRunAt: string | null;
  lastFiredAt: string | null;
  lastRunId: string | null;
  /** What the last fire did, such as `skipped` when the chat was busy. */
  lastResult: string | null;
  /** `schedule`, or `continue` for a follow-up an agent scheduled with `schedule_followup`. */
  trigger: 'schedule' | 'continue';
  parentRunId: string | null;
  createdAt: string;
}

/** `POST /v1/chats/:chatId/schedules` (exactly one of `cron` or `at`). */
export interface CreateScheduleOptions {
  cron?: string;
  timezone?: string;
  at?: string;
  input: { text: string };
  multitask?: ScheduleMultitask;
  enabled?: boolean;
}

/** `POST /v1/runs/:runId/continue`: the raised budget a paused run resumes with. */
export interface ContinueRunOptions {
  budget: Budget;
}
