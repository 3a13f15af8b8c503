import {
  stepCountIs,
  streamText,
  type LanguageModel,
  type ModelMessage,
  type ToolSet,
  type UIMessage,
} from 'ai';
import type { MessageProjector } from '../protocol/message-projector.ts';
import type { RunToolContext } from '../agent/tool-context.ts';
import type { ModelOptions } from '../protocol/agent.ts';
import type { RunEventWriter } from '../stream/event-log.ts';
import type { RunUsage } from './run-object.ts';

/** A finished step, ready to be recorded once its events are durable. */
export interface FinishedStep {
  step: number;
  parts: UIMessage['parts'];
  usage: RunUsage | null;
  lastSeq: number;
  startedAt: Date;
}

export interface AgentLoopOptions {
  model: LanguageModel;
  messages: ModelMessage[];
  tools: ToolSet;
  /** The system prompt (the agent's instructions). */
  system?: string;
  /** What tools learn about the run calling them. */
  toolContext: RunToolContext;
  /** Model call settings (temperature and the like), spread into `streamText`. */
  callOptions?: ModelOptions;
  /** Steps the loop may still take. */
  maxSteps: number;
  /** Steps earlier executions finished (0 for a new run). */
  stepsDone: number;
  /** The projection so far (a resumed run's is rebuilt from its log). */
  projector: MessageProjector;
  /** The assistant message's id, used as the stream's message id. */
  messageId: string;
  /** Whether the stream already has its `start` (a resumed run). */
  resumed: boolean;
  writer: RunEventWriter;
  signal: AbortSignal;
  /** Whether the SDK's `abort` chunk belongs in the stream (a stop); a run handed back continues instead. */
  keepAbortChunk: () => boolean;
  /** Records a finished step; called in order, each after the step's events are durable. */
  recordStep: (step: FinishedStep) => Promise<void>;
}

export interface AgentLoopResult {
  /** The model or a tool failed; its message for a person. */
  errorText: string | null;
  /** The stream ended with the SDK's own `abort` chunk. */
  sawAbort: boolean;
  stepsDone: number;
  usages: RunUsage[];
}

/**
 * One execution of the agent loop: `streamText` with the run's abort signal (never an HTTP socket's),
 * every chunk appended to the event log as it arrives, each finished step recorded in order without
 * holding up the stream. Throws when a step could not be recorded (the run's progress would be lost).
 */
export async function runAgentLoop(options: AgentLoopOptions): Promise<AgentLoopResult> {
  const { writer, projector } = options;
  const usages: RunUsage[] = [];
  let errorText: string | null = null;
  let sawAbort = false;
  let stepStartedAt = new Date();
  let step = options.stepsDone;
  let recording = Promise.resolve();
  // The first failure of the recording chain; kept here, not in a rejected promise, so a failure
  // mid-stream is never an unhandled rejection.
  let recordFailure: unknown = null;

  const result = streamText({
    model: options.model,
    system: options.system,
    messages: options.messages,
    tools: options.tools,
    ...options.callOptions,
    experimental_context: options.toolContext,
    stopWhen: stepCountIs(Math.max(1, options.maxSteps - options.stepsDone)),
    abortSignal: options.signal,
    onStepFinish: (finished) => {
      usages.push(toRunUsage(finished.usage));
    },
  });
  const stream = result.toUIMessageStream({
    generateMessageId: () => options.messageId,
    sendStart: !options.resumed,
    sendReasoning: true,
    onError: (error) => (errorText = describeModelError(error)),
  });

  try {
    for await (const chunk of stream) {
      if (chunk.type === 'abort' && !options.keepAbortChunk()) continue;
      const seq = writer.append(chunk);
      const finished = projector.push(chunk);
      if (chunk.type === 'abort') sawAbort = true;
      else if (chunk.type === 'start-step') stepStartedAt = new Date();
      if (!finished) continue;
      step += 1;
      const record: FinishedStep = {
        step,
        parts: finished.parts,
        usage: usages[step - options.stepsDone - 1] ?? null,
        lastSeq: seq,
        startedAt: stepStartedAt,
      };
      recording = recording
        .then(async () => {
          if (recordFailure) return;
          await writer.flush();
          await options.recordStep(record);
        })
        .catch((error: unknown) => {
          recordFailure ??= error;
        });
    }
  } catch (error) {
    // The SDK ends the stream with an error when it is aborted mid-read; the caller handles the abort.
    if (!options.signal.aborted) throw error;
  }
  await recording;
  if (recordFailure) throw new PersistenceFailedError(recordFailure);
  await writer.flush();
  return { errorText, sawAbort, stepsDone: step, usages };
}

/** The run's progress could not be saved (a finished step could not be recorded). */
export class PersistenceFailedError extends Error {
  constructor(cause: unknown) {
    super('A finished step could not be recorded.', { cause });
    this.name = 'PersistenceFailedError';
  }
}

export function toRunUsage(usage: {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  reasoningTokens?: number;
  cachedInputTokens?: number;
}): RunUsage {
  const result: RunUsage = {};
  for (const key of [
    'inputTokens',
    'outputTokens',
    'totalTokens',
    'reasoningTokens',
    'cachedInputTokens',
  ] as const) {
    const value = usage[key];
    if (typeof value === 'number' && Number.isFinite(value)) result[key] = value;
  }
  return result;
}

export function sumUsage(usages: RunUsage[]): RunUsage | null {
  if (usages.length === 0) return null;
  const total: RunUsage = {};
  for (const usage of usages) {
    for (const [key, value] of Object.entries(usage) as [keyof RunUsage, number][]) {
      total[key] = (total[key] ?? 0) + value;
    }
  }
  return total;
}

/** A model failure in words a person can act on; never a stack trace. */
function describeModelError(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === 'string') return error;
  return 'The model failed.';
}
