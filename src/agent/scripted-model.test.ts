import { generateText, stepCountIs, streamText } from 'ai';
import type { LanguageModelV3CallOptions, LanguageModelV3StreamPart } from '@ai-sdk/provider';
import { describe, expect, it, vi } from 'vitest';
import { createScriptedModel, echoInput, parseScript } from './scripted-model.ts';
import { collectChunks, scriptText, streamedText } from './test-helpers.ts';
import { createDefaultToolRegistry } from './tools.ts';

function script(value: Record<string, unknown>): string {
  return JSON.stringify({ script: value });
}

async function readAll(
  stream: ReadableStream<LanguageModelV3StreamPart>,
): Promise<LanguageModelV3StreamPart[]> {
  const parts: LanguageModelV3StreamPart[] = [];
  const reader = stream.getReader();
  for (let next = await reader.read(); !next.done; next = await reader.read()) parts.push(next.value);
  return parts;
}

function callOptions(
  text: string,
  extra: Partial<LanguageModelV3CallOptions> = {},
): LanguageModelV3CallOptions {
  return { prompt: [{ role: 'user', content: [{ type: 'text', text }] }], ...extra };
}

describe('parseScript', () => {
  it('applies the defaults of DESIGN §6', () => {
    expect(parseScript('{"script": {}}')).toEqual({ steps: 1, tokens: 5, delayMs: 0, tool: true });
  });

  it('returns null for text that is not a script', () => {
    expect(parseScript('hello')).toBeNull();
    expect(parseScript('{"not": "a script"}')).toBeNull();
    expect(parseScript('{broken json')).toBeNull();
    expect(parseScript('[1, 2]')).toBeNull();
  });

  it.each([
    [{ steps: -1 }, 'steps'],
    [{ steps: 1.5 }, 'steps'],
    [{ steps: 101 }, 'steps'],
    [{ tokens: 100_001 }, 'tokens'],
    [{ delayMs: 60_001 }, 'delayMs'],
    [{ tool: 'not a name!' }, 'tool'],
    [{ tool: 5 }, 'tool'],
    [{ toolInput: [1] }, 'toolInput'],
    [{ echoInput: 'yes' }, 'echoInput'],
    [{ failAtStep: 0 }, 'failAtStep'],
    [{ stpes: 2 }, 'stpes'],
    [{ usage: { input: -1 } }, 'usage.input'],
    [{ usage: { output: 1.5 } }, 'usage.output'],
    [{ usage: { inptu: 5 } }, 'usage'],
  ])('rejects the invalid script %j with an error naming the field', (value, field) => {
    expect(() => parseScript(script(value))).toThrow(new RegExp(`Invalid script \\(.*${field}`));
  });
});

