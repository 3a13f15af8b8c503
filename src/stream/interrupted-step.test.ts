import { describe, expect, it } from 'vitest';
import { interruptedStep } from './interrupted-step.ts';

const interruptedStepClosure = (chunks: unknown[], reason: string) => interruptedStep(chunks, reason).closure;

const run = { type: 'data-run', data: {} };

describe('interruptedStep', () => {
  it('closes nothing between steps', () => {
    expect(interruptedStepClosure([run], 'crash')).toEqual([]);
    expect(
      interruptedStepClosure(
        [
          run,
          { type: 'start' },
          { type: 'start-step' },
          { type: 'text-start', id: 'a' },
          { type: 'text-end', id: 'a' },
          { type: 'finish-step' },
        ],
        'crash',
      ),
    ).toEqual([]);
  });

  it('ends the open text and reasoning parts, then marks the step interrupted with its number', () => {
    const chunks = [
      run,
      { type: 'start' },
      { type: 'start-step' },
      { type: 'text-start', id: 'a' },
      { type: 'text-end', id: 'a' },
      { type: 'finish-step' },
      { type: 'start-step' },
      { type: 'reasoning-start', id: 'r' },
      { type: 'text-start', id: 'b' },
      { type: 'text-delta', id: 'b', delta: 's2t0 ' },
    ];
    expect(interruptedStepClosure(chunks, 'shutdown')).toEqual([
      { type: 'text-end', id: 'b' },
      { type: 'reasoning-end', id: 'r' },
      { type: 'data-step-interrupted', data: { step: 2, reason: 'shutdown' } },
    ]);
  });

  it('numbers a step after an earlier interrupted one by the finished steps only', () => {
    const chunks = [
      { type: 'start-step' },
      { type: 'data-step-interrupted', data: { step: 1, reason: 'crash' } },
      { type: 'start-step' },
      { type: 'text-start', id: 'c' },
    ];
    expect(interruptedStepClosure(chunks, 'crash')).toEqual([
      { type: 'text-end', id: 'c' },
      { type: 'data-step-interrupted', data: { step: 1, reason: 'crash' } },
    ]);
  });

  it('counts the output the open step streamed, not that of the steps before it', () => {
    const chunks = [
      { type: 'start-step' },
      { type: 'text-start', id: 'a' },
      { type: 'text-delta', id: 'a', delta: 'x' },
      { type: 'text-end', id: 'a' },
      { type: 'finish-step' },
      { type: 'start-step' },
      { type: 'reasoning-start', id: 'r' },
      { type: 'reasoning-delta', id: 'r', delta: 'y' },
      { type: 'tool-input-start', toolCallId: 't', toolName: 'echo' },
      { type: 'tool-input-delta', toolCallId: 't', inputTextDelta: '{' },
      { type: 'text-start', id: 'b' },
      { type: 'text-delta', id: 'b', delta: 'z' },
    ];
    expect(interruptedStep(chunks, 'crash').outputChunks).toBe(3);
    expect(interruptedStep(chunks.slice(0, 5), 'crash')).toEqual({ closure: [], outputChunks: 0 });
  });
});
