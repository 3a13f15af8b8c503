import type { LanguageModel, ModelMessage, ToolSet } from 'ai';
import type { Logger } from 'pino';
import type { McpClientPool } from '../agent/mcp-tools.ts';
import { buildToolSet } from '../agent/tool-set.ts';
import type { ToolRegistry } from '../agent/tools.ts';
import type { CompactionStore } from '../agent/compaction-store.ts';
import { ContextBudgetError } from '../agent/compaction.ts';
import type { ModelPrices } from '../agent/prices.ts';
import type { RunConfig } from '../protocol/agent.ts';
import type { ChatService } from '../chats/chat-service.ts';
import type { Clock } from '../clock.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import { observeFirstToken, type Metrics } from '../metrics.ts';
import { MessageProjector } from '../protocol/message-projector.ts';
import type { DailyAllowance } from '../quotas/quota-service.ts';
import type { MessageRow, RunRow } from '../store/schema.ts';
import { retryTransient } from '../store/transient.ts';
import { LeaseLostError, type EventLog, type RunEventWriter } from '../stream/event-log.ts';
import { appendProjected, runAgentLoop, type AgentLoopResult, type FinishedStep } from './agent-loop.ts';
import { BudgetMeter, estimateTokens } from './budget.ts';
import { loadRunContext } from './context-loader.ts';
import { fitContext, fitStepContext, fixedPromptTokens } from './run-context.ts';
import { LeaseKeeper } from './lease-keeper.ts';
import { Ending, type Lifecycle, type TransitionResult } from './lifecycle.ts';
import { findResumePoint, spentBefore, type ResumePoint } from './resume-point.ts';
import { decideOutcome, failureCode, settleRun, spendChanges, type AbortReason } from './run-outcome.ts';
import type { LocalClaim, RunService } from './run-service.ts';
import { RunErrorCode } from './run-status.ts';

/** A loop that never ran: the budget refused its first call, or an earlier execution had ended it. */
const NO_LOOP: AgentLoopResult = {
  errorText: null,
  sawAbort: false,
  stepsDone: 0,
  budgetExceeded: null,
  budgetCutStep: false,
  approvals: [],
  contextOverflow: false,
  overflowedPrompt: null,
  unrecordedStep: null,
};

interface ActiveRun {
  controller: AbortController;
  reason: AbortReason | null;
  done: Promise<void>;
  finish: () => void;
}

/** A run this instance claims in the statement that begins it (see `RunExecutor.adopt`). */
export interface LocalRun {
  /** The claim for `RunService.begin` to make. */
  claim: LocalClaim;
  /**
   * After commit: executes the claimed run, with its history when the statement that began it read it
   * (`BeginResult.history`). Never throws.
   */
  run(claimed: TransitionResult, history: MessageRow[] | null): Promise<void>;
  /** The claim did not happen (or did not commit): forget the run. */
  cancel(): void;
}

/** What an execution of a run sets up before its agent loop. */
interface RunSetup {
  /** The configuration stored when the run began: an agent edited since does not change it. */
  config: RunConfig;
  model: LanguageModel;
  maxSteps: number;
  /** Where an earlier execution (a crash, a release) left off; null on the first. */
  resume: ResumePoint | null;
  /** The run's message as the projection of its stream: rebuilt from the log on a resume, else empty. */
  projector: MessageProjector;
  tools: ToolSet;
  /** What every call sends beside its messages, in tokens: the instructions and the tools' definitions. */
  fixedTokens: number;
  /** What the first model call is sent: the history, compacted when it was over the context budget. */
  messages: ModelMessage[];
  /** Holds the execution to the run's budget and the workspace's quota, from before a summary is asked for. */
  meter: BudgetMeter;
  /**
   * Fits the history into the context budget (to half of it with `overflow`, after the provider refused the
   * prompt); a compaction is appended to the stream, and a summary's model call counts on the meter. Null when
   * compactions are off.
   */
  fit:
    | ((
        overflow: boolean,
      ) => Promise<{ messages: ModelMessage[]; over: { tokens: number; maxTokens: number } | null }>)
    | null;
}

