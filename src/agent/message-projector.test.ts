import { readUIMessageStream } from 'ai';
import type { UIMessage, UIMessageChunk } from 'ai';
import { describe, expect, it } from 'vitest';
import { MessageProjector } from './message-projector.ts';
import type { ProjectedStep } from './message-projector.ts';
import { createScriptedModel } from './scripted-model.ts';
import { collectChunks, scriptText, streamedText } from './test-helpers.ts';

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

function project(chunks: UIMessageChunk[]) {
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

function textOf(parts: UIMessage['parts']): string {
  return parts.map((part) => (part.type === 'text' ? part.text : '')).join('');
}

/** Checks every property the run loop relies on for one chunk sequence. */
async function expectFaithfulProjection(chunks: UIMessageChunk[]): Promise<UIMessage['parts']> {
  const { projector, steps } = project(chunks);
  const parts = projector.parts();
  const expected = await sdkParts(chunks);
  expect(parts).toEqual(expected);
  expect(json(parts)).toStrictEqual(json(expected));
  expect([...steps.flatMap((step) => step.parts), ...projector.inFlightParts()]).toEqual(parts);
  expect(steps.map((step) => step.index)).toEqual(steps.map((_, index) => index));
  expect(projector.stepCount()).toBe(chunks.filter((chunk) => chunk.type === 'finish-step').length);
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
    expect(projector.inFlightParts()).toEqual([]);
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
    const { projector } = project(chunks);
    expect(projector.stepCount()).toBe(1);
    expect(projector.inFlightParts()).toEqual([
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

  it('reports a finished step again when a later chunk changes one of its parts', () => {
    const projector = new MessageProjector();
    const chunks: UIMessageChunk[] = [
      { type: 'start-step' },
      { type: 'data-progress', id: 'p', data: 1 },
      { type: 'finish-step' },
      { type: 'start-step' },
    ];
    for (const chunk of chunks) projector.push(chunk);
    expect(projector.takeRevisedSteps()).toEqual([]);
    projector.push({ type: 'data-progress', id: 'p', data: 2 });
    expect(projector.takeRevisedSteps()).toEqual([
      { index: 0, parts: [{ type: 'step-start' }, { type: 'data-progress', id: 'p', data: 2 }] },
    ]);
    expect(projector.takeRevisedSteps()).toEqual([]);
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
