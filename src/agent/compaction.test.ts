import { APICallError, generateText, wrapLanguageModel, type ModelMessage, type ToolResultPart } from 'ai';
import { describe, expect, it } from 'vitest';
import {
  compactHistory,
  createModelSummarizer,
  defaultContextMaxTokens,
  estimateTokens,
  isContextOverflowError,
  shorten,
  summaryMessageText,
  COMPACTION_SYSTEM_PROMPT,
} from './compaction.ts';
import { previousSummaryOf, uptoMessageIdOf } from './compaction-store.ts';
import { createScriptedModel } from './scripted-model.ts';

/** A chat of `turns` user turns, each with a tool call whose output is `outputChars` long. */
function longHistory(turns: number, outputChars = 8_000): ModelMessage[] {
  const messages: ModelMessage[] = [];
  for (let turn = 1; turn <= turns; turn++) {
    messages.push({ role: 'user', content: [{ type: 'text', text: `question ${turn} ` + 'q'.repeat(400) }] });
    messages.push({
      role: 'assistant',
      content: [
        { type: 'text', text: `looking up ${turn}` },
        { type: 'tool-call', toolCallId: `call-${turn}`, toolName: 'search', input: { turn } },
      ],
    });
    messages.push({
      role: 'tool',
      content: [
        {
          type: 'tool-result',
          toolCallId: `call-${turn}`,
          toolName: 'search',
          output: { type: 'text', value: `result ${turn} ` + 'r'.repeat(outputChars) },
        },
      ],
    });
    messages.push({
      role: 'assistant',
      content: [{ type: 'text', text: `answer ${turn} ` + 'a'.repeat(400) }],
    });
  }
  return messages;
}

const lastTurns = (messages: ModelMessage[], turns: number) => {
  const userIndexes = messages.flatMap((message, index) => (message.role === 'user' ? [index] : []));
  return messages.slice(userIndexes.at(-turns));
};

describe('estimateTokens', () => {
  it('counts about one token per four characters', () => {
    expect(estimateTokens('a'.repeat(400))).toBe(100);
    const messages: ModelMessage[] = [{ role: 'user', content: 'x'.repeat(4_000) }];
    expect(estimateTokens(messages)).toBeGreaterThanOrEqual(1_000);
    expect(estimateTokens(messages)).toBeLessThan(1_020);
  });
});

describe('defaultContextMaxTokens', () => {
  it('is 0.7 of a known context window and 100k otherwise', () => {
    expect(defaultContextMaxTokens('openai:gpt-4o')).toBe(89_600);
    expect(defaultContextMaxTokens('anthropic:claude-sonnet-4-5')).toBe(140_000);
    expect(defaultContextMaxTokens('scripted')).toBe(100_000);
    expect(defaultContextMaxTokens(undefined)).toBe(100_000);
  });
});