describe('createScriptedModel', () => {
  it('implements LanguageModelV3 as provider outrun', () => {
    const model = createScriptedModel();
    expect(model).toMatchObject({ specificationVersion: 'v3', provider: 'outrun', modelId: 'scripted' });
    expect(model.supportedUrls).toEqual({});
    expect(createScriptedModel({ modelId: 'other' }).modelId).toBe('other');
  });

  it('streams exactly the scripted deltas of every step through streamText', async () => {
    const chunks = await collectChunks(script({ steps: 3, tokens: 4 }));
    expect(streamedText(chunks)).toBe(scriptText([1, 2, 3], 4));
    expect(streamedText(chunks).startsWith('s1t0 s1t1 s1t2 s1t3 s2t0 ')).toBe(true);
    expect(chunks.filter((chunk) => chunk.type === 'finish-step')).toHaveLength(3);
    expect(chunks.filter((chunk) => chunk.type === 'text-start')).toHaveLength(3);
    expect(chunks.at(-1)).toEqual({ type: 'finish', finishReason: 'stop' });
  });

  it('ends every step but the last with an echo call whose output is its input', async () => {
    const chunks = await collectChunks(script({ steps: 3, tokens: 1 }));
    const calls = chunks.filter((chunk) => chunk.type === 'tool-input-available');
    const outputs = chunks.filter((chunk) => chunk.type === 'tool-output-available');
    expect(calls.map((chunk) => [chunk.toolName, chunk.input])).toEqual([
      ['echo', { step: 1 }],
      ['echo', { step: 2 }],
    ]);
    expect(outputs.map((chunk) => chunk.output)).toEqual([{ step: 1 }, { step: 2 }]);
  });

  it('streams all steps without tool calls when tool is false', async () => {
    const chunks = await collectChunks(script({ steps: 2, tokens: 2, tool: false }));
    // Without a tool call streamText stops after the first step, like with any model.
    expect(streamedText(chunks)).toBe(scriptText([1], 2));
    expect(chunks.some((chunk) => chunk.type === 'tool-input-available')).toBe(false);
  });

  it('fails at failAtStep with an error chunk and no text of that step', async () => {
    const chunks = await collectChunks(script({ steps: 3, tokens: 2, failAtStep: 2 }));
    expect(streamedText(chunks)).toBe(scriptText([1], 2));
    expect(chunks.map((chunk) => chunk.type).slice(-3)).toEqual([
      'tool-output-available',
      'finish-step',
      'error',
    ]);
  });

  it('does not retry a failing step', async () => {
    const model = createScriptedModel();
    let calls = 0;
    const counting = {
      ...model,
      doStream: (options: LanguageModelV3CallOptions) => {
        calls++;
        return model.doStream(options);
      },
    };
    await collectChunks(script({ failAtStep: 1 }), { model: counting });
    expect(calls).toBe(1);
  });

  it('fails the stream with a clear error for an invalid script', async () => {
    const errors: unknown[] = [];
    const result = streamText({
      model: createScriptedModel(),
      prompt: script({ steps: -1 }),
      onError: ({ error }) => void errors.push(error),
    });
    const chunks = [];
    for await (const chunk of result.toUIMessageStream()) chunks.push(chunk);
    expect(chunks.map((chunk) => chunk.type)).toEqual(['start', 'error']);
    expect(String(errors[0])).toMatch(/Invalid script \(steps/);
  });

  it('stops with an abort chunk and no further text when aborted mid-step', async () => {
    const controller = new AbortController();
    const chunks = await collectChunks(script({ steps: 2, tokens: 1_000, delayMs: 5 }), {
      abortSignal: controller.signal,
      onChunk: (chunk) => {
        if (chunk.type === 'text-delta' && chunk.delta === 's1t1 ') controller.abort();
      },
    });
    expect(streamedText(chunks)).toBe('s1t0 s1t1 ');
    expect(chunks.map((chunk) => chunk.type).slice(-2)).toEqual(['text-delta', 'abort']);
  });

  it('interrupts a long delay when aborted instead of waiting it out', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    // A 60 s delay per delta: the test would time out if the delay ignored the signal.
    const chunks = await collectChunks(script({ tokens: 3, delayMs: 60_000 }), {
      abortSignal: controller.signal,
    });
    expect(streamedText(chunks)).toBe('');
    expect(chunks.at(-1)).toEqual({ type: 'abort', reason: 'This operation was aborted' });
  });

  it('rejects the stream with the abort reason when the signal aborts during a delay', async () => {
    const controller = new AbortController();
    const { stream } = await createScriptedModel().doStream(
      callOptions(script({ tokens: 3, delayMs: 10_000 }), { abortSignal: controller.signal }),
    );
    setTimeout(() => controller.abort(), 10);
    await expect(readAll(stream)).rejects.toMatchObject({ name: 'AbortError' });
  });

  it("listens to the caller's signal once per stream, not once per delta, and stops listening at its end", async () => {
    const controller = new AbortController();
    const add = vi.spyOn(controller.signal, 'addEventListener');
    const remove = vi.spyOn(controller.signal, 'removeEventListener');
    const { stream } = await createScriptedModel().doStream(
      callOptions(script({ tokens: 20, delayMs: 1 }), { abortSignal: controller.signal }),
    );
    const parts = await readAll(stream);
    expect(parts.filter((part) => part.type === 'text-delta')).toHaveLength(20);
    expect(add).toHaveBeenCalledTimes(1);
    expect(remove).toHaveBeenCalledTimes(1);
    expect(remove.mock.calls[0]![1]).toBe(add.mock.calls[0]![1]);
  });

  it('clears a pending delay when the stream is cancelled', async () => {
    vi.useFakeTimers();
    try {
      const { stream } = await createScriptedModel().doStream(
        callOptions(script({ tokens: 3, delayMs: 60_000 })),
      );
      const reader = stream.getReader();
      for (let index = 0; index < 3; index++) await reader.read(); // stream-start, response-metadata, text-start
      const pending = reader.read();
      await vi.waitFor(() => expect(vi.getTimerCount()).toBe(1));
      await reader.cancel();
      await expect(pending).resolves.toEqual({ done: true, value: undefined });
      await vi.waitFor(() => expect(vi.getTimerCount()).toBe(0));
    } finally {
      vi.useRealTimers();
    }
  });

  it('reports usage in the V3 shape with one output token per delta', async () => {
    const { stream } = await createScriptedModel().doStream(callOptions(script({ tokens: 7 })));
    const finish = (await readAll(stream)).find((part) => part.type === 'finish');
    expect(finish).toMatchObject({
      finishReason: { unified: 'stop', raw: 'stop' },
      usage: {
        inputTokens: { total: expect.any(Number), noCache: expect.any(Number), cacheRead: 0, cacheWrite: 0 },
        outputTokens: { total: 7, text: 7, reasoning: 0 },
      },
    });
  });

  it('reports the usage a script sets, each side defaulting on its own (DESIGN §6)', async () => {
    const finishOf = async (value: Record<string, unknown>) => {
      const { stream } = await createScriptedModel().doStream(callOptions(script(value)));
      return (await readAll(stream)).find((part) => part.type === 'finish');
    };
    expect(await finishOf({ tokens: 3, usage: { input: 120, output: 900 } })).toMatchObject({
      usage: { inputTokens: { total: 120, noCache: 120 }, outputTokens: { total: 900, text: 900 } },
    });
    // Without `input`, the estimate: a quarter of the prompt's characters.
    const outputOnly = script({ tokens: 3, usage: { output: 40 } });
    const estimate = Math.ceil(JSON.stringify(callOptions(outputOnly).prompt).length / 4);
    expect(await finishOf({ tokens: 3, usage: { output: 40 } })).toMatchObject({
      usage: { inputTokens: { total: estimate }, outputTokens: { total: 40 } },
    });
    expect(await finishOf({ tokens: 3, usage: { input: 7 } })).toMatchObject({
      usage: { inputTokens: { total: 7 }, outputTokens: { total: 3 } },
    });
  });

  it('counts steps from the tool results after the last user message', async () => {
    const model = createScriptedModel();
    const { stream } = await model.doStream({
      prompt: [
        { role: 'user', content: [{ type: 'text', text: script({ steps: 5, tokens: 1 }) }] },
        { role: 'assistant', content: [{ type: 'tool-call', toolCallId: 'a', toolName: 'echo', input: {} }] },
        {
          role: 'tool',
          content: [
            { type: 'tool-result', toolCallId: 'a', toolName: 'echo', output: { type: 'json', value: {} } },
          ],
        },
        { role: 'user', content: [{ type: 'text', text: script({ steps: 2, tokens: 1 }) }] },
        { role: 'assistant', content: [{ type: 'tool-call', toolCallId: 'b', toolName: 'echo', input: {} }] },
        {
          role: 'tool',
          content: [
            { type: 'tool-result', toolCallId: 'b', toolName: 'echo', output: { type: 'json', value: {} } },
          ],
        },
      ],
    });
    const parts = await readAll(stream);
    expect(parts.filter((part) => part.type === 'text-delta').map((part) => part.delta)).toEqual(['s2t0 ']);
    expect(parts.find((part) => part.type === 'finish')).toMatchObject({ finishReason: { unified: 'stop' } });
  });

  it('answers through generateText as well', async () => {
    const result = await generateText({
      model: createScriptedModel(),
      tools: createDefaultToolRegistry().toolSet(),
      stopWhen: stepCountIs(10),
      prompt: script({ steps: 2, tokens: 2 }),
    });
    expect(result.steps.map((step) => step.text).join('')).toBe(scriptText([1, 2], 2));
    expect(result.totalUsage.outputTokens).toBe(4);
  });

  it('gives any other text a demo answer that calls current_time and quotes the time', async () => {
    const chunks = await collectChunks('Hello there');
    const call = chunks.find((chunk) => chunk.type === 'tool-input-available');
    const output = chunks.find((chunk) => chunk.type === 'tool-output-available');
    expect(call).toMatchObject({ toolName: 'current_time', input: {} });
    const { localTime } =
      output?.type === 'tool-output-available' ? (output.output as { localTime: string }) : {};
    const text = streamedText(chunks);
    expect(text).toContain(localTime);
    expect(text).toMatch(/close this tab/i);
    expect(text).toMatch(/stop/i);
    expect(chunks.filter((chunk) => chunk.type === 'finish-step')).toHaveLength(2);
    expect(chunks.filter((chunk) => chunk.type === 'text-delta').length).toBeGreaterThan(30);
  });

  it('calls the tool named in tool with toolInput, and stops calling it on the last step', async () => {
    const chunks = await collectChunks(
      script({ steps: 2, tokens: 1, tool: 'calculator', toolInput: { expression: '2 + 3' } }),
    );
    const calls = chunks.filter((chunk) => chunk.type === 'tool-input-available');
    expect(calls.map((chunk) => [chunk.toolName, chunk.input])).toEqual([
      ['calculator', { expression: '2 + 3' }],
    ]);
    const output = chunks.find((chunk) => chunk.type === 'tool-output-available');
    expect(output).toMatchObject({ output: { result: 5 } });
    expect(streamedText(chunks)).toBe(scriptText([1, 2], 1));
  });

  it('answers echoInput with one JSON line: system, message count, characters, tools and approvals', async () => {
    const text = script({ echoInput: true });
    const result = streamText({
      model: createScriptedModel(),
      system: 'You are terse.',
      tools: createDefaultToolRegistry().toolSet(),
      messages: [
        { role: 'user', content: 'first' },
        { role: 'assistant', content: 'ok' },
        { role: 'user', content: text },
      ],
    });
    const answer = JSON.parse(await result.text);
    expect(answer).toEqual({
      system: 'You are terse.',
      messages: 3,
      chars: 'You are terse.'.length + 'first'.length + 'ok'.length + text.length,
      tools: ['echo', 'current_time', 'calculator'],
      approvals: [],
    });
  });

  it('reports no system and no tools when none are given', async () => {
    const result = streamText({ model: createScriptedModel(), prompt: script({ echoInput: true }) });
    expect(JSON.parse(await result.text)).toMatchObject({
      system: null,
      messages: 1,
      tools: [],
      approvals: [],
    });
  });

  it('lists the tool approval responses the prompt carries', () => {
    const described = echoInput({
      prompt: [
        { role: 'user', content: [{ type: 'text', text: 'go' }] },
        {
          role: 'tool',
          content: [
            { type: 'tool-approval-response', approvalId: 'a1', approved: true },
            { type: 'tool-approval-response', approvalId: 'a2', approved: false },
          ],
        },
      ],
    });
    expect(described.approvals).toEqual([
      { approvalId: 'a1', approved: true },
      { approvalId: 'a2', approved: false },
    ]);
    expect(described).toMatchObject({ system: null, messages: 2, chars: 2 });
  });
});
