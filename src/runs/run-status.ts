/**
 * The run lifecycle, in one place.
 *
 *     pending ──claim──▶ running ──settle──▶ succeeded | failed | aborted
 *        ▲  └──────────────settle (stop, sweep, safety net)───────▲
 *        └──requeue (lease ran out; a worker resumes it)── running
 */
export const RunStatus = {
  /** Inserted and gated, or requeued after its worker died; no worker owns it now. Counts as active. */
  pending: 'pending',
  /** A worker holds the lease and runs the agent loop. Counts as active. */
  running: 'running',
  /** The agent loop finished normally. */
  succeeded: 'succeeded',
  /** The model, a tool, the store or the start path failed; `error` says why. */
  failed: 'failed',
  /** Stopped on request, or cut short by a restart or shutdown; `error` says which. */
  aborted: 'aborted',
} as const;

export type RunStatus = (typeof RunStatus)[keyof typeof RunStatus];
export type ActiveRunStatus = typeof RunStatus.pending | typeof RunStatus.running;
export type TerminalRunStatus = Exclude<RunStatus, ActiveRunStatus>;

export const ACTIVE_RUN_STATUSES: readonly ActiveRunStatus[] = [RunStatus.pending, RunStatus.running];
export const TERMINAL_RUN_STATUSES: readonly TerminalRunStatus[] = [
  RunStatus.succeeded,
  RunStatus.failed,
  RunStatus.aborted,
];

export function isTerminalStatus(status: string): status is TerminalRunStatus {
  return (TERMINAL_RUN_STATUSES as readonly string[]).includes(status);
}

/** The transitions a run may take. Everything else is a bug. */
export const RUN_TRANSITIONS: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  pending: ['running', 'succeeded', 'failed', 'aborted'],
  running: ['pending', 'succeeded', 'failed', 'aborted'],
  succeeded: [],
  failed: [],
  aborted: [],
};

/** Why a run ended other than by succeeding: the `error.code` of a failed or aborted run. */
export const RunErrorCode = {
  /** Someone asked to stop it (by run or by chat, or by deleting the chat). */
  stopped: 'stopped',
  /** The server restarted while the run was active; the single-instance sweep settled it. */
  serverRestarted: 'server_restarted',
  /** The server shut down gracefully and the run did not finish within the grace period. */
  serverShutdown: 'server_shutdown',
  /** Its worker stopped heartbeating, the lease ran out, and it ran out of attempts to resume. */
  leaseExpired: 'lease_expired',
  /** The model provider failed (including the scripted model's `failAtStep`). */
  modelError: 'model_error',
  /** Something threw between "run begun" and "the agent loop owns the run". */
  startFailed: 'start_failed',
  /** The event log or store could not persist the run's progress. */
  persistenceFailed: 'persistence_failed',
  /** Any other unexpected failure. */
  internalError: 'internal_error',
} as const;

export type RunErrorCode = (typeof RunErrorCode)[keyof typeof RunErrorCode];

export interface RunError {
  code: RunErrorCode;
  message: string;
}

export { RunTrigger } from '../protocol/run.ts';
