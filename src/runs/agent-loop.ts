import { streamText, type LanguageModel, type ModelMessage, type ToolSet, type UIMessage } from 'ai';
import type { RunChunk } from '../protocol/chunks.ts';
import type { MessageProjector, ProjectedStep } from '../protocol/message-projector.ts';
import { roundUsd } from '../agent/prices.ts';
import { isContextOverflowError, type CompactionReport } from '../agent/compaction.ts';
import type { RunToolContext } from '../agent/tool-context.ts';
import type { ModelOptions } from '../protocol/agent.ts';
import type { RunEventWriter } from '../stream/event-log.ts';
import type { PendingApproval } from '../protocol/run.ts';
import { estimateTokens, type BudgetExceeded, type BudgetMeter } from './budget.ts';
import { ModelWatchdog } from './model-watchdog.ts';
import { takeOnlyStream } from './only-stream.ts';
import type { RunUsage } from './run-object.ts';

/** A finished step, ready to be recorded once its events are durable. */
export interface FinishedStep {
  step: number;
  parts: UIMessage['parts'];
  usage: RunUsage | null;
  costUsd: number | null;
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
  /** Holds the run to its budget; its checks cut the loop (see `budgetExceeded` in the result). */
  meter: BudgetMeter;
  /** Called when the meter cuts the step under way: abort the model call. */
  onBudgetCut: () => void;
  /**
   * Ends a model call that sends nothing for this long while no tool of the run executes: the run fails
   * `model_error` (`OUTRUN_MODEL_IDLE_TIMEOUT_MS`, decision 0025). 0 or absent: no limit.
   */
  modelIdleMs?: number;
  /**
   * Called when the model was silent for `modelIdleMs`: abort the run's execution, and say whether it was cut
   * for that (false when it was already being stopped for another reason).
   */
  onModelIdle?: () => boolean;
  /**
   * Fits each step's prompt (the fitted history and this execution's steps so far) into the context budget
   * (invariant 15): the messages to send and the compaction to report, or null when they fit; throws when they
   * cannot be made to fit, and the step is never sent (the run fails with the error's message). A new run's
   * first prompt was fitted before the loop, so for it this only checks; a resumed execution's is fitted here,
   * since the SDK adds to it what the tools of the step it resumed after return (an approved call's output).
   */
  fitStep?: (
    messages: ModelMessage[],
  ) => Promise<{ messages: ModelMessage[]; compaction: CompactionReport } | null>;
  /** Called once, at the first text the model streams in this execution. */
  onFirstToken?: () => void;
  /**
   * Records a finished step; called in order, each after the step's events are durable. The loop's last
   * finished step is not recorded here but returned as `unrecordedStep`, for the run's status change to
   * record in its own statement.
   */
  recordStep: (step: FinishedStep) => Promise<void>;
  /**
   * Records a finished step's parts again: a resumed execution streamed what became of its calls (an approved
   * call's output, a denial) after the step had finished and been recorded. Called in order with `recordStep`.
   */
  updateStepParts?: (step: number, parts: UIMessage['parts']) => Promise<void>;
}

export interface AgentLoopResult {
  /**
   * The model failed (the stream's `error` chunk): its message for a person. A tool's failure is not one: the
   * SDK reports it to the model as the tool's result (`tool-output-error`), and the model goes on.
   */
  errorText: string | null;
  /** The stream ended with the SDK's own `abort` chunk. */
  sawAbort: boolean;
  stepsDone: number;
  /** The budget limit that ended the loop: before a call, or by cutting a step mid-stream. */
  budgetExceeded: BudgetExceeded | null;
  /** Whether the budget cut a step mid-stream (that step is partial). */
  budgetCutStep: boolean;
  /** Tool calls waiting for a person's approval when the loop ended. */
  approvals: PendingApproval[];
  /** The provider refused the prompt as too long (its `error` chunk is left out; the caller may retry). */
  contextOverflow: boolean;
  /**
   * With `contextOverflow` on a later step of this execution, or on a resumed execution's first: that step's
   * whole prompt, before `fitStep` fitted it, for the caller to compact harder (a new run's first step's is the
   * caller's own history). Null otherwise.
   */
  overflowedPrompt: ModelMessage[] | null;
  /**
   * The last step that finished, when no later step started: not recorded yet, and its last events may not
   * be durable yet either (the loop leaves its writer's last events to the caller, decision 0015). The caller
   * records it with the run's status change, which writes those events, or on its own after a flush.
   */
  unrecordedStep: FinishedStep | null;
}

