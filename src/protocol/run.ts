/**
 * The run as the wire shows it (DESIGN §2–§5): statuses, error codes, triggers and the run object. Shared
 * by the server, the typed client, the React hook and the web app; imports nothing from the server.
 */

/** The statuses of a run. Active ones (`pending`, `running`, `waiting`) hold the chat's one slot. */
export const RunStatus = {
  /** Created behind the chat's active run (`multitask: "enqueue"`); becomes `pending` when that one ends. Not active. */
  queued: 'queued',
  /** Waiting for a worker: new, released on shutdown, requeued after its worker died, or answered. Active. */
  pending: 'pending',
  /** A worker holds the lease and runs the agent loop. Active. */
  running: 'running',
  /** Paused for a person (a tool approval, a budget extension); holds no worker and no lease. Active. */
  waiting: 'waiting',
  /** The agent loop finished normally. Terminal. */
  succeeded: 'succeeded',
  /** The model, a tool, the store or the start path failed; `error` says why. Terminal. */
  failed: 'failed',
  /** Stopped, expired, out of budget or out of attempts; `error` says which. Terminal. */
  aborted: 'aborted',
} as const;

export type RunStatus = (typeof RunStatus)[keyof typeof RunStatus];
export type ActiveRunStatus = typeof RunStatus.pending | typeof RunStatus.running | typeof RunStatus.waiting;
export type TerminalRunStatus =
  typeof RunStatus.succeeded | typeof RunStatus.failed | typeof RunStatus.aborted;

export const ACTIVE_RUN_STATUSES: readonly ActiveRunStatus[] = [
  RunStatus.pending,
  RunStatus.running,
  RunStatus.waiting,
];
export const TERMINAL_RUN_STATUSES: readonly TerminalRunStatus[] = [
  RunStatus.succeeded,
  RunStatus.failed,
  RunStatus.aborted,
];

export function isActiveStatus(status: string): status is ActiveRunStatus {
  return (ACTIVE_RUN_STATUSES as readonly string[]).includes(status);
}

export function isTerminalStatus(status: string): status is TerminalRunStatus {
  return (TERMINAL_RUN_STATUSES as readonly string[]).includes(status);
}

/** Why a run ended other than by succeeding: the `error.code` of a failed or aborted run (DESIGN §4). */
export const RunErrorCode = {
  /** Someone asked to stop it (by run or by chat, or by deleting the chat). */
  stopped: 'stopped',
  /** The server shut down and the run could not be handed back. */
  serverShutdown: 'server_shutdown',
  /** Its workers kept dying: it used every execution `OUTRUN_MAX_ATTEMPTS` allows. */
  leaseExpired: 'lease_expired',
  /** The model provider failed (including the scripted model's `failAtStep`). */
  modelError: 'model_error',
  /** Something threw between "run begun" and "the agent loop owns the run". */
  startFailed: 'start_failed',
  /** The event log or store could not persist the run's progress. */
  persistenceFailed: 'persistence_failed',
  /** The run used up its budget and its `onExceeded` said to abort. */
  budgetExceeded: 'budget_exceeded',
  /** The workspace's daily quota ran out mid-run. */
  quotaExceeded: 'quota_exceeded',
  /** It waited longer than `OUTRUN_WAIT_TTL_MS` for an answer. */
  waitExpired: 'wait_expired',
  /** Any other unexpected failure. */
  internalError: 'internal_error',
} as const;

export type RunErrorCode = (typeof RunErrorCode)[keyof typeof RunErrorCode];

export interface RunError {
  code: RunErrorCode;
  message: string;
}

/** What started a run (DESIGN §4 "Triggers"). */
export const RunTrigger = {
  /** A person, from the web app or a `useChat` route. */
  user: 'user',
  /** Any other API start. */
  api: 'api',
  /** A schedule fired. */
  schedule: 'schedule',
  /** The agent continued its own work (budget `continue`, or `schedule_followup`). */
  continue: 'continue',
  /** A chat was created with an agent that has `autostart`. */
  autostart: 'autostart',
} as const;

export type RunTrigger = (typeof RunTrigger)[keyof typeof RunTrigger];

/** Token counts as providers report them. */
export interface RunUsage {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  reasoningTokens?: number;
  cachedInputTokens?: number;
}

/** A tool call waiting for a person's answer. */
export interface PendingApproval {
  approvalId: string;
  toolCallId: string;
  toolName: string;
  /** The tool's own name where it differs from `toolName`: an MCP tool's `mcp:<server>/<tool>`. */
  title?: string;
  input: unknown;
  /** Set once answered. */
  approved?: boolean;
  reason?: string;
}

/** Why a `waiting` run waits, and until when. */
export type RunWaiting =
  | { reason: 'approval'; approvals: PendingApproval[]; expiresAt: string }
  | {
      reason: 'budget';
      exceeded: 'steps' | 'tokens' | 'cost' | 'duration';
      usage: RunUsage;
      budget: Record<string, unknown>;
      expiresAt: string;
    };

/** The public shape of a run (DESIGN §4), as the API and the `data-run` stream chunks show it. */
export interface RunObject {
  id: string;
  chatId: string;
  agentId: string | null;
  status: RunStatus;
  trigger: RunTrigger;
  parentRunId: string | null;
  scheduleId: string | null;
  model: string;
  error: RunError | null;
  waiting: RunWaiting | null;
  stepCount: number;
  usage: RunUsage | null;
  costUsd: number | null;
  /** How many executions the run has had (claims by a worker). */
  attempt: number;
  assistantMessageId: string | null;
  stopRequestedAt: string | null;
  queuedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  updatedAt: string;
  metadata: Record<string, unknown> | null;
}

/** The lifecycle chunk appended whenever a run's status changes (DESIGN §5). */
export interface RunStatusChunk {
  type: 'data-run';
  data: RunObject;
}

/** Closes a step a crash or a shutdown cut short; the redone step follows it (DESIGN §5, invariant 8). */
export interface StepInterruptedChunk {
  type: 'data-step-interrupted';
  data: { step: number; reason: string };
}
