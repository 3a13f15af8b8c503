import { readUIMessageStream } from 'ai';
import type { UIMessage, UIMessageChunk } from 'ai';
import { describe, expect, it } from 'vitest';
import { createScriptedModel } from '../agent/scripted-model.ts';
import { collectChunks, scriptText, streamedText } from '../agent/test-helpers.ts';
import type { RunChunk } from './chunks.ts';
import { MessageProjector, textOf, withoutInterruptedSteps } from './message-projector.ts';
import type { ProjectedStep } from './message-projector.ts';

const runChunk = (status: string): UIMessageChunk => ({ type: 'data-run', data: { status } });

/** The parts the AI SDK itself builds from `chunks`, without `data-run` parts. */
async function sdkParts(chunks: UIMessageChunk[]): Promise<UIMessage['parts']> {
  // A trailing metadata chunk makes the SDK emit a final snapshot even after chunks that do not (start-step).
  const flushed: UIMessageChunk[] = [...chunks, { type: 'message-metadata', messageMetadata: {} }];
  const stream = new ReadableStream<UIMessageChunk>({
    start(controller) {
      for (const chunk of flushed) controller.enqueue(chunk);
      controller.close();
    },
  });
  let last: UIMessage | undefined;
  for await (const message of readUIMessageStream({ stream })) last = message;
  return (last?.parts ?? []).filter((part) => part.type !== 'data-run');
}

function project(chunks: RunChunk[]) {
  const projector = new MessageProjector();
  const steps: ProjectedStep[] = [];
  for (const chunk of chunks) {
    const step = projector.push(chunk);
    if (step) steps.push(step);
  }
  return { projector, steps };
}

/** JSON as the database stores it: undefined fields vanish. */
function json(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}

/** Checks every property the run loop relies on for one chunk sequence. */
async function expectFaithfulProjection(chunks: UIMessageChunk[]): Promise<UIMessage['parts']> {
  const { projector, steps } = project(chunks);
  const parts = projector.parts();
  const expected = await sdkParts(chunks);
  expect(parts).toEqual(expected);
  expect(json(parts)).toStrictEqual(json(expected));
  const finished = steps.flatMap((step) => step.parts);
  expect(parts.slice(0, finished.length)).toEqual(finished);
  expect(steps.map((step) => step.index)).toEqual(steps.map((_, index) => index));
  expect(steps).toHaveLength(chunks.filter((chunk) => chunk.type === 'finish-step').length);
  expect(textOf(parts)).toBe(streamedText(chunks));
  return parts;
}

function script(value: Record<string, unknown>): string {
  return JSON.stringify({ script: value });
}

describe('MessageProjector on streams of the scripted model', () => {
  it.each([
    { steps: 1, tokens: 5 },
    { steps: 3, tokens: 4 },
    { steps: 3, tokens: 0 },
    { steps: 2, tokens: 3, tool: false },
    { steps: 3, tokens: 2, failAtStep: 2 },
    { steps: 2, tokens: 2, failAtStep: 1 },
    { steps: 4, tokens: 1, failAtStep: 4 },
  ])('matches readUIMessageStream for %j', async (value) => {
    const chunks = await collectChunks(script(value));
    await expectFaithfulProjection([runChunk('running'), ...chunks, runChunk('succeeded')]);
  });

  it('matches readUIMessageStream for the demo answer', async () => {
    const parts = await expectFaithfulProjection(await collectChunks('hello'));
    expect(parts.map((part) => part.type)).toEqual([
      'step-start',
      'text',
      'tool-current_time',
      'step-start',
      'text',
    ]);
  });

  it('projects a multi-step tool run into step-start, text and tool parts', async () => {
    const { projector, steps } = project(await collectChunks(script({ steps: 2, tokens: 2 })));
    expect(steps).toEqual([
      {
        index: 0,
        parts: [
          { type: 'step-start' },
          { type: 'text', text: 's1t0 s1t1 ', state: 'done' },
          {
            type: 'tool-echo',
            toolCallId: expect.stringMatching(/^call-/),
            state: 'output-available',
            input: { step: 1 },
            output: { step: 1 },
          },
        ],
      },
      { index: 1, parts: [{ type: 'step-start' }, { type: 'text', text: 's2t0 s2t1 ', state: 'done' }] },
    ]);
    expect(steps.flatMap((step) => step.parts)).toEqual(projector.parts());
    expect(textOf(projector.parts())).toBe(scriptText([1, 2], 2));
  });

  it('keeps the streamed text of a step aborted mid-way as a streaming part', async () => {
    const controller = new AbortController();
    const chunks = await collectChunks(script({ steps: 3, tokens: 10, delayMs: 1 }), {
      model: createScriptedModel(),
      abortSignal: controller.signal,
      onChunk: (chunk) => {
        if (chunk.type === 'text-delta' && chunk.delta === 's2t2 ') controller.abort();
      },
    });
    expect(chunks.at(-1)?.type).toBe('abort');
    const parts = await expectFaithfulProjection([...chunks, runChunk('aborted')]);
    expect(parts.at(-1)).toEqual({ type: 'text', text: 's2t0 s2t1 s2t2 ', state: 'streaming' });
    const { projector, steps } = project(chunks);
    expect(steps).toHaveLength(1);
    expect(projector.parts().slice(steps[0]!.parts.length)).toEqual([
      { type: 'step-start' },
      { type: 'text', text: 's2t0 s2t1 s2t2 ', state: 'streaming' },
    ]);
  });
});