/**
 * One execution of the agent loop: `streamText` with the run's abort signal (never an HTTP socket's),
 * every chunk appended to the event log as it arrives, each finished step recorded in order without
 * holding up the stream. Throws when a step could not be recorded (the run's progress would be lost).
 */
export async function runAgentLoop(options: AgentLoopOptions): Promise<AgentLoopResult> {
  const { writer, projector, meter } = options;
  // Every chunk the loop appends, the model's and Outrun's own, is projected too: the message its run stores is
  // the projection of the run's stream (invariant 6).
  const emit = (chunk: RunChunk) => appendProjected({ writer, projector, chunk });
  const stepUsage = new StepUsages();
  let errorText: string | null = null;
  let sawAbort = false;
  let stepStartedAt = new Date();
  let step = options.stepsDone;
  let budgetExceeded: BudgetExceeded | null = null;
  let budgetCutStep = false;
  let firstToken = false;
  let contextOverflow = false;
  // The error the model's stream reported last, for the `error` chunk the SDK makes of it.
  let streamError: unknown;
  let stepOpen = false;
  const toolCalls = new Map<string, { toolName: string; title: string | undefined; input: unknown }>();
  const approvals: PendingApproval[] = [];
  let recording = Promise.resolve();
  // The first failure of the recording chain; kept here, not in a rejected promise, so a failure
  // mid-stream is never an unhandled rejection.
  let recordFailure: unknown = null;
  // Runs `write` after the writes before it, once the events before it are durable.
  const inOrder = (write: () => Promise<void>) => {
    recording = recording
      .then(async () => {
        if (recordFailure) return;
        await writer.flush();
        await write();
      })
      .catch((error: unknown) => {
        recordFailure ??= error;
      });
  };
  const record = (finishedStep: FinishedStep) => inOrder(() => options.recordStep(finishedStep));
  // A resumed execution's first chunks may finish the calls of the step it resumed after (approved or denied):
  // that step's record is written again with them, before the next step's.
  let resumedStepChanged = false;
  const rerecordResumedStep = (nextStepBegun: boolean) => {
    resumedStepChanged = false;
    const parts = resumedStepParts(projector.parts(), nextStepBegun);
    const update = options.updateStepParts;
    if (update && parts) inOrder(() => update(options.stepsDone, parts));
  };
  // A finished step is recorded once the next one starts: the last one is left to the run's status change
  // (one statement less per run).
  let unrecorded: FinishedStep | null = null;
  // The first prompt's estimate, for the budget's check before each later call: measured at the first such
  // check, so a run of one step (most runs) never measures it again after its caller did.
  let initialPromptTokens: number | undefined;
  const onModelIdle = options.onModelIdle;
  const watchdog =
    options.modelIdleMs && onModelIdle
      ? new ModelWatchdog(options.modelIdleMs, () => writer.lastSeq, onModelIdle)
      : null;
  // Tools executing now, each holding the watchdog off: their time is not the model's silence.
  const executing = new Map<string, () => void>();
  const toolEnded = (toolCallId: string) => {
    executing.get(toolCallId)?.();
    executing.delete(toolCallId);
  };

  // Later steps' compactions by the step's index in this execution, each reported in the stream before that
  // step's `start-step` (the SDK may prepare a step before the loop has read the last one's chunks).
  const stepCompactions = new Map<number, CompactionReport>();
  let stepsStarted = 0;
  // The whole prompt of the latest step `fitStep` saw (for `overflowedPrompt`).
  let lastStepPrompt: ModelMessage[] | null = null;
  const fitStep = options.fitStep;

  const result = streamText({
    model: options.model,
    system: options.system,
    messages: options.messages,
    tools: options.tools,
    ...options.callOptions,
    experimental_context: options.toolContext,
    prepareStep: fitStep
      ? async ({ stepNumber, messages }) => {
          // A resumed execution's first prompt holds what the tools it resumed with returned (approved calls
          // the SDK executed before it): a retry must start from it, not run them again.
          lastStepPrompt = stepNumber > 0 || options.resumed ? messages : null;
          const fitted = await fitStep(messages);
          if (!fitted) return undefined;
          stepCompactions.set(stepNumber, fitted.compaction);
          return { messages: fitted.messages };
        }
      : undefined,
    // One stop condition for steps and budget: a next call the budget cannot afford is never made.
    stopWhen: async ({ steps }) => {
      if (options.stepsDone + steps.length >= options.maxSteps) return true;
      await meter.refreshQuota();
      const grown = steps.reduce((sum, done) => sum + estimateTokens(JSON.stringify(done.content)), 0);
      initialPromptTokens ??= estimateTokens((options.system ?? '') + JSON.stringify(options.messages));
      budgetExceeded = meter.beforeCall(initialPromptTokens + grown);
      return budgetExceeded !== null;
    },
    abortSignal: options.signal,
    // Called for the stream's own errors only (the ones that become its `error` chunk), not for a tool's, and
    // before that chunk reaches the loop.
    onError: ({ error }) => {
      streamError = error;
    },
    onStepFinish: (finished) => stepUsage.push(toRunUsage(finished.usage)),
  });
  // The run's one stream, without the copy `streamText` would keep of it until the run ends.
  const { stream } = takeOnlyStream(result, () =>
    result.toUIMessageStream({
      generateMessageId: () => options.messageId,
      sendStart: !options.resumed,
      sendReasoning: true,
      // The text of every error the stream reports: the model's (`error`) and a tool's (`tool-input-error`,
      // `tool-output-error`, which the model is told and recovers from). Only an `error` chunk fails the run.
      onError: describeModelError,
    }),
  );

  // The budget cuts the step under way, if one is (between steps there is none to cut: a finished step's usage
  // may still be on its way to `endStep`); the caller's abort ends the stream.
  const cutForBudget = (crossed: BudgetExceeded) => {
    budgetExceeded = crossed;
    budgetCutStep = stepOpen;
    if (stepOpen) meter.cutStep();
    options.onBudgetCut();
  };
  // Output chunks check the duration as they come; this clock holds the run to it while a model or a tool
  // sends nothing.
  let durationTimer: NodeJS.Timeout | undefined;
  const holdToDuration = () => {
    const leftMs = meter.durationLeftMs();
    if (leftMs === null || budgetExceeded || options.signal.aborted) return;
    if (leftMs === 0) {
      cutForBudget('duration');
    } else {
      // Node fires a longer timeout at once, so a budget of weeks is looked at again after the longest one.
      durationTimer = setTimeout(holdToDuration, Math.min(leftMs, MAX_TIMEOUT_MS));
    }
  };
  holdToDuration();

  try {
    for await (const chunk of stream) {
      if (chunk.type === 'abort' && !options.keepAbortChunk()) continue;
      if (chunk.type === 'start-step') {
        const compaction = stepCompactions.get(stepsStarted++);
        if (compaction) emit({ type: 'data-compaction', data: compaction });
      }
      if (chunk.type === 'error') {
        errorText = chunk.errorText;
        contextOverflow = isContextOverflowError(streamError);
        streamError = undefined;
        if (contextOverflow) continue;
      }
      const { seq, finished } = emit(chunk);
      switch (chunk.type) {
        case 'abort':
          sawAbort = true;
          break;
        case 'start-step':
          stepStartedAt = new Date();
          stepOpen = true;
          if (resumedStepChanged) rerecordResumedStep(true);
          if (unrecorded) record(unrecorded);
          unrecorded = null;
          break;
        case 'tool-output-available':
        case 'tool-output-error':
        case 'tool-output-denied':
          if (watchdog) toolEnded(chunk.toolCallId);
          if (!stepOpen && step === options.stepsDone && step > 0) resumedStepChanged = true;
          break;
        case 'finish-step':
          stepOpen = false;
          break;
        case 'tool-input-available':
          toolCalls.set(chunk.toolCallId, {
            toolName: chunk.toolName,
            title: chunk.title,
            input: chunk.input,
          });
          // A tool the provider runs is the model's time; one the SDK runs here is not.
          if (watchdog && !chunk.providerExecuted) executing.set(chunk.toolCallId, watchdog.hold());
          break;
        case 'tool-approval-request': {
          if (watchdog) toolEnded(chunk.toolCallId);
          const call = toolCalls.get(chunk.toolCallId);
          approvals.push({
            approvalId: chunk.approvalId,
            toolCallId: chunk.toolCallId,
            toolName: call?.toolName ?? 'unknown',
            ...(call?.title === undefined ? {} : { title: call.title }),
            input: call?.input ?? null,
          });
          break;
        }
        case 'text-delta':
          if (!firstToken) {
            firstToken = true;
            options.onFirstToken?.();
          }
        // falls through
        case 'reasoning-delta':
        case 'tool-input-delta': {
          // Each output chunk counts as a token until the provider reports the step's usage.
          const crossed: BudgetExceeded | null = budgetExceeded ? null : meter.onOutput(1);
          if (crossed) cutForBudget(crossed);
          break;
        }
      }
      if (!finished) continue;
      step += 1;
      const release = watchdog?.hold();
      const { usage, costUsd } = meter.endStep(await stepUsage.next());
      release?.();
      const spent = meter.spent();
      emit({
        type: 'data-budget',
        data: {
          usage: { inputTokens: spent.inputTokens, outputTokens: spent.outputTokens },
          costUsd: roundUsd(spent.costUsd),
          budget: meter.budget,
        },
      });
      unrecorded = {
        step,
        parts: finished.parts,
        usage,
        costUsd,
        lastSeq: seq,
        startedAt: stepStartedAt,
      };
    }
  } catch (error) {
    // The SDK ends the stream with an error when it is aborted mid-read; the caller handles the abort.
    if (!options.signal.aborted) {
      // The run fails: no status change will record the last finished step.
      if (unrecorded) record(unrecorded);
      await recording;
      throw error;
    }
  } finally {
    clearTimeout(durationTimer);
    watchdog?.stop();
  }
  if (watchdog?.fired) {
    // The model went silent: the run fails as on a provider's error, with the stream's `error` chunk.
    errorText = watchdog.message;
    emit({ type: 'error', errorText });
  }
  if (resumedStepChanged) rerecordResumedStep(false);
  if (contextOverflow && stepOpen) {
    emit({ type: 'data-step-interrupted', data: { step: step + 1, reason: 'context_overflow' } });
  }
  await recording;
  if (recordFailure) throw new PersistenceFailedError(recordFailure);
  // The writer's last events are left to the caller: the run's status change writes them (decision 0015).
  return {
    errorText,
    sawAbort,
    stepsDone: step,
    budgetExceeded,
    budgetCutStep,
    approvals,
    contextOverflow,
    overflowedPrompt: contextOverflow ? lastStepPrompt : null,
    unrecordedStep: unrecorded,
  };
}

