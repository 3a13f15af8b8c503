import {
  convertToModelMessages,
  stepCountIs,
  streamText,
  type LanguageModel,
  type ModelMessage,
  type UIMessage,
} from 'ai';
import type { Logger } from 'pino';
import { MessageProjector } from '../protocol/message-projector.ts';
import type { ToolRegistry } from '../agent/tools.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import type { Metrics } from '../metrics.ts';
import type { Db } from '../store/database.ts';
import type { RunRow } from '../store/schema.ts';
import { retryTransient } from '../store/transient.ts';
import { LeaseLostError, type EventLog, type RunEventWriter } from '../stream/event-log.ts';
import { runStatusChunk } from '../stream/run-event.ts';
import { toRunObject, type RunUsage } from './run-object.ts';
import type { RunService } from './run-service.ts';
import { RunErrorCode, RunStatus, type RunError, type TerminalRunStatus } from './run-status.ts';

/** Why a run this worker executes was aborted. */
type AbortReason = typeof RunErrorCode.stopped | typeof RunErrorCode.serverShutdown | 'lease_lost';

const FAILURE_MESSAGES = {
  start_failed: 'The run could not be started.',
  persistence_failed: 'The run could not save its progress.',
  internal_error: 'The run failed unexpectedly.',
} as const;

const ABORT_MESSAGES: Record<Exclude<AbortReason, 'lease_lost'>, string> = {
  stopped: 'The run was stopped on request.',
  server_shutdown: 'The server shut down before the run finished.',
};

/** Run options the worker reads from the run row (the request's `budget`). */
export interface RunBudget {
  /** Most agent steps (model calls). @default 8 */
  maxSteps?: number;
  /** Most output tokens per model call. */
  maxOutputTokens?: number;
}

/** The run's progress could not be saved (a finished step could not be recorded). */
class PersistenceFailedError extends Error {
  constructor(cause: unknown) {
    super('A finished step could not be recorded.', { cause });
    this.name = 'PersistenceFailedError';
  }
}

interface ResumePoint {
  projector: MessageProjector;
  stepsDone: number;
  finishedParts: UIMessage['parts'];
  usages: RunUsage[];
  loopEnded: boolean;
}

interface ActiveRun {
  controller: AbortController;
  reason: AbortReason | null;
  done: Promise<void>;
  /** The attempt this worker claimed the run under; undefined until the claim. */
  attempt?: number;
}

export interface RunExecutorOptions {
  db: Db;
  runs: RunService;
  log: EventLog;
  tools: ToolRegistry;
  resolveModel: (modelId: string) => LanguageModel;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  /** This instance's lease owner name. */
  instanceId: string;
  /** How long a lease lasts without a heartbeat. @default 30000 */
  leaseMs?: number;
  /** Steps when the run sets no budget. @default 8 */
  defaultMaxSteps?: number;
}

/**
 * Executes runs on this instance: claims a pending run, owns it with a lease and a heartbeat, drives the
 * agent loop with an abort signal that belongs to the run (never to an HTTP socket), appends every chunk
 * to the event log, records each finished step, and settles. Anything that throws before the loop owns
 * the run settles it `failed` (the safety net of invariant 5).
 */
export class RunExecutor {
  readonly #options: RunExecutorOptions;
  readonly #active = new Map<string, ActiveRun>();
  readonly #leaseMs: number;

  constructor(options: RunExecutorOptions) {
    this.#options = options;
    this.#leaseMs = options.leaseMs ?? 30_000;
  }

  /** Whether this instance is executing the run. */
  isActive(runId: string): boolean {
    return this.#active.has(runId);
  }

  get activeCount(): number {
    return this.#active.size;
  }

  /** Aborts a run this instance executes; it settles `aborted` with the reason's error code. */
  abort(runId: string, reason: AbortReason): boolean {
    const active = this.#active.get(runId);
    if (!active) return false;
    active.reason ??= reason;
    active.controller.abort();
    return true;
  }