describe('compactHistory', () => {
  it('returns the history itself and no compaction when it fits', async () => {
    const messages = longHistory(2, 100);
    const result = await compactHistory({ messages, maxTokens: 100_000 });
    expect(result.messages).toBe(messages);
    expect(result.compaction).toBeNull();
  });

  it('keeps a long history under maxTokens with the last turns intact, leaving the input untouched', async () => {
    const messages = longHistory(20);
    const snapshot = structuredClone(messages);
    const maxTokens = 12_000;
    const result = await compactHistory({ messages, maxTokens, keepLastTurns: 4 });
    expect(estimateTokens(result.messages)).toBeLessThanOrEqual(maxTokens);
    expect(lastTurns(result.messages, 4)).toEqual(lastTurns(messages, 4));
    expect(messages).toEqual(snapshot);
    expect(result.compaction).toMatchObject({
      tokensBefore: estimateTokens(messages),
      tokensAfter: estimateTokens(result.messages),
      summarized: 0,
      trigger: 'threshold',
    });
    expect(result.compaction!.trimmed).toBeGreaterThan(0);
    expect(result.summary).toBeNull();
  });

  it('puts the context budget before keepLastTurns: kept turns but the last are collapsed, then left out', async () => {
    const messages = longHistory(3, 10);
    const maxTokens = 400;
    expect(estimateTokens(lastTurns(messages, 1))).toBeLessThan(maxTokens);
    expect(estimateTokens(messages)).toBeGreaterThan(maxTokens);
    const result = await compactHistory({ messages, maxTokens, keepLastTurns: 4 });
    expect(estimateTokens(result.messages)).toBeLessThanOrEqual(maxTokens);
    // The turn being answered is whole.
    expect(lastTurns(result.messages, 1)).toEqual(lastTurns(messages, 1));
    expect(result.compaction!.trimmed).toBeGreaterThan(0);
  });

  it('leaves out the tool outputs of a kept turn before it collapses it, so its calls stay', async () => {
    // A follow-up run's prompt: its parent's turn (three calls, each with a long output), then its own message.
    const parent = longHistory(3).filter((message) => message.role !== 'user');
    const messages: ModelMessage[] = [
      { role: 'user', content: [{ type: 'text', text: 'look up three things' }] },
      ...parent,
      { role: 'user', content: [{ type: 'text', text: 'Continue where you left off.' }] },
    ];
    const calls = (result: ModelMessage[]) =>
      result.flatMap((message) =>
        message.role === 'assistant' && typeof message.content !== 'string'
          ? message.content.filter((part) => part.type === 'tool-call')
          : [],
      );
    // About 6,600 tokens whole, 2,100 with the outputs shortened to their head and tail, 650 with them left out.
    const result = await compactHistory({ messages, maxTokens: 800, keepLastTurns: 4 });
    expect(result.compaction!.tokensAfter).toBeLessThanOrEqual(800);
    expect(result.messages).toHaveLength(messages.length);
    expect(calls(result.messages)).toEqual(calls(messages));
    expect(result.messages.filter((message) => message.role === 'tool')).toEqual(
      [1, 2, 3].map((turn) => ({
        role: 'tool',
        content: [
          {
            type: 'tool-result',
            toolCallId: `call-${turn}`,
            toolName: 'search',
            output: { type: 'text', value: '[tool output left out to fit the context budget]' },
          },
        ],
      })),
    );
    // Each output was shortened (stage 4), then left out: three messages changed, each counted once.
    expect(result.compaction!.trimmed).toBe(3);
    expect(result.messages.at(-1)).toEqual(messages.at(-1));
  });

  it('cuts nothing of the turn being answered but long tool outputs: over budget, it goes as it is', async () => {
    const messages = longHistory(1, 10);
    const result = await compactHistory({ messages, maxTokens: 100, keepLastTurns: 4 });
    expect(estimateTokens(messages)).toBeGreaterThan(100);
    // Its one tool output is shorter than a notice would be.
    expect(result.messages).toEqual(messages);
    expect(result.compaction).toBeNull();
    expect(result.summary).toBeNull();
  });

  it('leaves out the tool outputs of the turn being answered once shortening them is not enough, its calls kept', async () => {
    // One turn of six steps, each calling a tool that returned 8,000 characters: the run's own work.
    const user: ModelMessage = { role: 'user', content: [{ type: 'text', text: 'read the six pages' }] };
    const step = (index: number): ModelMessage[] => [
      {
        role: 'assistant',
        content: [
          { type: 'tool-call', toolCallId: `call-${index}`, toolName: 'read', input: { page: index } },
        ],
      },
      {
        role: 'tool',
        content: [
          {
            type: 'tool-result',
            toolCallId: `call-${index}`,
            toolName: 'read',
            output: { type: 'text', value: 'p'.repeat(8_000) },
          },
        ],
      },
    ];
    const messages = [user, ...[1, 2, 3, 4, 5, 6].flatMap(step)];
    const outputs = (result: ModelMessage[]) =>
      result.flatMap((message) =>
        message.role === 'tool'
          ? message.content.flatMap((part) => (part.type === 'tool-result' ? [part.output] : []))
          : [],
      );

    // Shortened to their head and tail, six outputs are about 3,000 tokens: left out, the calls stay.
    const leftOut = await compactHistory({ messages, maxTokens: 600 });
    expect(leftOut.messages).toHaveLength(messages.length);
    expect(outputs(leftOut.messages)).toEqual(
      Array(6).fill({ type: 'text', value: '[tool output left out to fit the context budget]' }),
    );
    expect(leftOut.compaction!.tokensAfter).toBeLessThanOrEqual(600);

    // The input is never changed.
    expect(outputs(messages)).toEqual(Array(6).fill({ type: 'text', value: 'p'.repeat(8_000) }));
  });

  it('reports leaving out a summary the prompt held, so the shorter prompt is the one sent', async () => {
    // A step's prompt holds the summary the run's history was fitted with; alone it is over the budget.
    const summary = summaryMessageText('x'.repeat(4_000), 5);
    const messages: ModelMessage[] = [
      { role: 'user', content: summary },
      { role: 'user', content: [{ type: 'text', text: 'hi' }] },
    ];
    const result = await compactHistory({ messages, maxTokens: 1_000, keepLastTurns: 1 });
    expect(result.messages).toEqual([messages[1]]);
    expect(result.compaction).toMatchObject({ trimmed: 1 });
    expect(result.tokens).toBeLessThanOrEqual(1_000);
  });

  it('keeps the turn being answered with keepLastTurns 0, which keeps no earlier turn whole', async () => {
    const messages = longHistory(3);
    const result = await compactHistory({ messages, maxTokens: 1_000, keepLastTurns: 0 });
    // The earlier turns are collapsed or left out; the last one keeps its call and its output's head and tail.
    expect(result.messages.slice(-4).map((message) => message.role)).toEqual([
      'user',
      'assistant',
      'tool',
      'assistant',
    ]);
    expect(result.messages.at(-4)).toEqual(messages.at(-4));
    expect(result.tokens).toBeLessThanOrEqual(1_000);
  });

  it('shortens a tool output of many short text items as one text, keeping what is not text', async () => {
    const items = Array.from({ length: 200 }, (_, index) => ({
      type: 'text' as const,
      text: `row ${index} `.repeat(8),
    }));
    const image = { type: 'media' as const, data: 'AAAA', mediaType: 'image/png' };
    const turn = (question: string, id: string): ModelMessage[] => [
      { role: 'user', content: [{ type: 'text', text: question }] },
      { role: 'assistant', content: [{ type: 'tool-call', toolCallId: id, toolName: 'search', input: {} }] },
      {
        role: 'tool',
        content: [
          {
            type: 'tool-result',
            toolCallId: id,
            toolName: 'search',
            output: { type: 'content', value: [...items, image] },
          },
        ],
      },
      { role: 'assistant', content: [{ type: 'text', text: 'found them' }] },
    ];
    const messages = [...turn('search the rows', 'call-1'), ...turn('and again', 'call-2')];
    // Each item is under the limit; together they are about 17,000 characters as sent, in each turn.
    const result = await compactHistory({
      messages,
      maxTokens: 6_000,
      keepLastTurns: 1,
      toolOutputMaxChars: 1_000,
    });
    expect(result.compaction).toMatchObject({ trimmed: 1 });
    const output = (result.messages[2] as Extract<ModelMessage, { role: 'tool' }>)
      .content[0] as ToolResultPart;
    expect(output.output).toMatchObject({ type: 'content' });
    const value = (output.output as { value: { type: string; text?: string }[] }).value;
    expect(value).toHaveLength(2);
    expect(value[0]!.text).toMatch(/^row 0 row 0 .*\n\[… \d+ characters trimmed …\]\n.*row 199 $/s);
    expect(value[0]!.text!.length).toBeLessThan(1_100);
    expect(value[1]).toEqual(image);
    // The turn being answered is whole: it fits.
    expect(result.messages.slice(4)).toEqual(messages.slice(4));
  });

  it('leaves out an image a tool returned in the turn being answered, measured as sent', async () => {
    const messages: ModelMessage[] = [
      { role: 'user', content: [{ type: 'text', text: 'take a screenshot' }] },
      {
        role: 'assistant',
        content: [{ type: 'tool-call', toolCallId: 'call-1', toolName: 'screenshot', input: {} }],
      },
      {
        role: 'tool',
        content: [
          {
            type: 'tool-result',
            toolCallId: 'call-1',
            toolName: 'screenshot',
            output: {
              type: 'content',
              value: [{ type: 'media', data: 'A'.repeat(20_000), mediaType: 'image/png' }],
            },
          },
        ],
      },
    ];
    const result = await compactHistory({ messages, maxTokens: 500 });
    expect(JSON.stringify(result.messages)).toContain('[tool output left out to fit the context budget]');
    expect(result.tokens).toBeLessThanOrEqual(500);
  });

  it('counts what JSON escapes, as a provider is sent it', () => {
    for (const text of ['plain', 'a "quoted" \\ path', 'lines\n\n\r\t', 'control \u0001\u001f']) {
      expect(estimateTokens(text.repeat(100))).toBe(Math.ceil(text.repeat(100).length / 4));
      const message: ModelMessage = { role: 'user', content: [{ type: 'text', text: text.repeat(100) }] };
      expect(estimateTokens(message)).toBe(Math.ceil(JSON.stringify(message).length / 4));
    }
  });

  it('counts fixed tokens (the instructions) against the budget and in its report', async () => {
    const messages = longHistory(4, 10);
    const alone = estimateTokens(messages);
    expect(await compactHistory({ messages, maxTokens: alone })).toMatchObject({ compaction: null });
    const result = await compactHistory({ messages, maxTokens: alone, fixedTokens: 300 });
    expect(result.compaction).toMatchObject({ tokensBefore: alone + 300 });
    expect(result.compaction!.tokensAfter).toBeLessThanOrEqual(alone);
    expect(result.compaction!.tokensAfter).toBe(300 + estimateTokens(result.messages));
  });

  it('first shortens old tool outputs to head and tail with a marker', async () => {
    const messages = longHistory(6);
    // Enough room for everything but the full tool outputs of the two oldest turns.
    const maxTokens = estimateTokens(messages) - 3_000;
    const result = await compactHistory({ messages, maxTokens, keepLastTurns: 4, toolOutputMaxChars: 1_000 });
    const tool = result.messages[2] as Extract<ModelMessage, { role: 'tool' }>;
    const output = (tool.content[0] as { output: { type: string; value: string } }).output;
    expect(output.type).toBe('text');
    expect(output.value.startsWith('result 1 rrr')).toBe(true);
    expect(output.value.endsWith('rrr')).toBe(true);
    expect(output.value).toMatch(/\[… \d+ characters trimmed …\]/);
    const removed = Number(/\[… (\d+) characters trimmed …\]/.exec(output.value)![1]);
    expect(removed).toBe(`result 1 `.length + 8_000 - 1_000);
    // Nothing else had to change: the same number of messages, the turns not collapsed.
    expect(result.messages).toHaveLength(messages.length);
    expect(result.compaction).toMatchObject({ trimmed: 2, summarized: 0 });
    expect(result.compaction!.tokensAfter).toBeLessThanOrEqual(maxTokens);
  });

  it('collapses old turns to their text once trimmed outputs are not enough', async () => {
    const messages = longHistory(8);
    const result = await compactHistory({ messages, maxTokens: 6_500, keepLastTurns: 2 });
    const old = result.messages.slice(0, result.messages.length - 8);
    expect(old.some((message) => message.role === 'tool')).toBe(false);
    expect(old[0]).toEqual({ role: 'user', content: 'question 1 ' + 'q'.repeat(400) });
    expect(old[1]).toEqual({ role: 'assistant', content: 'looking up 1\n\nanswer 1 ' + 'a'.repeat(400) });
    expect(lastTurns(result.messages, 2)).toEqual(lastTurns(messages, 2));
  });

  it('replaces the oldest turns by one summary made with the scripted model', async () => {
    const messages = longHistory(10);
    const summarize = createModelSummarizer({ model: createScriptedModel() });
    const result = await compactHistory({ messages, maxTokens: 12_000, keepLastTurns: 4, summarize });
    expect(result.messages[0]).toEqual({
      role: 'user',
      content: '[Summary of the 24 earlier messages of this conversation]\nScripted summary of 24 messages.',
    });
    expect(result.messages.slice(1)).toEqual(lastTurns(messages, 4));
    expect(result.compaction).toMatchObject({ summarized: 24, trimmed: 0 });
    expect(result.summary).toEqual({ uptoIndex: 24, summary: 'Scripted summary of 24 messages.' });
  });

  it('holds the summary request to the context budget, leaving out the transcript’s oldest lines', async () => {
    const messages = longHistory(10);
    const prompts: string[] = [];
    const model = wrapLanguageModel({
      model: createScriptedModel(),
      middleware: {
        specificationVersion: 'v3',
        transformParams: async ({ params }) => {
          prompts.push(JSON.stringify(params.prompt));
          return params;
        },
      },
    });
    // The six older turns' transcript is about 4,500 tokens (each tool output shown as 1,000 characters).
    const summarize = createModelSummarizer({ model, maxInputTokens: 1_500 });
    const result = await compactHistory({ messages, maxTokens: 1_500, keepLastTurns: 1, summarize });
    expect(prompts).toHaveLength(1);
    expect(Math.ceil(prompts[0]!.length / 4)).toBeLessThanOrEqual(1_500);
    expect(prompts[0]).toMatch(/oldest lines left out to fit the context budget/);
    expect(prompts[0]).toContain('question 9 '); // the newest lines are the ones kept
    // The summary still stands for every older message.
    expect(result.compaction).toMatchObject({ summarized: 36 });

    // Held to it as sent, whatever the budget: each request the model got is within its own.
    for (const budget of [150, 300, 600, 1_000]) {
      const sent = prompts.length;
      const fitted = createModelSummarizer({ model, maxInputTokens: budget });
      await compactHistory({ messages, maxTokens: 1_500, keepLastTurns: 1, summarize: fitted });
      for (const prompt of prompts.slice(sent))
        expect(Math.ceil(prompt.length / 4)).toBeLessThanOrEqual(budget);
    }
    prompts.length = 1;

    // A budget that cannot hold even the newest line makes no call: the turns are collapsed instead.
    const tiny = createModelSummarizer({ model, maxInputTokens: 100 });
    const collapsed = await compactHistory({ messages, maxTokens: 1_500, keepLastTurns: 1, summarize: tiny });
    expect(prompts).toHaveLength(1);
    expect(collapsed.compaction).toMatchObject({ summarized: 0 });
  });

  it('cuts a summary longer than asked for to its allowance', async () => {
    // A provider that ignores maxOutputTokens and answers 20,000 characters.
    const verbose = wrapLanguageModel({
      model: createScriptedModel(),
      middleware: {
        specificationVersion: 'v3',
        wrapGenerate: async ({ doGenerate }) => {
          const result = await doGenerate();
          return { ...result, content: [{ type: 'text', text: 'word '.repeat(4_000) }] };
        },
      },
    });
    const summarize = createModelSummarizer({ model: verbose, maxOutputTokens: 100 });
    expect((await summarize(longHistory(2))).length).toBeLessThanOrEqual(400);
  });

  it('ends a summary call that has not answered after timeoutMs, and collapses the turns instead', async () => {
    let aborted = false;
    const silent = wrapLanguageModel({
      model: createScriptedModel(),
      middleware: {
        specificationVersion: 'v3',
        // A provider that keeps the request open and never answers, until the call is aborted.
        wrapGenerate: ({ params }) =>
          new Promise((_resolve, reject) => {
            params.abortSignal?.addEventListener('abort', () => {
              aborted = true;
              reject(params.abortSignal!.reason);
            });
          }),
      },
    });
    const summarize = createModelSummarizer({ model: silent, timeoutMs: 200 });
    const started = performance.now();
    const result = await compactHistory({ messages: longHistory(10), maxTokens: 12_000, summarize });
    expect(aborted).toBe(true);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(result.compaction).toMatchObject({ summarized: 0 });
    expect(result.compaction!.tokensAfter).toBeLessThanOrEqual(12_000);
  });

  it('reuses a previous summary before making a new one', async () => {
    const messages = longHistory(10, 200);
    let calls = 0;
    const summarize = async () => {
      calls++;
      return 'new summary';
    };
    const maxTokens = estimateTokens(messages) - 1_000;
    const result = await compactHistory({
      messages,
      maxTokens,
      keepLastTurns: 2,
      summarize,
      previousSummary: { uptoIndex: 16, summary: 'earlier summary' },
      trigger: 'context_overflow',
    });
    expect(calls).toBe(0);
    expect(result.messages[0]).toMatchObject({ content: expect.stringContaining('earlier summary') });
    expect(result.compaction).toMatchObject({ summarized: 16, trigger: 'context_overflow' });
    expect(result.summary).toBeNull();
  });

  it('counts the messages a stored summary stood for as left out when the summary no longer fits', async () => {
    const messages = longHistory(6);
    const kept = messages.slice(16);
    const result = await compactHistory({
      messages,
      maxTokens: estimateTokens(kept) + 200,
      keepLastTurns: 2,
      previousSummary: { uptoIndex: 16, summary: 's'.repeat(20_000) },
    });
    expect(result.messages).toEqual(kept);
    // The 16 messages the summary stood for, left out with it (four of them shortened first: counted once).
    expect(result.compaction).toMatchObject({ trimmed: 16, summarized: 0 });
  });

  it('falls back to collapsing when the summarizer fails', async () => {
    const messages = longHistory(8);
    const result = await compactHistory({
      messages,
      maxTokens: 5_000,
      keepLastTurns: 2,
      summarize: async () => {
        throw new Error('provider down');
      },
    });
    expect(result.summary).toBeNull();
    expect(estimateTokens(result.messages)).toBeLessThanOrEqual(5_000);
  });
});

