/**
 * The run's statuses, error codes and triggers: the wire contract from `src/protocol/run.ts`, re-exported
 * for server code, plus the error messages a person reads.
 */
export {
  ACTIVE_RUN_STATUSES,
  TERMINAL_RUN_STATUSES,
  RunErrorCode,
  RunStatus,
  RunTrigger,
  isActiveStatus,
  isTerminalStatus,
  type ActiveRunStatus,
  type RunError,
  type TerminalRunStatus,
} from '../protocol/run.ts';
import type { RunErrorCode } from '../protocol/run.ts';

/** What a person reads for each error code (the model's own message replaces `model_error`'s). */
export const RUN_ERROR_MESSAGES: Readonly<Record<RunErrorCode, string>> = {
  stopped: 'The run was stopped on request.',
  server_shutdown: 'The server shut down before the run finished.',
  lease_expired: 'The workers running this run kept stopping, and the run ran out of attempts.',
  model_error: 'The model failed to answer.',
  start_failed: 'The run could not be started.',
  persistence_failed: 'The run could not save its progress.',
  budget_exceeded: 'The run used up its budget.',
  quota_exceeded: "The workspace's daily quota ran out.",
  wait_expired: 'Nobody answered the run in time.',
  internal_error: 'The run failed unexpectedly.',
};
