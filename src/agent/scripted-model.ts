import type {
  JSONValue,
  LanguageModelV3,
  LanguageModelV3CallOptions,
  LanguageModelV3Content,
  LanguageModelV3FinishReason,
  LanguageModelV3Prompt,
  LanguageModelV3StreamPart,
  LanguageModelV3Usage,
} from '@ai-sdk/provider';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { isSummaryRequest, summarizedMessageCount } from './compaction.ts';

/** Upper bounds of a script; larger values are rejected so a test cannot wedge a worker. */
export const SCRIPT_LIMITS = {
  steps: 100,
  tokens: 100_000,
  delayMs: 60_000,
  usageTokens: 1_000_000_000,
} as const;

const scriptSchema = z
  .object({
    steps: z.int().min(1).max(SCRIPT_LIMITS.steps).default(1),
    tokens: z.int().min(0).max(SCRIPT_LIMITS.tokens).default(5),
    delayMs: z.int().min(0).max(SCRIPT_LIMITS.delayMs).default(0),
    /** The tool every step but the last calls: a name, `true` for `echo`, `false` for none. */
    tool: z
      .union([
        z.boolean(),
        z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a tool name of letters, digits, "_" or "-"'),
      ])
      .default(true),
    /** The input of those tool calls. @default {"step": s} */
    toolInput: z.record(z.string(), z.json()).optional(),
    failAtStep: z.int().min(1).max(SCRIPT_LIMITS.steps).optional(),
    /** Answer with one JSON line describing the call (`EchoedInput`) instead of the scripted deltas. */
    echoInput: z.boolean().optional(),
    /** A context window in tokens: a longer prompt fails like a provider's "context length exceeded". */
    contextWindow: z.int().min(1).optional(),
    /** The usage every step reports, in place of the estimate (input) and the delta count (output). */
    usage: z
      .object({
        input: z.int().min(0).max(SCRIPT_LIMITS.usageTokens).optional(),
        output: z.int().min(0).max(SCRIPT_LIMITS.usageTokens).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** A validated script for the scripted model (DESIGN §6), defaults applied. */
export type Script = z.infer<typeof scriptSchema>;

/**
 * Reads a script from user text. Returns `null` when the text is not a JSON object with a `script` key
 * (it then gets the demo answer); throws an `Error` naming the bad field when the script is invalid.
 */
export function parseScript(text: string): Script | null {
  const trimmed = text.trim();
  if (!trimmed.startsWith('{')) return null;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !('script' in value)) {
    return null;
  }
  const result = scriptSchema.safeParse((value as { script: unknown }).script ?? {});
  if (!result.success) {
    const problems = result.error.issues
      .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : 'script'}: ${issue.message}`)
      .join('; ');
    throw new Error(
      `Invalid script (${problems}). Expected {"script": {"steps": 1-${SCRIPT_LIMITS.steps}, ` +
        `"tokens": 0-${SCRIPT_LIMITS.tokens}, "delayMs": 0-${SCRIPT_LIMITS.delayMs}, "tool": boolean or tool name, ` +
        `"toolInput": object, "failAtStep": integer, "echoInput": boolean, "contextWindow": integer, ` +
        `"usage": {"input": integer, "output": integer}}}.`,
    );
  }
  return result.data;
}

/** One model call of the scripted model: what to stream, how fast, and how the step ends. */
type StepPlan =
  | { kind: 'fail'; message: string }
  | {
      kind: 'answer';
      deltas: string[];
      delayMs: number;
      toolCall?: { toolName: string; input: JSONValue };
      /** The usage the step reports, where the script sets it. */
      usage?: { input?: number; output?: number };
    };

const DEMO_INTRO = 'Hi! Let me look at the clock first.';

function demoAnswer(time: string | undefined): string {
  const when = time ? `The time is ${time}.` : 'I could not read the clock, but that is fine.';
  return (
    `${when} I am the built-in scripted model, and this answer is running as an Outrun run on the server. ` +
    'Close this tab whenever you like: the run keeps going and every finished step is saved. ' +
    'Reopen the chat to follow it live from where you left off. ' +
    'Only the Stop button ends a run early.'
  );
}

/** Splits text into word deltas that concatenate back to the text exactly. */
function words(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [];
}

function textOf(content: ReadonlyArray<{ type: string; text?: string }>): string {
  return content.map((part) => (part.type === 'text' ? (part.text ?? '') : '')).join('');
}

/** Finds the time the `current_time` tool returned, in whichever output shape it came back. */
function toolResultTime(prompt: LanguageModelV3Prompt, from: number): string | undefined {
  for (const message of prompt.slice(from)) {
    if (message.role !== 'tool') continue;
    for (const part of message.content) {
      if (part.type !== 'tool-result' || part.toolName !== 'current_time') continue;
      const output = part.output;
      if (output.type === 'text') return output.value;
      if (output.type === 'json' && output.value !== null && typeof output.value === 'object') {
        const value = output.value as Record<string, JSONValue | undefined>;
        const time = value.localTime ?? value.iso;
        if (typeof time === 'string') {
          return typeof value.timeZone === 'string' ? `${time} (${value.timeZone})` : time;
        }
      }
    }
  }
  return undefined;
}

/** What `echoInput` answers: what the model received, so a test can see instructions and tools arrive. */
export interface EchoedInput {
  /** The system prompt (the agent's instructions), or null without one. */
  system: string | null;
  /** The number of prompt messages, system messages excluded. */
  messages: number;
  /** The total characters of the prompt's text: system, text and reasoning parts. */
  chars: number;
  /** The names of the tools offered to the model, in the order offered. */
  tools: string[];
  /**
   * The tool approval responses in the prompt. The AI SDK passes these on only for provider-executed
   * tools; an answered approval of a local tool reaches the model as that tool's result.
   */
  approvals: { approvalId: string; approved: boolean }[];
}

/** Describes a model call as `echoInput` answers it. */
export function echoInput(callOptions: Pick<LanguageModelV3CallOptions, 'prompt' | 'tools'>): EchoedInput {
  const systems: string[] = [];
  let messages = 0;
  let chars = 0;
  const approvals: EchoedInput['approvals'] = [];
  for (const message of callOptions.prompt) {
    if (message.role === 'system') {
      systems.push(message.content);
      chars += message.content.length;
      continue;
    }
    messages++;
    for (const part of message.content) {
      if (part.type === 'text' || part.type === 'reasoning') chars += part.text.length;
      else if (part.type === 'tool-approval-response') {
        approvals.push({ approvalId: part.approvalId, approved: part.approved });
      }
    }
  }
  return {
    system: systems.length > 0 ? systems.join('\n') : null,
    messages,
    chars,
    tools: (callOptions.tools ?? []).map((tool) => tool.name),
    approvals,
  };
}

/**
 * The answer to the compactor's summary request: deterministic, naming how many messages it summarizes
 * (from the request's heading, else the messages of the prompt).
 */
export function summaryAnswer(prompt: LanguageModelV3Prompt, userText: string): string {
  const count =
    summarizedMessageCount(userText) ?? prompt.filter((message) => message.role !== 'system').length;
  return `Scripted summary of ${count} messages.`;
}

function planStep(
  callOptions: Pick<LanguageModelV3CallOptions, 'prompt' | 'tools'>,
  demoDelayMs: number,
): StepPlan {
  const { prompt } = callOptions;
  const lastUserIndex = prompt.findLastIndex((message) => message.role === 'user');
  const lastUser = prompt[lastUserIndex];
  const userText = lastUser?.role === 'user' ? textOf(lastUser.content) : '';
  const system = prompt.find((message) => message.role === 'system');
  if (system?.role === 'system' && isSummaryRequest(system.content)) {
    return { kind: 'answer', deltas: words(summaryAnswer(prompt, userText)), delayMs: 0 };
  }
  const step = 1 + prompt.slice(lastUserIndex + 1).filter((message) => message.role === 'tool').length;
  const script = parseScript(userText);

  if (script === null) {
    if (step === 1) {
      return {
        kind: 'answer',
        deltas: words(DEMO_INTRO),
        delayMs: demoDelayMs,
        toolCall: { toolName: 'current_time', input: {} },
      };
    }
    return {
      kind: 'answer',
      deltas: words(demoAnswer(toolResultTime(prompt, lastUserIndex + 1))),
      delayMs: demoDelayMs,
    };
  }

  if (script.failAtStep === step) {
    return { kind: 'fail', message: `Scripted provider failure at step ${step} (failAtStep: ${step}).` };
  }
  const promptTokens = Math.ceil(echoInput(callOptions).chars / 4);
  if (script.contextWindow !== undefined && promptTokens > script.contextWindow) {
    return {
      kind: 'fail',
      message: `This model's maximum context length is ${script.contextWindow} tokens, but the prompt has ${promptTokens} (context_length_exceeded).`,
    };
  }
  const deltas = script.echoInput
    ? [JSON.stringify(echoInput(callOptions))]
    : Array.from({ length: script.tokens }, (_, index) => `s${step}t${index} `);
  const isLast = step >= script.steps;
  const toolName = script.tool === true ? 'echo' : script.tool;
  return {
    kind: 'answer',
    deltas,
    delayMs: script.delayMs,
    ...(script.usage ? { usage: script.usage } : {}),
    ...(toolName !== false && !isLast ? { toolCall: { toolName, input: script.toolInput ?? { step } } } : {}),
  };
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * Paces one stream's deltas: waits between them, and rejects a wait with the abort reason as soon as one of
 * `signals` aborts. One listener per signal for the stream's whole life, not one per delta: a listener added
 * and removed at every delta (on a signal joined with \`AbortSignal.any\`, as a run's is) cost the model more
 * per token than a provider's stream costs its caller. `close` removes the listeners.
 */
class Pacer {
  readonly #signals: AbortSignal[];
  #aborted: { reason: unknown } | null = null;
  #waiting: { timer: NodeJS.Timeout; reject: (reason: unknown) => void } | null = null;
  readonly #onAbort = (event: Event) => {
    this.#aborted ??= { reason: abortError(event.target as AbortSignal) };
    const waiting = this.#waiting;
    this.#waiting = null;
    if (!waiting) return;
    clearTimeout(waiting.timer);
    waiting.reject(this.#aborted.reason);
  };

  constructor(signals: (AbortSignal | undefined)[]) {
    this.#signals = signals.filter((signal): signal is AbortSignal => signal !== undefined);
    for (const signal of this.#signals) {
      if (signal.aborted) this.#aborted ??= { reason: abortError(signal) };
      else signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  wait(ms: number): Promise<void> {
    if (this.#aborted) return Promise.reject(this.#aborted.reason);
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting = null;
        resolve();
      }, ms);
      this.#waiting = { timer, reject };
    });
  }

  close(): void {
    for (const signal of this.#signals) signal.removeEventListener('abort', this.#onAbort);
    if (this.#waiting) clearTimeout(this.#waiting.timer);
    this.#waiting = null;
  }
}

/** A rough token count: one token per four characters of prompt text, like a typical tokenizer. */
function estimatePromptTokens(prompt: LanguageModelV3Prompt): number {
  return Math.max(1, Math.ceil(JSON.stringify(prompt).length / 4));
}

function usageOf(inputTokens: number, outputTokens: number): LanguageModelV3Usage {
  return {
    inputTokens: { total: inputTokens, noCache: inputTokens, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: outputTokens, text: outputTokens, reasoning: 0 },
  };
}

async function* streamParts(
  plan: Extract<StepPlan, { kind: 'answer' }>,
  options: { modelId: string; callId: string; inputTokens: number; pacer: Pacer },
): AsyncGenerator<LanguageModelV3StreamPart> {
  const { callId, pacer } = options;
  yield { type: 'stream-start', warnings: [] };
  yield {
    type: 'response-metadata',
    id: `scripted-${callId}`,
    modelId: options.modelId,
    timestamp: new Date(),
  };
  if (plan.deltas.length > 0) {
    const id = `text-${callId}`;
    yield { type: 'text-start', id };
    for (const delta of plan.deltas) {
      await pacer.wait(plan.delayMs);
      yield { type: 'text-delta', id, delta };
    }
    yield { type: 'text-end', id };
  }
  let finishReason: LanguageModelV3FinishReason = { unified: 'stop', raw: 'stop' };
  if (plan.toolCall) {
    const toolCallId = `call-${callId}`;
    const input = JSON.stringify(plan.toolCall.input);
    yield { type: 'tool-input-start', id: toolCallId, toolName: plan.toolCall.toolName };
    yield { type: 'tool-input-delta', id: toolCallId, delta: input };
    yield { type: 'tool-input-end', id: toolCallId };
    yield { type: 'tool-call', toolCallId, toolName: plan.toolCall.toolName, input };
    finishReason = { unified: 'tool-calls', raw: 'tool_calls' };
  }
  const usage = usageOf(plan.usage?.input ?? options.inputTokens, plan.usage?.output ?? plan.deltas.length);
  yield { type: 'finish', finishReason, usage };
}

/**
 * The built-in `scripted` model (DESIGN §6): deterministic answers for tests and a paced demo answer
 * for anything else. Needs no network and no key.
 */
export function createScriptedModel(
  options: {
    /** @default 'scripted' */
    modelId?: string;
    /** Delay between the words of the demo answer; about 60 words, so ~3 s in total. @default 50 */
    demoDelayMs?: number;
  } = {},
): LanguageModelV3 {
  const modelId = options.modelId ?? 'scripted';
  const demoDelayMs = options.demoDelayMs ?? 50;

  async function doStream(callOptions: LanguageModelV3CallOptions) {
    const { prompt, abortSignal } = callOptions;
    if (abortSignal?.aborted) throw abortError(abortSignal);
    const plan = planStep(callOptions, demoDelayMs);
    // A failing step throws before any part is streamed, the way a provider's HTTP error does.
    if (plan.kind === 'fail') throw new Error(plan.message);
    // Cancelling the stream also ends a pending delay, not only the caller's abort signal.
    const cancellation = new AbortController();
    const pacer = new Pacer([abortSignal, cancellation.signal]);
    const parts = streamParts(plan, {
      modelId,
      callId: randomUUID(),
      inputTokens: estimatePromptTokens(prompt),
      pacer,
    });
    const stream = new ReadableStream<LanguageModelV3StreamPart>({
      async pull(controller) {
        try {
          const next = await parts.next();
          if (next.done) {
            pacer.close();
            controller.close();
          } else controller.enqueue(next.value);
        } catch (error) {
          pacer.close();
          controller.error(error);
        }
      },
      async cancel() {
        cancellation.abort();
        pacer.close();
        await parts.return(undefined);
      },
    });
    return { stream };
  }

  return {
    specificationVersion: 'v3',
    provider: 'outrun',
    modelId,
    supportedUrls: {},
    doStream,
    async doGenerate(callOptions) {
      const { stream } = await doStream(callOptions);
      const content: LanguageModelV3Content[] = [];
      let finishReason: LanguageModelV3FinishReason = { unified: 'other', raw: undefined };
      let usage = usageOf(0, 0);
      const reader = stream.getReader();
      for (let next = await reader.read(); !next.done; next = await reader.read()) {
        const part = next.value;
        if (part.type === 'text-delta') {
          const last = content.at(-1);
          if (last?.type === 'text') last.text += part.delta;
          else content.push({ type: 'text', text: part.delta });
        } else if (part.type === 'tool-call') {
          content.push(part);
        } else if (part.type === 'finish') {
          finishReason = part.finishReason;
          usage = part.usage;
        }
      }
      return { content, finishReason, usage, warnings: [] };
    },
  };
}
