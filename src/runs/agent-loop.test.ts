import { describe, expect, it } from 'vitest';
import { createScriptedModel } from '../agent/scripted-model.ts';
import { createDefaultToolRegistry } from '../agent/tools.ts';
import type { RunChunk } from '../protocol/chunks.ts';
import { MessageProjector } from '../protocol/message-projector.ts';
import type { RunEventWriter } from '../stream/event-log.ts';
import { runAgentLoop, type AgentLoopResult } from './agent-loop.ts';
import { BudgetMeter } from './budget.ts';

const NOTHING_SPENT = { steps: 0, inputTokens: 0, outputTokens: 0, costUsd: 0, runningMs: 0 };

/** A writer that keeps what is appended, every event durable at once. */
class MemoryWriter {
  readonly chunks: RunChunk[] = [];
  append(chunk: RunChunk): number {
    this.chunks.push(JSON.parse(JSON.stringify(chunk)) as RunChunk);
    return this.chunks.length;
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
}

/** One execution of the loop over `text` with the built-in tools (or `tools`), and what it appended. */
async function loop(options: {
  text: string;
  tools?: string[];
}): Promise<{ result: AgentLoopResult; chunks: RunChunk[]; projector: MessageProjector }> {
  const writer = new MemoryWriter();
  const projector = new MessageProjector();
  const registry = createDefaultToolRegistry();
  const all = registry.toolSet();
  const tools = options.tools
    ? Object.fromEntries(Object.entries(all).filter(([name]) => options.tools!.includes(name)))
    : all;
  const result = await runAgentLoop({
    model: createScriptedModel({ demoDelayMs: 0 }),
    messages: [{ role: 'user', content: options.text }],
    tools,
    toolContext: { runId: 'run', chatId: 'chat', workspaceId: 'workspace', userId: 'user', agentId: null },
    maxSteps: 8,
    stepsDone: 0,
    projector,
    messageId: 'message',
    resumed: false,
    writer: writer as unknown as RunEventWriter,
    signal: new AbortController().signal,
    keepAbortChunk: () => true,
    meter: new BudgetMeter({ budget: {}, price: null, spent: NOTHING_SPENT }),
    onBudgetCut: () => {},
    recordStep: async () => {},
  });
  return { result, chunks: writer.chunks, projector };
}

function projectionOf(chunks: RunChunk[]): unknown {
  const projector = new MessageProjector();
  for (const chunk of chunks) projector.push(chunk);
  return JSON.parse(JSON.stringify(projector.parts()));
}

const script = (value: Record<string, unknown>) => JSON.stringify({ script: value });

describe('runAgentLoop', () => {
  it('projects every chunk it appends, its own data-budget after each step included', async () => {
    const { chunks, projector } = await loop({ text: script({ steps: 3, tokens: 2 }) });
    const parts = JSON.parse(JSON.stringify(projector.parts())) as { type: string }[];
    expect(parts).toEqual(projectionOf(chunks));
    expect(parts.filter((part) => part.type === 'data-budget')).toHaveLength(3);
  });

  it('goes on after the model called a tool the run does not have, without counting it a model error', async () => {
    const { result, chunks } = await loop({ text: script({ steps: 2, tokens: 1, tool: 'nope' }) });
    expect(result.errorText).toBeNull();
    expect(result.stepsDone).toBe(2);
    const toolError = chunks.find(
      (chunk) => chunk.type === 'tool-output-error' || chunk.type === 'tool-input-error',
    );
    expect(toolError).toMatchObject({ errorText: expect.stringContaining('nope') });
    expect(chunks.some((chunk) => chunk.type === 'error')).toBe(false);
  });

  it('goes on after a tool call the run has no such tool for, in the default script', async () => {
    const { result } = await loop({ text: script({ steps: 2, tokens: 1 }), tools: ['current_time'] });
    expect(result.errorText).toBeNull();
    expect(result.stepsDone).toBe(2);
  });

  it('reports a failing model as a model error, with its error chunk in the stream', async () => {
    const { result, chunks } = await loop({ text: script({ steps: 3, tokens: 1, failAtStep: 2 }) });
    expect(result).toMatchObject({
      errorText: expect.stringContaining('failAtStep'),
      contextOverflow: false,
    });
    expect(chunks.filter((chunk) => chunk.type === 'error')).toEqual([
      { type: 'error', errorText: result.errorText },
    ]);
  });
});