export interface RunExecutorOptions {
  runs: RunService;
  lifecycle: Lifecycle;
  chats: ChatService;
  log: EventLog;
  tools: ToolRegistry;
  /** This process's MCP clients (tools named `mcp:<server>/<tool>`). */
  mcp?: McpClientPool;
  resolveModel: (modelId: string) => LanguageModel;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  /** This instance's lease owner name. */
  instanceId: string;
  /** How long a lease lasts without a heartbeat. @default 30000 */
  leaseMs?: number;
  clock?: Clock;
  /** Steps when the run sets no budget. @default 8 */
  defaultMaxSteps?: number;
  prices: ModelPrices;
  /** What the workspace's daily quota leaves; a run that uses it up ends `aborted`/`quota_exceeded`. */
  quotas?: { allowance(workspaceId: string): Promise<DailyAllowance> };
  /** Where compaction summaries are kept and reused. Absent: histories are sent whole. */
  compactions?: CompactionStore;
  /** How long a waiting run waits for an answer. @default 7 days */
  waitTtlMs?: number;
  /**
   * How long a model call may send nothing while no tool executes before the run fails `model_error`
   * (decision 0025). 0 or absent: no limit.
   */
  modelIdleMs?: number;
  /** Starts the follow-up of a run whose step budget said `continue` (the engine's). */
  continueRun?: (run: RunRow, config: RunConfig) => Promise<unknown>;
}

/**
 * Executes runs on this instance: claims a pending run, keeps its lease, drives the agent loop with an
 * abort signal that belongs to the run (never to an HTTP socket), and ends the run through the lifecycle.
 * A run that executed before (a crash, a release) goes on from its last finished step. Anything that
 * throws before the loop owns the run ends it `failed` (the safety net of invariant 5). Where a resumed run
 * goes on is read in `resume-point.ts`; what becomes of a run once its loop returns, in `run-outcome.ts`.
 */
export class RunExecutor {
  readonly #options: RunExecutorOptions;
  readonly #active = new Map<string, ActiveRun>();
  readonly leases: LeaseKeeper;

  constructor(options: RunExecutorOptions) {
    this.#options = options;
    this.leases = new LeaseKeeper({
      runs: options.runs,
      owner: options.instanceId,
      leaseMs: options.leaseMs,
      clock: options.clock,
      logger: options.logger,
      onLost: (runId) => this.abort(runId, 'lease_lost'),
      onStopRequested: (runId) => this.abort(runId, RunErrorCode.stopped),
    });
  }

  /** Whether this instance is executing the run. */
  isActive(runId: string): boolean {
    return this.#active.has(runId);
  }

  get activeCount(): number {
    return this.#active.size;
  }

  /** Stops executing a run here, for `reason`. */
  abort(runId: string, reason: AbortReason): boolean {
    const active = this.#active.get(runId);
    if (!active) return false;
    active.reason ??= reason;
    active.controller.abort();
    return true;
  }

