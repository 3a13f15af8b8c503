import type { StepInterruptedChunk } from '../protocol/run.ts';

interface ChunkLike {
  type?: unknown;
  id?: unknown;
}

/** A step a crash or a shutdown cut short: the chunks that close it, and the output it had streamed. */
export interface InterruptedStep {
  /** Empty when the stream is between steps (nothing to close). */
  closure: unknown[];
  /** The open step's output chunks (text, reasoning and tool-input deltas): a token each, by estimate. */
  outputChunks: number;
}

/**
 * What closes a step a crash or a shutdown cut short (invariant 8): given every chunk of a run's stream so
 * far, the `text-end`/`reasoning-end` of the parts left open, then `data-step-interrupted`. The redone step
 * follows with its own `start-step`.
 */
export function interruptedStep(chunks: Iterable<unknown>, reason: string): InterruptedStep {
  let finishedSteps = 0;
  let inStep = false;
  let outputChunks = 0;
  const openText = new Set<string>();
  const openReasoning = new Set<string>();
  for (const value of chunks) {
    const chunk = value as ChunkLike;
    switch (chunk.type) {
      case 'start-step':
        inStep = true;
        outputChunks = 0;
        break;
      case 'text-delta':
      case 'reasoning-delta':
      case 'tool-input-delta':
        outputChunks += 1;
        break;
      case 'finish-step':
        finishedSteps += 1;
        inStep = false;
        openText.clear();
        openReasoning.clear();
        break;
      case 'data-step-interrupted':
        inStep = false;
        openText.clear();
        openReasoning.clear();
        break;
      case 'text-start':
        openText.add(String(chunk.id));
        break;
      case 'text-end':
        openText.delete(String(chunk.id));
        break;
      case 'reasoning-start':
        openReasoning.add(String(chunk.id));
        break;
      case 'reasoning-end':
        openReasoning.delete(String(chunk.id));
        break;
    }
  }
  if (!inStep) return { closure: [], outputChunks: 0 };
  const interrupted: StepInterruptedChunk = {
    type: 'data-step-interrupted',
    data: { step: finishedSteps + 1, reason },
  };
  return {
    closure: [
      ...[...openText].map((id) => ({ type: 'text-end', id })),
      ...[...openReasoning].map((id) => ({ type: 'reasoning-end', id })),
      interrupted,
    ],
    outputChunks,
  };
}