describe('the scripted model as summarizer', () => {
  it('answers a summary request with a deterministic summary naming the message count', async () => {
    const { text } = await generateText({
      model: createScriptedModel(),
      system: COMPACTION_SYSTEM_PROMPT,
      prompt: 'Conversation (7 messages):\n\nUser: hi',
    });
    expect(text).toBe('Scripted summary of 7 messages.');
  });
});

describe('stored summaries map to model messages through user messages', () => {
  it('finds the last covered message and maps it back to the same index', () => {
    const messages = longHistory(3, 10);
    const stored = [
      { id: 'm1', role: 'user' },
      { id: 'm2', role: 'assistant' },
      { id: 'm3', role: 'user' },
      { id: 'm4', role: 'assistant' },
      { id: 'm5', role: 'user' },
      { id: 'm6', role: 'assistant' },
    ];
    expect(uptoMessageIdOf({ storedMessages: stored, modelMessages: messages, uptoIndex: 8 })).toBe('m4');
    expect(
      previousSummaryOf({
        record: { uptoMessageId: 'm4', summary: 's' },
        storedMessages: stored,
        modelMessages: messages,
      }),
    ).toEqual({ uptoIndex: 8, summary: 's' });
  });
});

describe('shorten', () => {
  it('keeps head and tail and never splits a surrogate pair', () => {
    expect(shorten('abcdefghij', 4)).toBe('ab\n[… 6 characters trimmed …]\nij');
    const emoji = '😀'.repeat(10);
    const cut = shorten(emoji, 5);
    expect(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(cut)).toBe(false);
  });
});

