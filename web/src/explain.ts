import { OutrunApiError } from '../../src/client/errors.ts';
import type { RunObject, RunUsage } from '../../src/protocol/index.ts';

/** A run's outcome in words a person understands; null for a run that is going or succeeded. */
export function explainRun(run: RunObject): string | null {
  if (run.status !== 'failed' && run.status !== 'aborted') return null;
  const reason = run.error?.message?.trim().replace(/\.+$/, '');
  const detail = reason ? `: ${reason}` : '';
  switch (run.error?.code) {
    case 'stopped':
      return 'Stopped on request. The answer ends where the run was stopped.';
    case 'server_shutdown':
      return 'The server shut down before this run finished. Send your message again to retry.';
    case 'lease_expired':
      return 'The worker running this lost contact with the server, so the run was ended. Send your message again to retry.';
    case 'model_error':
      return reason
        ? `The model answered with an error: ${reason}.`
        : 'The model answered with an error. Try again, or check the model’s configuration.';
    case 'start_failed':
      return `The run could not be started${detail}.`;
    case 'persistence_failed':
      return 'The server could not save the run’s progress, so it was ended.';
    case 'budget_exceeded':
      return 'The run used up its budget, so it was ended.';
    case 'quota_exceeded':
      return 'The workspace used up its daily quota, so the run was ended.';
    case 'wait_expired':
      return 'The run waited too long for an answer, so it was ended. Send your message again to retry.';
    default:
      return run.status === 'aborted'
        ? `The run was ended before it finished${detail}.`
        : `The run failed${detail}.`;
  }
}

/** A failed request in words a person understands. */
export function explainError(error: Error): string {
  if (!(error instanceof OutrunApiError)) return error.message;
  if (error.code === 'network_error')
    return 'Could not reach the Outrun server. Check your connection and try again.';
  if (error.code === 'run_already_active') return 'A run is already in progress in this chat.';
  if (error.code === 'events_expired')
    return "This run's event log was deleted when its retention ran out. Its steps and answer remain.";
  if (error.status === 429) return 'Too many requests right now. Wait a moment and try again.';
  if (error.status >= 500) return 'The server had a problem handling that. Try again in a moment.';
  return error.message;
}

/** Dollars, with cents below a dollar shown to a tenth of a cent. */
export function formatCost(usd: number | null | undefined): string {
  if (usd === null || usd === undefined || !Number.isFinite(usd)) return '–';
  if (usd === 0) return '$0';
  if (usd < 0.01) return `$${usd.toFixed(4)}`;
  return `$${usd.toFixed(2)}`;
}

export const TRIGGER_LABELS: Record<RunObject['trigger'], string> = {
  user: 'you',
  api: 'the API',
  schedule: 'a schedule',
  continue: 'a continuation',
  autostart: 'autostart',
};

export const STATUS_LABELS: Record<RunObject['status'], string> = {
  queued: 'queued',
  pending: 'starting',
  running: 'running',
  waiting: 'waiting',
  succeeded: 'finished',
  failed: 'failed',
  aborted: 'stopped',
};

/** `1.2 s`, `3 min 05 s`, `1 h 02 min`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, '0')} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, '0')} min`;
}

/** How long a run took, or has been going. */
export function runDuration(run: RunObject, now = Date.now()): number {
  const start = Date.parse(run.startedAt ?? run.createdAt);
  const end = run.finishedAt ? Date.parse(run.finishedAt) : now;
  return end - start;
}

export function formatUsage(usage: RunUsage | null | undefined): string {
  if (!usage) return '–';
  const parts: string[] = [];
  if (usage.inputTokens !== undefined) parts.push(`${usage.inputTokens} in`);
  if (usage.outputTokens !== undefined) parts.push(`${usage.outputTokens} out`);
  if (usage.totalTokens !== undefined) parts.push(`${usage.totalTokens} total`);
  return parts.length > 0 ? `${parts.join(' · ')} tokens` : '–';
}

export function formatTime(iso: string | null): string {
  if (!iso) return '–';
  const date = new Date(iso);
  const sameDay = new Date().toDateString() === date.toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}