describe('MessageProjector on hand-written chunk sequences', () => {
  it('matches readUIMessageStream for reasoning, sources, files and data parts', async () => {
    await expectFaithfulProjection([
      { type: 'start', messageId: 'm1' },
      runChunk('running'),
      { type: 'start-step' },
      { type: 'reasoning-start', id: 'r1', providerMetadata: { openai: { itemId: 'x' } } },
      { type: 'reasoning-delta', id: 'r1', delta: 'Thinking ' },
      { type: 'reasoning-delta', id: 'r1', delta: 'hard.' },
      { type: 'reasoning-end', id: 'r1' },
      { type: 'source-url', sourceId: 's1', url: 'https://example.com', title: 'Example' },
      { type: 'source-document', sourceId: 's2', mediaType: 'application/pdf', title: 'Doc' },
      { type: 'file', url: 'data:text/plain;base64,aGk=', mediaType: 'text/plain' },
      { type: 'data-progress', id: 'p', data: { done: 1 } },
      { type: 'data-note', data: 'no id' },
      { type: 'data-ephemeral', data: 1, transient: true },
      { type: 'text-start', id: 't1' },
      { type: 'text-delta', id: 't1', delta: 'Hello', providerMetadata: { x: { y: 1 } } },
      { type: 'text-end', id: 't1' },
      { type: 'data-progress', id: 'p', data: { done: 2 } },
      { type: 'finish-step' },
      { type: 'message-metadata', messageMetadata: { tokens: 3 } },
      { type: 'finish', finishReason: 'stop' },
    ]);
  });

  it('matches readUIMessageStream for dynamic tools, input errors, output errors and approvals', async () => {
    await expectFaithfulProjection([
      { type: 'start' },
      { type: 'start-step' },
      { type: 'tool-input-start', toolCallId: 'a', toolName: 'search', dynamic: true, title: 'Search' },
      { type: 'tool-input-delta', toolCallId: 'a', inputTextDelta: '{"q":' },
      { type: 'tool-input-delta', toolCallId: 'a', inputTextDelta: '"x"}' },
      { type: 'tool-input-available', toolCallId: 'a', toolName: 'search', input: { q: 'x' }, dynamic: true },
      { type: 'tool-output-available', toolCallId: 'a', output: { partial: true }, preliminary: true },
      {
        type: 'tool-output-available',
        toolCallId: 'a',
        output: { hits: 2 },
        providerMetadata: { p: { a: 1 } },
      },
      {
        type: 'tool-input-error',
        toolCallId: 'b',
        toolName: 'calculator',
        input: '{bad',
        errorText: 'bad json',
      },
      { type: 'tool-input-start', toolCallId: 'c', toolName: 'calculator', providerExecuted: true },
      { type: 'tool-input-delta', toolCallId: 'c', inputTextDelta: '{"expression":"1/0"}' },
      { type: 'tool-input-available', toolCallId: 'c', toolName: 'calculator', input: { expression: '1/0' } },
      { type: 'tool-output-error', toolCallId: 'c', errorText: 'Division by zero.' },
      { type: 'tool-input-available', toolCallId: 'd', toolName: 'delete_all', input: {} },
      { type: 'tool-approval-request', toolCallId: 'd', approvalId: 'ap1', inputSchemaInput: undefined },
      { type: 'tool-input-available', toolCallId: 'e', toolName: 'delete_all', input: {} },
      { type: 'tool-approval-request', toolCallId: 'e', approvalId: 'ap2' },
      { type: 'tool-output-denied', toolCallId: 'e' },
      { type: 'finish-step' },
      { type: 'finish', finishReason: 'tool-calls' },
    ]);
  });

  it('matches readUIMessageStream for tool input still streaming as text or complete JSON', async () => {
    await expectFaithfulProjection([
      { type: 'start-step' },
      { type: 'tool-input-start', toolCallId: 'a', toolName: 'shell', inputEncoding: 'text' },
      { type: 'tool-input-delta', toolCallId: 'a', inputTextDelta: 'ls ' },
      { type: 'tool-input-delta', toolCallId: 'a', inputTextDelta: '-la' },
      { type: 'tool-input-start', toolCallId: 'b', toolName: 'echo' },
      { type: 'tool-input-delta', toolCallId: 'b', inputTextDelta: '{"step":' },
      { type: 'tool-input-delta', toolCallId: 'b', inputTextDelta: '1}' },
      { type: 'abort' },
    ]);
  });

  it('matches readUIMessageStream when a step ends right after its step-start', async () => {
    await expectFaithfulProjection([
      { type: 'start' },
      { type: 'start-step' },
      { type: 'text-start', id: 't' },
      { type: 'text-delta', id: 't', delta: 'a' },
      { type: 'text-end', id: 't' },
      { type: 'finish-step' },
      { type: 'start-step' },
      { type: 'abort', reason: 'stopped' },
    ]);
  });

  it('never adds data-run lifecycle chunks to the parts', () => {
    const { projector } = project([runChunk('pending'), { type: 'start-step' }, runChunk('running')]);
    expect(projector.parts()).toEqual([{ type: 'step-start' }]);
  });

  it('throws on a text delta without its text-start, like the SDK', () => {
    expect(() => new MessageProjector().push({ type: 'text-delta', id: 'x', delta: 'a' })).toThrow(
      'Received text-delta for missing text part with ID "x".',
    );
  });

  it('does not let a caller mutate its state through returned parts', () => {
    const { projector } = project([
      { type: 'start-step' },
      { type: 'text-start', id: 't' },
      { type: 'text-delta', id: 't', delta: 'a' },
    ]);
    const parts = projector.parts();
    (parts[1] as { text: string }).text = 'changed';
    projector.push({ type: 'text-delta', id: 't', delta: 'b' });
    expect(projector.parts()[1]).toEqual({ type: 'text', text: 'ab', state: 'streaming' });
  });

  it('projects a long stream of small deltas into one text part', () => {
    const projector = new MessageProjector();
    projector.push({ type: 'start-step' });
    projector.push({ type: 'text-start', id: 't' });
    for (let index = 0; index < 100_000; index++) {
      projector.push({ type: 'text-delta', id: 't', delta: 'x' });
      if (index % 10_000 === 0) projector.parts();
    }
    projector.push({ type: 'text-end', id: 't' });
    expect(projector.parts()).toEqual([
      { type: 'step-start' },
      { type: 'text', text: 'x'.repeat(100_000), state: 'done' },
    ]);
  });
});

