import { streamText } from 'ai';
import { describe, expect, it } from 'vitest';
import { createScriptedModel } from '../agent/scripted-model.ts';
import { takeOnlyStream } from './only-stream.ts';

function scriptedResult(tokens: number, onFinish?: () => void) {
  return streamText({
    model: createScriptedModel(),
    messages: [{ role: 'user', content: JSON.stringify({ script: { tokens, tool: false } }) }],
    onFinish,
  });
}

describe('takeOnlyStream', () => {
  it('leaves the result no copy of the stream, and the stream taken whole', async () => {
    let finished = false;
    const result = scriptedResult(50, () => (finished = true));
    const { stream, dropped } = takeOnlyStream(result, () => result.toUIMessageStream());
    expect(dropped).toBe(true);

    const types: string[] = [];
    for await (const chunk of stream) types.push(chunk.type);
    expect(types.filter((type) => type === 'text-delta')).toHaveLength(50);
    expect(types.at(-1)).toBe('finish');
    expect(finished).toBe(true);

    // What the result kept for a later reader: nothing, not the 50 deltas and their frame.
    const kept = (result as unknown as { baseStream: ReadableStream }).baseStream;
    expect(await kept.getReader().read()).toEqual({ done: true, value: undefined });
  });

  it('without it, the result keeps every part for a later reader (what it guards against)', async () => {
    const result = scriptedResult(20);
    for await (const chunk of result.toUIMessageStream()) void chunk;
    let kept = 0;
    for await (const part of result.fullStream) if (part.type === 'text-delta') kept += 1;
    expect(kept).toBe(20);
  });

  it('never cancels the stream a result reads from when taking split nothing off', async () => {
    const result = { baseStream: new ReadableStream({ start: (controller) => controller.enqueue('part') }) };
    const { stream, dropped } = takeOnlyStream(result, () => 'not a branch');
    expect(stream).toBe('not a branch');
    expect(dropped).toBe(false);
    expect(await result.baseStream.getReader().read()).toEqual({ done: false, value: 'part' });
  });
});
