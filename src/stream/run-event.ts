import { isTerminalStatus, type RunObject, type RunStatusChunk } from '../protocol/run.ts';

export type { RunStatusChunk };

export function runStatusChunk(run: RunObject): RunStatusChunk {
  return { type: 'data-run', data: run };
}

/** Whether serialized chunk `data` is a run's terminal `data-run` event. Parses only candidate chunks. */
export function isTerminalRunEventData(data: string): boolean {
  if (!data.includes('data-run')) return false;
  const chunk = JSON.parse(data) as { type?: unknown; data?: { status?: unknown } };
  return (
    chunk.type === 'data-run' && typeof chunk.data?.status === 'string' && isTerminalStatus(chunk.data.status)
  );
}