  /** Aborts every local run and waits until each has settled (graceful shutdown). */
  async abortAll(reason: AbortReason): Promise<void> {
    for (const runId of this.#active.keys()) this.abort(runId, reason);
    await this.idle();
  }

  /** Resolves once no run is executing here. */
  async idle(): Promise<void> {
    while (this.#active.size > 0) await Promise.allSettled([...this.#active.values()].map((run) => run.done));
  }

  /** The queue's handler: execute one run, if it is still pending. Never throws. */
  async execute(runId: string): Promise<void> {
    if (this.#active.has(runId)) return;
    let finish!: () => void;
    const active: ActiveRun = {
      controller: new AbortController(),
      reason: null,
      done: new Promise<void>((resolve) => (finish = resolve)),
    };
    // Registered before the claim, so a stop signal that arrives between claim and loop is not lost.
    this.#active.set(runId, active);
    try {
      await this.#options.faults.hit(FaultPoint.beforeClaim, { runId });
      const row = await this.#options.runs.claim({
        runId,
        owner: this.#options.instanceId,
        leaseMs: this.#leaseMs,
      });
      if (!row) return;
      this.#options.metrics.activeRuns.inc();
      try {
        await this.#own(row, active);
      } finally {
        this.#options.metrics.activeRuns.dec();
      }
    } catch (error) {
      this.#options.logger.error({ err: error, runId }, 'executing the run failed');
    } finally {
      this.#active.delete(runId);
      finish();
    }
  }

  #heartbeat: NodeJS.Timeout | null = null;

  /** Renews the leases of every claimed run here every third of a lease, while there are any. */
  #startHeartbeat(): void {
    if (this.#heartbeat) return;
    this.#heartbeat = setInterval(() => void this.#beat(), Math.max(50, Math.floor(this.#leaseMs / 3)));
    this.#heartbeat.unref();
  }

  async #beat(): Promise<void> {
    const held = [...this.#active.entries()]
      .filter(([, run]) => run.attempt !== undefined)
      .map(([runId, run]) => ({ runId, attempt: run.attempt! }));
    if (this.#active.size === 0 && this.#heartbeat) {
      clearInterval(this.#heartbeat);
      this.#heartbeat = null;
      return;
    }
    try {
      const leases = await this.#options.runs.heartbeatMany({
        runs: held,
        owner: this.#options.instanceId,
        leaseMs: this.#leaseMs,
      });
      for (const { runId, attempt } of held) {
        // Only runs still executing under the attempt that was renewed (one may have ended meanwhile).
        if (this.#active.get(runId)?.attempt !== attempt) continue;
        const lease = leases.get(runId);
        if (!lease) this.abort(runId, 'lease_lost');
        // A stop recorded on the row reaches the run even if its bus message was lost.
        else if (lease.stopRequested) this.abort(runId, RunErrorCode.stopped);
      }
    } catch (error) {
      this.#options.logger.warn({ err: error, runs: held.length }, 'heartbeat failed; retrying');
    }
  }

  async #own(row: RunRow, active: ActiveRun): Promise<void> {
    const { runs, log, logger, faults } = this.#options;
    const context = { runId: row.id, chatId: row.chat_id, attempt: row.attempt };
    let writer: RunEventWriter | undefined;
    let loopOwnsRun = false;
    // From here on the instance-wide heartbeat renews this run's lease.
    active.attempt = row.attempt;
    this.#startHeartbeat();
    try {
      writer = log.openWriter({
        runId: row.id,
        attempt: row.attempt,
        nextSeq: (await log.lastSeq(row.id)) + 1,
      });
      writer.append(runStatusChunk(toRunObject(row)));
      if (row.stop_requested_at) this.abort(row.id, RunErrorCode.stopped);
      await faults.hit(FaultPoint.beforeLoop, { runId: row.id });
      const model = this.#options.resolveModel(row.model);
      // A later attempt picks up where a worker that died left off.
      const resume = row.attempt > 1 ? await this.#resumePoint(row) : null;
      const messages = await this.#history(row, resume?.finishedParts ?? []);
      loopOwnsRun = true;
      logger.info(
        { ...context, resumedAfterStep: resume?.stepsDone },
        resume ? 'run resumed' : 'run started',
      );
      await this.#loop(row, active, writer, model, messages, resume);
    } catch (error) {
      // Whatever failed, the model call (if any) stops here.
      active.controller.abort();
      if (error instanceof LeaseLostError || active.reason === 'lease_lost') {
        logger.warn(context, 'lease lost; leaving the run to its new owner');
        return;
      }
      const code = !loopOwnsRun
        ? RunErrorCode.startFailed
        : writer?.failure || error instanceof PersistenceFailedError
          ? RunErrorCode.persistenceFailed
          : RunErrorCode.internalError;
      logger.error({ err: error, ...context, code }, 'run failed');
      await writer?.flush().catch(() => {});
      await runs.settle({
        runId: row.id,
        attempt: row.attempt,
        status: RunStatus.failed,
        error: { code, message: FAILURE_MESSAGES[code] },
        chunks: [{ type: 'error', errorText: FAILURE_MESSAGES[code] }],
      });
    }
  }