describe('MessageProjector on interrupted steps', () => {
  const interrupted = (step: number): RunChunk => ({
    type: 'data-step-interrupted',
    data: { step, reason: 'lease_expired' },
  });

  /** The chunks of a two-step script whose second step is cut after `deltas` deltas and then redone. */
  async function crashedAndRedone(deltas: number) {
    const chunks = await collectChunks(script({ steps: 2, tokens: 3 }));
    const secondStep = chunks.findIndex(
      (chunk, index) =>
        chunk.type === 'start-step' && chunks.slice(0, index).some((c) => c.type === 'start-step'),
    );
    let cut = secondStep + 1;
    for (let seen = 0; seen < deltas; cut++) if (chunks[cut]!.type === 'text-delta') seen++;
    return {
      clean: chunks,
      crashed: [...chunks.slice(0, cut), interrupted(2), ...chunks.slice(secondStep)] as RunChunk[],
    };
  }

  it('closes the cut step, keeps the chunk as a data part and projects the redone step normally', async () => {
    const { clean, crashed } = await crashedAndRedone(2);
    const { projector, steps } = project(crashed);
    const cleanParts = project(clean).projector.parts();
    const parts = projector.parts();
    const firstStep = steps[0]!.parts;
    expect(parts.slice(firstStep.length, firstStep.length + 3)).toEqual([
      { type: 'step-start' },
      { type: 'text', text: 's2t0 s2t1 ', state: 'done' },
      { type: 'data-step-interrupted', data: { step: 2, reason: 'lease_expired' } },
    ]);
    expect(parts.slice(firstStep.length + 3)).toEqual(cleanParts.slice(firstStep.length));
    expect(steps.map((step) => step.index)).toEqual([0, 1]);
    expect(steps[1]!.parts).toEqual(cleanParts.slice(firstStep.length));
  });

  it('does not report the cut step as a finished step', async () => {
    const { crashed } = await crashedAndRedone(1);
    const { steps } = project(crashed);
    expect(steps).toHaveLength(2);
    expect(steps.every((step) => step.parts.every((part) => part.type !== 'data-step-interrupted'))).toBe(
      true,
    );
  });

  it('gives back exactly the scripted text once interrupted steps are left out', async () => {
    const { clean, crashed } = await crashedAndRedone(2);
    const parts = project(crashed).projector.parts();
    expect(textOf(parts)).toBe(scriptText([1], 3) + 's2t0 s2t1 ' + scriptText([2], 3));
    expect(withoutInterruptedSteps(parts)).toEqual(project(clean).projector.parts());
    expect(textOf(withoutInterruptedSteps(parts))).toBe(scriptText([1, 2], 3));
  });

  it('ends open reasoning and text parts of a step cut in its first step', () => {
    const { projector, steps } = project([
      { type: 'start' },
      { type: 'start-step' },
      { type: 'reasoning-start', id: 'r' },
      { type: 'reasoning-delta', id: 'r', delta: 'hmm' },
      { type: 'text-start', id: 't' },
      { type: 'text-delta', id: 't', delta: 'par' },
      interrupted(1),
      { type: 'start-step' },
      { type: 'text-start', id: 't' },
      { type: 'text-delta', id: 't', delta: 'full' },
      { type: 'text-end', id: 't' },
      { type: 'finish-step' },
      { type: 'finish' },
    ]);
    expect(projector.parts()).toEqual([
      { type: 'step-start' },
      { type: 'reasoning', id: 'r', text: 'hmm', state: 'done' },
      { type: 'text', text: 'par', state: 'done' },
      { type: 'data-step-interrupted', data: { step: 1, reason: 'lease_expired' } },
      { type: 'step-start' },
      { type: 'text', text: 'full', state: 'done' },
    ]);
    expect(steps).toEqual([
      { index: 0, parts: [{ type: 'step-start' }, { type: 'text', text: 'full', state: 'done' }] },
    ]);
  });

  it('accepts a step cut twice before it finishes', () => {
    const { projector, steps } = project([
      { type: 'start-step' },
      { type: 'text-start', id: 'a' },
      { type: 'text-delta', id: 'a', delta: 'x' },
      interrupted(1),
      { type: 'start-step' },
      interrupted(1),
      { type: 'start-step' },
      { type: 'text-start', id: 'a' },
      { type: 'text-delta', id: 'a', delta: 'y' },
      { type: 'text-end', id: 'a' },
      { type: 'finish-step' },
    ]);
    expect(steps).toHaveLength(1);
    expect(withoutInterruptedSteps(projector.parts())).toEqual(steps[0]!.parts);
  });
});

