import type { StepInterruptedChunk } from '../protocol/run.ts';

interface ChunkLike {
  type?: unknown;
  id?: unknown;
}

/**
 * The chunks that close a step a crash or a shutdown cut short (invariant 8): given every chunk of a run's
 * stream so far, the `text-end`/`reasoning-end` of the parts left open, then `data-step-interrupted`. Empty
 * when the stream is between steps (nothing to close). The redone step follows with its own `start-step`.
 */
export function interruptedStepClosure(chunks: Iterable<unknown>, reason: string): unknown[] {
  let finishedSteps = 0;
  let inStep = false;
  const openText = new Set<string>();
  const openReasoning = new Set<string>();
  for (const value of chunks) {
    const chunk = value as ChunkLike;
    switch (chunk.type) {
      case 'start-step':
        inStep = true;
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
  if (!inStep) return [];
  const interrupted: StepInterruptedChunk = {
    type: 'data-step-interrupted',
    data: { step: finishedSteps + 1, reason },
  };
  return [
    ...[...openText].map((id) => ({ type: 'text-end', id })),
    ...[...openReasoning].map((id) => ({ type: 'reasoning-end', id })),
    interrupted,
  ];
}
