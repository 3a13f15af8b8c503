import { describe, expect, it } from 'vitest';
import { interruptedStepClosure } from './interrupted-step.ts';

const run = { type: 'data-run', data: {} };

describe('interruptedStepClosure', () => {
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
});