describe('withoutInterruptedSteps', () => {
  it('leaves parts without interruptions as they are', () => {
    const parts: UIMessage['parts'] = [
      { type: 'step-start' },
      { type: 'text', text: 'a', state: 'done' },
      { type: 'step-start' },
      { type: 'text', text: 'b', state: 'done' },
    ];
    expect(withoutInterruptedSteps(parts)).toEqual(parts);
  });

  it('removes only the interrupted step, from its step-start through the data part', () => {
    const parts = [
      { type: 'step-start' },
      { type: 'text', text: 'a', state: 'done' },
      { type: 'step-start' },
      { type: 'text', text: 'b', state: 'done' },
      { type: 'data-step-interrupted', data: { step: 2, reason: 'server_shutdown' } },
      { type: 'step-start' },
      { type: 'text', text: 'c', state: 'done' },
    ] as UIMessage['parts'];
    expect(withoutInterruptedSteps(parts)).toEqual([parts[0], parts[1], parts[5], parts[6]]);
    expect(textOf(withoutInterruptedSteps(parts))).toBe('ac');
  });

  it('drops a lone interruption that has no step-start before it', () => {
    const parts = [
      { type: 'data-step-interrupted', data: { step: 1, reason: 'lease_expired' } },
      { type: 'step-start' },
    ] as UIMessage['parts'];
    expect(withoutInterruptedSteps(parts)).toEqual([{ type: 'step-start' }]);
  });
});