  /**
   * Where a resumed run continues: the projection of everything its earlier attempts streamed, and the
   * steps they finished (an unfinished step is redone; its partial output stays in the stream and message).
   */
  async #resumePoint(row: RunRow): Promise<ResumePoint> {
    const { runs } = this.#options;
    const steps = await runs.listSteps(row.id);
    const last = steps.at(-1);
    return {
      projector: await runs.replayProjection(row.id),
      stepsDone: steps.length,
      finishedParts: steps.flatMap((step) => step.parts as UIMessage['parts']),
      usages: steps.map((step) => (step.usage as RunUsage | null) ?? {}),
      // The loop had ended if its last finished step called no tool: the model gave its final answer.
      loopEnded:
        last !== undefined &&
        !(last.parts as UIMessage['parts']).some(
          (part) => part.type.startsWith('tool-') || part.type === 'dynamic-tool',
        ),
    };
  }

  /**
   * The chat so far, as model messages: every message before this run's assistant message, then the steps
   * of this run that earlier attempts finished.
   */
  async #history(row: RunRow, finishedParts: UIMessage['parts']): Promise<ModelMessage[]> {
    const rows = await this.#options.db
      .selectFrom('messages')
      .select(['id', 'role', 'parts'])
      .where('chat_id', '=', row.chat_id)
      .where('id', '!=', row.assistant_message_id ?? '')
      .orderBy('id')
      .execute();
    const messages = rows.map((message): UIMessage => ({
      id: message.id,
      role: message.role,
      parts: (message.parts as UIMessage['parts']).filter((part) => !part.type.startsWith('data-')),
    }));
    if (finishedParts.length > 0) {
      messages.push({ id: row.assistant_message_id ?? row.id, role: 'assistant', parts: finishedParts });
    }
    return convertToModelMessages(messages, {
      tools: this.#options.tools.toolSet(),
      ignoreIncompleteToolCalls: true,
    });
  }

  async #loop(
    row: RunRow,
    active: ActiveRun,
    writer: RunEventWriter,
    model: LanguageModel,
    messages: ModelMessage[],
    resume: ResumePoint | null,
  ): Promise<void> {
    const { runs } = this.#options;
    const budget = (row.options as { budget?: RunBudget }).budget ?? {};
    const maxSteps = budget.maxSteps ?? this.#options.defaultMaxSteps ?? 8;
    const projector = resume?.projector ?? new MessageProjector();
    const stepUsages: RunUsage[] = [...(resume?.usages ?? [])];
    if (resume && (resume.loopEnded || resume.stepsDone >= maxSteps)) {
      // The previous attempt finished the agent loop but died before settling: settle what it left.
      await runs.settle({
        runId: row.id,
        attempt: row.attempt,
        status: RunStatus.succeeded,
        parts: projector.parts(),
        usage: sumUsage(stepUsages),
      });
      return;
    }
    let errorText: string | null = null;
    let sawAbort = false;
    let stepStartedAt = new Date();
    let step = resume?.stepsDone ?? 0;
    let steps = Promise.resolve();
    // The first failure of the step chain; it fails the run once the stream ends. Kept here, not in a
    // rejected promise, so a failure mid-stream is never an unhandled rejection.
    let stepFailure: unknown = null;

    const result = streamText({
      model,
      messages,
      tools: this.#options.tools.toolSet(),
      stopWhen: stepCountIs(maxSteps - step),
      maxOutputTokens: budget.maxOutputTokens,
      abortSignal: active.controller.signal,
      onStepFinish: (finished) => {
        stepUsages.push(toRunUsage(finished.usage));
      },
    });
    const stream = result.toUIMessageStream({
      generateMessageId: () => row.assistant_message_id ?? '',
      // A resumed run's stream already has its `start`.
      sendStart: resume === null,
      sendReasoning: true,
      onError: (error) => (errorText = describeModelError(error)),
    });

    try {
      for await (const chunk of stream) {
        const seq = writer.append(chunk);
        const finished = projector.push(chunk);
        if (chunk.type === 'abort') sawAbort = true;
        else if (chunk.type === 'start-step') stepStartedAt = new Date();
        if (finished) {
          step += 1;
          const record = { step, parts: finished.parts, lastSeq: seq, startedAt: stepStartedAt };
          // Steps are recorded in order, each once its events are durable, without holding up the stream.
          steps = steps
            .then(async () => {
              if (stepFailure) return;
              await writer.flush();
              await retryTransient(() =>
                runs.recordStep({
                  runId: row.id,
                  attempt: row.attempt,
                  ...record,
                  usage: stepUsages[record.step - 1] ?? null,
                }),
              );
            })
            .catch((error: unknown) => {
              stepFailure ??= error;
            });
        }
      }
    } catch (error) {
      // The SDK ends the stream with an error when it is aborted mid-read; the abort is handled below.
      if (!active.controller.signal.aborted) throw error;
    }
    await steps;
    if (stepFailure) throw new PersistenceFailedError(stepFailure);
    await writer.flush();

    const reason = active.reason;
    if (reason === 'lease_lost') throw new LeaseLostError(row.id);
    let status: TerminalRunStatus = RunStatus.succeeded;
    let error: RunError | null = null;
    const chunks: unknown[] = [];
    if (active.controller.signal.aborted) {
      status = RunStatus.aborted;
      const code = reason ?? RunErrorCode.stopped;
      error = { code, message: ABORT_MESSAGES[code] };
      if (!sawAbort) chunks.push({ type: 'abort' });
    } else if (errorText !== null) {
      status = RunStatus.failed;
      error = { code: RunErrorCode.modelError, message: errorText };
    }
    const settled = await runs.settle({
      runId: row.id,
      attempt: row.attempt,
      status,
      error,
      chunks,
      parts: projector.parts(),
      usage: sumUsage(stepUsages),
    });
    if (settled) {
      this.#options.logger.info(
        { runId: row.id, chatId: row.chat_id, status, steps: step, code: error?.code },
        'run settled',
      );
    }
  }
}

function toRunUsage(usage: {
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

function sumUsage(usages: RunUsage[]): RunUsage | null {
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