  /** Hands every run executing here back to `pending` and waits until each is released (shutdown). */
  async releaseAll(): Promise<void> {
    for (const runId of this.#active.keys()) this.abort(runId, 'released');
    await this.idle();
  }

  /** Resolves once no run is executing here. */
  async idle(): Promise<void> {
    while (this.#active.size > 0) await Promise.allSettled([...this.#active.values()].map((run) => run.done));
  }

  /** The queue's handler: execute one run, if it is still pending. Never throws. */
  async execute(runId: string): Promise<void> {
    const active = this.#track(runId);
    if (!active) return;
    await this.#execute(runId, active, async () => {
      await this.#options.faults.hit(FaultPoint.beforeClaim, { runId });
      return this.#options.lifecycle.claim({
        runId,
        owner: this.#options.instanceId,
        leaseExpiresAt: this.leases.expiresAt(),
      });
    });
  }

  /**
   * The local fast path: a run this instance claims in the statement that begins it, so a start skips the
   * queue hop and a second transaction. Call it before that statement: the run is registered at once (a stop
   * that arrives before the loop is kept), `claim` is what the statement records, and after commit `run`
   * executes it (never throws) or `cancel` forgets it. Null when this instance already executes it.
   */
  adopt(runId: string): LocalRun | null {
    const active = this.#track(runId);
    if (!active) return null;
    return {
      claim: { owner: this.#options.instanceId, leaseExpiresAt: this.leases.expiresAt() },
      run: (claimed, history) => this.#execute(runId, active, async () => claimed, history),
      cancel: () => {
        if (this.#active.get(runId) === active) this.#active.delete(runId);
        active.finish();
      },
    };
  }

  /** Registers a run executing here; null when it already is. */
  #track(runId: string): ActiveRun | null {
    if (this.#active.has(runId)) return null;
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const active: ActiveRun = { controller: new AbortController(), reason: null, done, finish };
    // Registered before the claim, so a stop signal that arrives between claim and loop is not lost.
    this.#active.set(runId, active);
    return active;
  }

  async #execute(
    runId: string,
    active: ActiveRun,
    claim: () => Promise<TransitionResult | null>,
    history: MessageRow[] | null = null,
  ): Promise<void> {
    try {
      const claimed = await claim();
      if (!claimed) return;
      this.#options.metrics.activeRuns.inc();
      this.leases.hold(runId, claimed.row.epoch);
      try {
        await this.#own(claimed.row, active, claimed.events.at(-1)!.seq, history);
      } finally {
        this.leases.drop(runId);
        this.#options.metrics.activeRuns.dec();
      }
    } catch (error) {
      this.#options.logger.error({ err: error, runId }, 'executing the run failed');
    } finally {
      this.#active.delete(runId);
      active.finish();
    }
  }

  async #own(row: RunRow, active: ActiveRun, lastSeq: number, history: MessageRow[] | null): Promise<void> {
    const { lifecycle, log, logger, faults } = this.#options;
    const context = { runId: row.id, chatId: row.chat_id, attempt: row.attempt };
    const epoch = row.epoch;
    const writer: RunEventWriter = log.openWriter({ runId: row.id, epoch, nextSeq: lastSeq + 1 });
    let loopOwnsRun = false;
    let quota: Promise<DailyAllowance> | undefined;
    try {
      if (row.stop_requested_at) this.abort(row.id, RunErrorCode.stopped);
      await faults.hit(FaultPoint.beforeLoop, { runId: row.id });
      // Read while the history loads: both are on the way to the first token.
      quota = this.#options.quotas?.allowance(row.workspace_id);
      quota?.catch(() => {}); // awaited below; a setup that throws first must not leave it unhandled
      const setup = await this.#setUp(row, active, writer, history, quota);
      const { config, resume, meter } = setup;
      loopOwnsRun = true;
      logger.info(
        { ...context, resumedAfterStep: resume?.stepsDone },
        resume ? 'run resumed' : 'run started',
      );
      const { projector } = setup;
      const result = await this.#runLoop({ row, active, writer, setup });
      const outcome = decideOutcome({
        result,
        reason: active.reason,
        aborted: active.controller.signal.aborted,
        budget: config.budget,
        quotaExceeded: meter.quotaExceeded,
        parts: () => projector.parts(),
      });
      // A hand-back records no step: the loop's last one gets its own statement, once its events are durable.
      // The hand-back then sets the run's totals, the cut step's spend included, for the next owner's budget.
      const step = result.unrecordedStep ?? undefined;
      if (step && outcome.type === 'release') {
        await writer.flush();
        await this.#recordCounted(row.id, epoch, step, meter);
      }
      await settleRun({
        deps: this.#options,
        row,
        epoch,
        config,
        outcome,
        projector,
        changes: spendChanges(meter.spent(), result.stepsDone),
        writer,
        step: outcome.type === 'release' ? undefined : step,
      });
      await this.#recordSpendOutsideSteps(row, meter);
    } catch (error) {
      // Whatever failed, the model call (if any) stops here.
      active.controller.abort();
      if (error instanceof LeaseLostError || active.reason === 'lease_lost') {
        logger.warn(context, 'lease lost; leaving the run to its new owner');
        return;
      }
      const code = failureCode({ loopOwnsRun, writerFailed: writer.failure !== null, error });
      logger.error({ err: error, ...context, code }, 'run failed');
      await writer.flush().catch(() => {});
      await lifecycle.end({ runId: row.id, epoch, ending: Ending.failed(code) });
    } finally {
      // This execution's spend stops counting as the quota's unrecorded spend.
      void quota?.then(
        (allowance) => allowance.close(),
        () => {},
      );
    }
  }

  /**
   * Everything an execution needs before its loop owns the run: the stored configuration, the model, the
   * resume point, the tools, the budget meter and the history fitted to the context budget. Throws: the run
   * never started.
   */
  async #setUp(
    row: RunRow,
    active: ActiveRun,
    writer: RunEventWriter,
    storedHistory: MessageRow[] | null,
    quota: Promise<DailyAllowance> | undefined,
  ): Promise<RunSetup> {
    const config = this.#runConfig(row);
    const model = this.#options.resolveModel(config.model);
    const maxSteps = config.budget.maxSteps ?? this.#options.defaultMaxSteps ?? 8;
    // An earlier execution (a crash, a release) left finished steps: go on after them.
    const resume =
      row.attempt > 1
        ? await findResumePoint({
            runId: row.id,
            log: this.#options.log,
            runs: this.#options.runs,
            recordStep: (step) => this.#recordStep(row.id, row.epoch, step),
          })
        : null;
    const projector = resume?.projector ?? new MessageProjector();
    const tools = await buildToolSet({ config, registry: this.#options.tools, mcp: this.#options.mcp });
    const history = await loadRunContext({
      chats: this.#options.chats,
      run: row,
      finishedParts: resume?.finishedParts ?? [],
      tools,
      stored: storedHistory,
    });
    const meter = new BudgetMeter({
      budget: config.budget,
      price: this.#options.prices.of(config.model),
      spent: await spentBefore({ row, stepsDone: resume?.stepsDone ?? 0, runs: this.#options.runs }),
      quota: await quota,
    });
    // Over the context budget: compacted, and the compaction is an event of the stream. A summary is asked
    // for only if the budget affords it, and what it used is the run's spend, outside its steps.
    const store = this.#options.compactions;
    const fixedTokens = store ? await fixedPromptTokens(config, tools) : 0;
    const fit = store
      ? async (overflow: boolean) => {
          const fitted = await fitContext({
            run: row,
            config,
            model,
            messages: history.messages,
            fixedTokens,
            storedMessages: history.storedMessages,
            store,
            signal: active.controller.signal,
            overflow,
            mayCall: (tokens) => meter.beforeOutsideCall(tokens) === null,
            summaryTimeoutMs: this.#options.modelIdleMs,
          });
          if (fitted.summaryUsage) meter.addOutsideSteps(fitted.summaryUsage);
          if (fitted.compaction) {
            appendProjected({
              writer,
              projector,
              chunk: { type: 'data-compaction', data: fitted.compaction },
            });
          }
          return { messages: fitted.messages, over: fitted.over };
        }
      : null;
    const messages = fit ? (await fit(false)).messages : history.messages;
    return { config, model, maxSteps, resume, projector, tools, fixedTokens, messages, meter, fit };
  }

  /**
   * Drives the agent loop: the first call of this execution is checked against the budget here (the loop
   * checks every later one), and a prompt the provider finds too long is compacted and tried once more.
   */
  async #runLoop(options: {
    row: RunRow;
    active: ActiveRun;
    writer: RunEventWriter;
    setup: RunSetup;
  }): Promise<AgentLoopResult> {
    const { row, active, writer, setup } = options;
    const { config, model, resume, meter, projector } = setup;
    const stepsBefore = resume?.stepsDone ?? 0;
    // An earlier execution ended the loop (the model answered, or the steps ran out) and died before ending the
    // run: no call is left to make, and the outcome is decided as that execution's would have been (a step
    // budget the model wanted to go past pauses, aborts or continues the run, as `onExceeded` says).
    if (resume?.loopEnded || stepsBefore >= setup.maxSteps) return { ...NO_LOOP, stepsDone: stepsBefore };
    const loopStartedAt = Date.now();
    const refused = meter.beforeCall(
      estimateTokens((config.instructions ?? '') + JSON.stringify(setup.messages)),
    );
    const loop = (loopMessages: ModelMessage[], resumed: boolean, stepsDone = stepsBefore) =>
      runAgentLoop({
        model,
        messages: loopMessages,
        tools: setup.tools,
        system: config.instructions ?? undefined,
        toolContext: {
          runId: row.id,
          chatId: row.chat_id,
          workspaceId: row.workspace_id,
          userId: row.created_by,
          agentId: row.agent_id,
        },
        callOptions: config.modelOptions,
        maxSteps: setup.maxSteps,
        stepsDone,
        projector,
        messageId: row.assistant_message_id ?? row.id,
        resumed,
        writer,
        signal: active.controller.signal,
        keepAbortChunk: () => active.reason === RunErrorCode.stopped || active.reason === null,
        modelIdleMs: this.#options.modelIdleMs,
        onModelIdle: () => active.reason === null && this.abort(row.id, 'model_idle'),
        fitStep: setup.fit
          ? (messages) => fitStepContext({ config, messages, fixedTokens: setup.fixedTokens })
          : undefined,
        meter,
        onBudgetCut: () => this.abort(row.id, 'budget'),
        onFirstToken: () =>
          observeFirstToken(this.#options.metrics, {
            model: config.model,
            ms: Date.now() - loopStartedAt,
          }),
        recordStep: (step) => this.#recordCounted(row.id, row.epoch, step, meter),
        updateStepParts: (step, parts) =>
          this.#options.runs.updateStepParts({ runId: row.id, epoch: row.epoch, step, parts }),
      });
    if (refused) return { ...NO_LOOP, stepsDone: stepsBefore, budgetExceeded: refused };
    const result = await loop(setup.messages, resume !== null);
    if (!result.contextOverflow || active.controller.signal.aborted || !setup.fit) return result;
    // The provider found the prompt too long: compact to half the budget and try the step once more. A new
    // run's first step's prompt is the history; one that cannot be fitted so is not sent again, and the run
    // fails with that message (and its `error` chunk) in place of the provider's.
    if (result.stepsDone === stepsBefore && !result.overflowedPrompt) {
      const refitted = await setup.fit(true);
      if (refitted.over) {
        const { tokens, maxTokens } = refitted.over;
        return { ...result, errorText: new ContextBudgetError(tokens, maxTokens, true).message };
      }
      return loop(refitted.messages, true);
    }
    // A later step's, or a resumed execution's first, is the history and this execution's steps (and what the
    // tools it resumed with returned: they are not run again): compacted as the loop fits a step, harder.
    let fitted: Awaited<ReturnType<typeof fitStepContext>>;
    try {
      fitted =
        result.overflowedPrompt &&
        (await fitStepContext({
          config,
          messages: result.overflowedPrompt,
          fixedTokens: setup.fixedTokens,
          overflow: true,
        }));
    } catch (error) {
      if (error instanceof ContextBudgetError) return { ...result, errorText: error.message };
      throw error;
    }
    if (!fitted) return result;
    if (result.unrecordedStep) {
      await writer.flush();
      await this.#recordCounted(row.id, row.epoch, result.unrecordedStep, meter);
    }
    appendProjected({ writer, projector, chunk: { type: 'data-compaction', data: fitted.compaction } });
    return loop(fitted.messages, true, result.stepsDone);
  }

  /** A run's stored configuration; runs begun before agents existed get the default agent's. */
  #runConfig(row: RunRow): RunConfig {
    if (row.config) return row.config as unknown as RunConfig;
    const budget = (row.options as { budget?: { maxSteps?: number } }).budget ?? {};
    return {
      agentId: null,
      instructions: null,
      model: row.model,
      modelOptions: {},
      tools: this.#options.tools.names().map((name) => ({ name, needsApproval: false })),
      mcpServers: [],
      budget: { maxSteps: budget.maxSteps },
      multitask: 'reject',
      context: {},
      continuation: null,
    };
  }

  /**
   * Counts what the execution spent outside its finished steps (a step it did not finish, a context summary)
   * against the workspace's daily usage. After the run's status change: a failure here is logged, and leaves
   * the run as it is.
   */
  async #recordSpendOutsideSteps(row: RunRow, meter: BudgetMeter): Promise<void> {
    const { tokens, costUsd } = meter.outsideSteps();
    if (tokens <= 0 && costUsd <= 0) return;
    await retryTransient(() =>
      this.#options.runs.recordSpendOutsideSteps({
        runId: row.id,
        workspaceId: row.workspace_id,
        tokens,
        costUsd,
      }),
    ).catch((error: unknown) => {
      this.#options.logger.error(
        { err: error, runId: row.id, tokens },
        'recording the spend outside finished steps failed; the daily quota does not count it',
      );
    });
  }

  /** Records a finished step and counts its spend on the meter as recorded (no longer the step under way's). */
  async #recordCounted(runId: string, epoch: number, step: FinishedStep, meter: BudgetMeter): Promise<void> {
    await this.#recordStep(runId, epoch, step);
    meter.recorded(step.usage, step.costUsd);
  }

  #recordStep(runId: string, epoch: number, step: FinishedStep): Promise<void> {
    return retryTransient(() => this.#options.runs.recordStep({ runId, epoch, ...step }), {
      attempts: Number.POSITIVE_INFINITY,
      deadlineMs: Math.floor(this.leases.leaseMs / 2),
      delayMs: 50,
    });
  }
}