describe('isContextOverflowError', () => {
  it('recognizes OpenAI, Anthropic and generic context-length errors', () => {
    const openai = new APICallError({
      message: "This model's maximum context length is 128000 tokens.",
      url: 'https://example.invalid',
      requestBodyValues: {},
      statusCode: 400,
      responseBody: '{"error":{"code":"context_length_exceeded"}}',
      data: { error: { code: 'context_length_exceeded' } },
    });
    expect(isContextOverflowError(openai)).toBe(true);
    expect(isContextOverflowError(new Error('prompt is too long: 210000 tokens > 200000 maximum'))).toBe(
      true,
    );
    expect(
      isContextOverflowError({ error: { type: 'invalid_request_error', message: 'prompt is too long' } }),
    ).toBe(true);
    expect(isContextOverflowError(new Error('failed', { cause: { code: 'context_length_exceeded' } }))).toBe(
      true,
    );
    expect(
      isContextOverflowError({ errors: [new Error('x'), new Error('Input exceeds the context window')] }),
    ).toBe(true);
  });

  it('does not mistake rate limits or other failures for an overflow', () => {
    expect(isContextOverflowError(new Error('Rate limit reached: too many tokens per minute'))).toBe(false);
    expect(isContextOverflowError(new Error('Scripted provider failure at step 1'))).toBe(false);
    expect(isContextOverflowError(null)).toBe(false);
  });
});
