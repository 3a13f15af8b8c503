import type { RunObject } from '../runs/run-object.ts';
import { isTerminalStatus } from '../protocol/run.ts';

/** The lifecycle chunk appended whenever a run's status changes (DESIGN §5). */
export interface RunStatusChunk {
  type: 'data-run';
  data: RunObject;
}

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
