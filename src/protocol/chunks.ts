import type { UIMessageChunk } from 'ai';
import type { RunStatusChunk, RunUsage, StepInterruptedChunk } from './run.ts';
import type { RunBudget } from './wire.ts';

/**
 * The chunks of a run's stream (DESIGN §5): the AI SDK's UI message chunks plus Outrun's own data chunks.
 * Types and type guards only.
 */

/** Records that the history sent to the model was compacted before a model call (DESIGN §6). */
export interface CompactionChunk {
  type: 'data-compaction';
  data: {
    /** Messages of the history shortened, collapsed or left out, each counted once. */
    trimmed: number;
    /** Messages replaced by a summary. */
    summarized: number;
    tokensBefore: number;
    tokensAfter: number;
    trigger: string;
  };
}

/** The run's spending after each step (DESIGN §5). */
export interface BudgetChunk {
  type: 'data-budget';
  data: { usage: RunUsage; costUsd: number; budget: RunBudget };
}

/** One chunk of a run's stream. */
export type RunChunk = UIMessageChunk | RunStatusChunk | StepInterruptedChunk | CompactionChunk | BudgetChunk;

/** One event of a run's stream: its dense sequence number and its chunk. */
export interface RunStreamEvent {
  seq: number;
  chunk: RunChunk;
}

export const RUN_STATUS_CHUNK_TYPE = 'data-run';
export const STEP_INTERRUPTED_CHUNK_TYPE = 'data-step-interrupted';

/** Whether a stream chunk is the run lifecycle chunk (`data-run`). */
export function isRunStatusChunk(chunk: { type: string }): chunk is RunStatusChunk {
  return chunk.type === RUN_STATUS_CHUNK_TYPE;
}

/** Whether a stream chunk closes a step cut short by a crash or a shutdown (`data-step-interrupted`). */
export function isStepInterruptedChunk(chunk: { type: string }): chunk is StepInterruptedChunk {
  return chunk.type === STEP_INTERRUPTED_CHUNK_TYPE;
}