/**
 * Appends a chunk to the run's stream and applies it to the run's message projection, the one way an execution
 * adds to its stream: so the message it stores with a status change is the projection of that stream
 * (invariant 6). Returns the chunk's sequence number, and the step it finished at a `finish-step`.
 */
export function appendProjected(options: {
  writer: RunEventWriter;
  projector: MessageProjector;
  chunk: RunChunk;
}): { seq: number; finished: ProjectedStep | undefined } {
  const seq = options.writer.append(options.chunk);
  return { seq, finished: options.projector.push(options.chunk) };
}

/**
 * The parts of the step a resumed execution went on after (from its `step-start`, as `ProjectedStep.parts`
 * are): the message's last step, or the one before it once the execution's next step has begun. Null when
 * there is none.
 */
function resumedStepParts(parts: UIMessage['parts'], nextStepBegun: boolean): UIMessage['parts'] | null {
  let end = parts.length;
  if (nextStepBegun) end = parts.findLastIndex((part) => part.type === 'step-start');
  const start = parts.findLastIndex((part, index) => index < end && part.type === 'step-start');
  return start === -1 ? null : parts.slice(start, end);
}

/** Step usages as `onStepFinish` reports them, handed out in order to the stream reader. */
class StepUsages {
  readonly #ready: RunUsage[] = [];
  #waiting: ((usage: RunUsage) => void) | null = null;

  push(usage: RunUsage): void {
    if (this.#waiting) {
      const resolve = this.#waiting;
      this.#waiting = null;
      resolve(usage);
    } else this.#ready.push(usage);
  }

  /** The next step's usage; an empty usage if the SDK does not report it within a moment. */
  next(): Promise<RunUsage> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting = null;
        resolve({});
      }, STEP_USAGE_WAIT_MS);
      this.#waiting = (usage) => {
        clearTimeout(timer);
        resolve(usage);
      };
    });
  }
}

/** The longest delay `setTimeout` takes (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMEOUT_MS = 2_147_483_647;

/** How long the stream reader waits for a finished step's usage before counting it by its chunks. */
const STEP_USAGE_WAIT_MS = 1_000;

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

/** A model failure in words a person can act on; never a stack trace. */
function describeModelError(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === 'string') return error;
  return 'The model failed.';
}