describe('MessageProjector.fromParts', () => {
  /**
   * Seeds a projector with the parts (as JSON, the way a snapshot arrives) at every step boundary of
   * `chunks`, pushes the rest, and expects the parts and finished steps the whole stream gives.
   */
  function expectContinuesAtEveryStepBoundary(chunks: RunChunk[]): void {
    const whole = project(chunks);
    const boundaries = chunks.flatMap((chunk, index) =>
      chunk.type === 'finish-step' || chunk.type === 'data-step-interrupted' ? [index + 1] : [],
    );
    expect(boundaries.length).toBeGreaterThan(0);
    for (const boundary of boundaries) {
      const before = project(chunks.slice(0, boundary));
      const seeded = MessageProjector.fromParts(json(before.projector.parts()) as UIMessage['parts']);
      const steps: ProjectedStep[] = [];
      for (const chunk of chunks.slice(boundary)) {
        const step = seeded.push(chunk);
        if (step) steps.push(step);
      }
      expect(json(seeded.parts())).toStrictEqual(json(whole.projector.parts()));
      expect(json(steps)).toStrictEqual(json(whole.steps.slice(before.steps.length)));
    }
  }

  it('continues a scripted tool run at every step boundary as if it had seen the whole stream', async () => {
    const chunks = await collectChunks(script({ steps: 3, tokens: 2, tool: true }));
    expectContinuesAtEveryStepBoundary([runChunk('running'), ...chunks, runChunk('succeeded')]);
  });

  it('applies the answer and output of a tool call that waited for approval in an earlier step', () => {
    expectContinuesAtEveryStepBoundary([
      { type: 'start' },
      { type: 'start-step' },
      { type: 'text-start', id: 't1' },
      { type: 'text-delta', id: 't1', delta: 'May I?' },
      { type: 'text-end', id: 't1' },
      { type: 'tool-input-available', toolCallId: 'a', toolName: 'echo', input: { step: 1 } },
      { type: 'tool-approval-request', toolCallId: 'a', approvalId: 'ap1' },
      { type: 'tool-input-available', toolCallId: 'b', toolName: 'search', input: { q: 'x' }, dynamic: true },
      { type: 'tool-approval-request', toolCallId: 'b', approvalId: 'ap2' },
      { type: 'data-progress', id: 'p', data: { done: 1 } },
      { type: 'finish-step' },
      runChunk('waiting'),
      { type: 'data-tool-approval', data: { approvalId: 'ap1', approved: true } },
      runChunk('running'),
      { type: 'tool-output-available', toolCallId: 'a', output: { step: 1 } },
      { type: 'tool-output-denied', toolCallId: 'b' },
      { type: 'start-step' },
      { type: 'data-progress', id: 'p', data: { done: 2 } },
      { type: 'text-start', id: 't2' },
      { type: 'text-delta', id: 't2', delta: 'Done.' },
      { type: 'text-end', id: 't2' },
      { type: 'finish-step' },
      { type: 'finish', finishReason: 'stop' },
    ]);
  });

  it('continues after a step cut short and redone', async () => {
    const chunks = await collectChunks(script({ steps: 2, tokens: 3 }));
    const secondStep = chunks.findIndex(
      (chunk, index) =>
        chunk.type === 'start-step' && chunks.slice(0, index).some((c) => c.type === 'start-step'),
    );
    const interrupted: RunChunk = {
      type: 'data-step-interrupted',
      data: { step: 2, reason: 'lease_expired' },
    };
    expectContinuesAtEveryStepBoundary([
      ...chunks.slice(0, secondStep + 3),
      interrupted,
      ...chunks.slice(secondStep),
    ] as RunChunk[]);
  });

  it('does not change the parts it was given', () => {
    const parts = [
      { type: 'step-start' },
      { type: 'tool-echo', toolCallId: 'a', state: 'approval-requested', input: {}, approval: { id: 'ap' } },
    ] as UIMessage['parts'];
    const copy = structuredClone(parts);
    const projector = MessageProjector.fromParts(parts);
    projector.push({ type: 'tool-output-available', toolCallId: 'a', output: 1 });
    expect(parts).toEqual(copy);
    expect(projector.parts()[1]).toMatchObject({ state: 'output-available', output: 1 });
  });
});
