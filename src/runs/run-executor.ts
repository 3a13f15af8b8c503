import type { LanguageModel, ModelMessage, UIMessage } from 'ai';
import type { Logger } from 'pino';
import type { McpClientPool } from '../agent/mcp-tools.ts';
import { buildToolSet } from '../agent/tool-set.ts';
import type { ToolRegistry } from '../agent/tools.ts';
import type { CompactionStore } from '../agent/compaction-store.ts';
import type { ModelPrices } from '../agent/prices.ts';
import type { RunConfig } from '../protocol/agent.ts';
import type { RunWaiting } from '../protocol/run.ts';
import type { ChatService } from '../chats/chat-service.ts';
import type { Clock } from '../clock.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import { observeFirstToken, type Metrics } from '../metrics.ts';
import { MessageProjector } from '../protocol/message-projector.ts';
import type { RunRow } from '../store/schema.ts';
import { retryTransient } from '../store/transient.ts';
import { LeaseLostError, type EventLog, type RunEventWriter } from '../stream/event-log.ts';
import {
  PersistenceFailedError,
  runAgentLoop,
  sumUsage,
  type AgentLoopResult,
  type FinishedStep,
} from './agent-loop.ts';
import { BudgetMeter, estimateTokens, type BudgetExceeded, type Spend } from './budget.ts';
import { loadRunContext } from './context-loader.ts';
import { fitContext } from './run-context.ts';
import { LeaseKeeper } from './lease-keeper.ts';
import {
  Ending,
  INTERRUPTED_BY_BUDGET,
  INTERRUPTED_BY_SHUTDOWN,
  claimRequest,
  type Lifecycle,
  type TransitionRequest,
  type TransitionResult,
} from './lifecycle.ts';
import type { RunUsage } from './run-object.ts';
import type { RunService } from './run-service.ts';
import { RunErrorCode } from './run-status.ts';

/**
 * Why this instance stops executing a run before its loop ends: a stop (the run ends `aborted`), a
 * shutdown (the run is handed back to `pending` for the next owner), or a lost lease (someone else owns it).
 */
type AbortReason = typeof RunErrorCode.stopped | 'released' | 'lease_lost' | 'budget';

/** A loop that never ran: the budget refused its first call. */
const NO_LOOP: AgentLoopResult = {
  errorText: null,
  sawAbort: false,
  stepsDone: 0,
  usages: [],
  budgetExceeded: null,
  budgetCutStep: false,
  approvals: [],
  contextOverflow: false,
};

/** How long a waiting run waits by default (`OUTRUN_WAIT_TTL_MS`): 7 days. */
const DEFAULT_WAIT_TTL_MS = 7 * 24 * 60 * 60 * 1000;

/** Whether the last step of a message called a tool (the model meant to go on). */
function lastStepCalledTool(parts: UIMessage['parts']): boolean {
  const lastStart = parts.map((part) => part.type).lastIndexOf('step-start');
  return parts
    .slice(Math.max(0, lastStart))
    .some((part) => part.type.startsWith('tool-') || part.type === 'dynamic-tool');
}

interface ActiveRun {
  controller: AbortController;
  reason: AbortReason | null;
  done: Promise<void>;
  finish: () => void;
}

/** A run this instance claims in its start transaction (see `RunExecutor.adopt`). */
export interface LocalRun {
  /** The claim to apply in the start transaction. */
  claim: TransitionRequest;
  /** After commit: executes the claimed run. Never throws. */
  run(claimed: TransitionResult): Promise<void>;
  /** The claim did not happen (or did not commit): forget the run. */
  cancel(): void;
}

/** Where a resumed run goes on: what its earlier executions streamed and the steps they finished. */
interface ResumePoint {
  projector: MessageProjector;
  stepsDone: number;
  finishedParts: UIMessage['parts'];
  usages: RunUsage[];
  /** The last finished step called no tool: the model gave its final answer before the crash. */
  loopEnded: boolean;
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
  quotas?: { remaining(workspaceId: string): Promise<{ tokens: number | null; costUsd: number | null }> };
  /** Where compaction summaries are kept and reused. Absent: histories are sent whole. */
  compactions?: CompactionStore;
  /** How long a waiting run waits for an answer. @default 7 days */
  waitTtlMs?: number;
  /** Starts the follow-up of a run whose step budget said `continue` (the engine's). */
  continueRun?: (run: RunRow, config: RunConfig) => Promise<unknown>;
}

/**
 * Executes runs on this instance: claims a pending run, keeps its lease, drives the agent loop with an
 * abort signal that belongs to the run (never to an HTTP socket), and ends the run through the lifecycle.
 * A run that executed before (a crash, a release) goes on from its last finished step. Anything that
 * throws before the loop owns the run ends it `failed` (the safety net of invariant 5).
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
   * The local fast path: a run this instance claims inside the transaction that begins it, so a start skips
   * the queue hop and a second transaction. Call it in that transaction: the run is registered at once (a
   * stop that arrives before the loop is kept), `claim` is the request to apply there, and after commit
   * `run` executes it (never throws) or `cancel` forgets it. Null when this instance already executes it.
   */
  adopt(runId: string): LocalRun | null {
    const active = this.#track(runId);
    if (!active) return null;
    return {
      claim: claimRequest({
        runId,
        owner: this.#options.instanceId,
        leaseExpiresAt: this.leases.expiresAt(),
      }),
      run: (claimed) => this.#execute(runId, active, async () => claimed),
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
  ): Promise<void> {
    try {
      const claimed = await claim();
      if (!claimed) return;
      this.#options.metrics.activeRuns.inc();
      this.leases.hold(runId, claimed.row.epoch);
      try {
        await this.#own(claimed.row, active, claimed.events.at(-1)!.seq);
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

  async #own(row: RunRow, active: ActiveRun, lastSeq: number): Promise<void> {
    const { lifecycle, log, logger, faults } = this.#options;
    const context = { runId: row.id, chatId: row.chat_id, attempt: row.attempt };
    const epoch = row.epoch;
    const writer: RunEventWriter = log.openWriter({ runId: row.id, epoch, nextSeq: lastSeq + 1 });
    let loopOwnsRun = false;
    try {
      if (row.stop_requested_at) this.abort(row.id, RunErrorCode.stopped);
      await faults.hit(FaultPoint.beforeLoop, { runId: row.id });
      // The configuration stored when the run began: an agent edited since does not change it.
      const config = this.#runConfig(row);
      const model = this.#options.resolveModel(config.model);
      const maxSteps = config.budget.maxSteps ?? this.#options.defaultMaxSteps ?? 8;
      // An earlier execution (a crash, a release) left finished steps: go on after them.
      const resume = row.attempt > 1 ? await this.#resumePoint(row, epoch) : null;
      const tools = await buildToolSet({ config, registry: this.#options.tools, mcp: this.#options.mcp });
      const history = await loadRunContext({
        chats: this.#options.chats,
        run: row,
        finishedParts: resume?.finishedParts ?? [],
        tools,
      });
      // Over the context budget: compacted, and the compaction is an event of the stream.
      const fitted = this.#options.compactions
        ? await fitContext({
            run: row,
            config,
            model,
            messages: history.messages,
            storedMessages: history.storedMessages,
            store: this.#options.compactions,
            signal: active.controller.signal,
          })
        : { messages: history.messages, compaction: null };
      if (fitted.compaction) writer.append({ type: 'data-compaction', data: fitted.compaction });
      const messages = fitted.messages;
      loopOwnsRun = true;
      logger.info(
        { ...context, resumedAfterStep: resume?.stepsDone },
        resume ? 'run resumed' : 'run started',
      );
      if (resume && (resume.loopEnded || resume.stepsDone >= maxSteps)) {
        // The earlier execution finished the agent loop but died before ending the run.
        await lifecycle.end({
          runId: row.id,
          epoch,
          ending: Ending.succeeded(),
          parts: resume.projector.parts(),
          changes: { usage: jsonOrNull(sumUsage(resume.usages)), step_count: resume.stepsDone },
        });
        return;
      }
      const projector = resume?.projector ?? new MessageProjector();
      const meter = new BudgetMeter({
        budget: config.budget,
        price: this.#options.prices.of(config.model),
        spent: await this.#spentSoFar(row, resume?.stepsDone ?? 0),
        quota: await this.#options.quotas?.remaining(row.workspace_id),
      });
      // The first call of this execution is checked here; the loop checks every later one.
      const loopStartedAt = Date.now();
      const refused = meter.beforeCall(
        estimateTokens((config.instructions ?? '') + JSON.stringify(messages)),
      );
      const stepsBefore = resume?.stepsDone ?? 0;
      const loop = (loopMessages: ModelMessage[], resumed: boolean) =>
        runAgentLoop({
          model,
          messages: loopMessages,
          tools,
          system: config.instructions ?? undefined,
          toolContext: {
            runId: row.id,
            chatId: row.chat_id,
            workspaceId: row.workspace_id,
            userId: row.created_by,
            agentId: row.agent_id,
          },
          callOptions: config.modelOptions,
          maxSteps,
          stepsDone: resume?.stepsDone ?? 0,
          projector,
          messageId: row.assistant_message_id ?? row.id,
          resumed,
          writer,
          signal: active.controller.signal,
          keepAbortChunk: () => active.reason === RunErrorCode.stopped || active.reason === null,
          meter,
          onBudgetCut: () => this.abort(row.id, 'budget'),
          onFirstToken: () =>
            observeFirstToken(this.#options.metrics, {
              model: config.model,
              ms: Date.now() - loopStartedAt,
            }),
          recordStep: (step) => this.#recordStep(row.id, epoch, step),
        });
      let result: AgentLoopResult = refused
        ? { ...NO_LOOP, stepsDone: stepsBefore, budgetExceeded: refused }
        : await loop(messages, resume !== null);
      if (
        result.contextOverflow &&
        result.stepsDone === stepsBefore &&
        !active.controller.signal.aborted &&
        this.#options.compactions
      ) {
        // The provider found the prompt too long: compact to half the budget and try the step once more.
        const refitted = await fitContext({
          run: row,
          config,
          model,
          messages: history.messages,
          storedMessages: history.storedMessages,
          store: this.#options.compactions,
          signal: active.controller.signal,
          overflow: true,
        });
        if (refitted.compaction) writer.append({ type: 'data-compaction', data: refitted.compaction });
        result = await loop(refitted.messages, true);
      }
      const spent = meter.spent();
      const changes = {
        usage: JSON.stringify({ inputTokens: spent.inputTokens, outputTokens: spent.outputTokens }),
        cost_usd: spent.costUsd,
        step_count: result.stepsDone,
      };
      if (active.reason === 'lease_lost') throw new LeaseLostError(row.id);
      if (active.reason === 'released') {
        await faults.hit(FaultPoint.beforeRelease, { runId: row.id });
        const released = await lifecycle.handBack({ runId: row.id, epoch, reason: INTERRUPTED_BY_SHUTDOWN });
        logger.info({ ...context, released: released !== null }, 'run released on shutdown');
        return;
      }
      const exceeded =
        result.budgetExceeded ??
        // An explicit step budget the model wanted to go past (its last step called a tool).
        (config.budget.maxSteps !== undefined &&
        result.stepsDone >= config.budget.maxSteps &&
        result.errorText === null &&
        !active.controller.signal.aborted &&
        lastStepCalledTool(projector.parts())
          ? 'steps'
          : null);
      if (
        active.reason === RunErrorCode.stopped ||
        (active.controller.signal.aborted && active.reason !== 'budget')
      ) {
        await this.#end(
          row,
          epoch,
          Ending.aborted(RunErrorCode.stopped, { sendAbort: !result.sawAbort }),
          projector,
          changes,
        );
      } else if (result.errorText !== null) {
        // The SDK already streamed the model's `error` chunk (held back only for a context overflow).
        const ending = Ending.failed(RunErrorCode.modelError, {
          message: result.errorText,
          sendError: result.contextOverflow,
        });
        await this.#end(row, epoch, ending, projector, changes);
      } else if (exceeded && meter.quotaExceeded) {
        // The workspace's daily quota ran out mid-run: the run ends, keeping what it streamed.
        await this.#end(row, epoch, Ending.aborted(RunErrorCode.quotaExceeded), projector, changes);
      } else if (exceeded) {
        await this.#onBudgetExceeded({
          row,
          epoch,
          config,
          exceeded,
          cut: result.budgetCutStep,
          projector,
          changes,
        });
      } else if (result.approvals.length > 0) {
        const waiting: RunWaiting = {
          reason: 'approval',
          approvals: result.approvals,
          expiresAt: this.#waitExpiresAt(),
        };
        await lifecycle.wait({ runId: row.id, epoch, waiting, changes });
        logger.info({ ...context, approvals: result.approvals.length }, 'run waits for approval');
      } else {
        await this.#end(row, epoch, Ending.succeeded(), projector, changes);
      }
    } catch (error) {
      // Whatever failed, the model call (if any) stops here.
      active.controller.abort();
      if (error instanceof LeaseLostError || active.reason === 'lease_lost') {
        logger.warn(context, 'lease lost; leaving the run to its new owner');
        return;
      }
      const code = !loopOwnsRun
        ? RunErrorCode.startFailed
        : writer.failure || error instanceof PersistenceFailedError
          ? RunErrorCode.persistenceFailed
          : RunErrorCode.internalError;
      logger.error({ err: error, ...context, code }, 'run failed');
      await writer.flush().catch(() => {});
      await lifecycle.end({ runId: row.id, epoch, ending: Ending.failed(code) });
    }
  }

  async #end(
    row: RunRow,
    epoch: number,
    ending: Ending,
    projector: MessageProjector,
    changes: Record<string, unknown>,
  ): Promise<void> {
    const ended = await this.#options.lifecycle.end({
      runId: row.id,
      epoch,
      ending,
      parts: projector.parts(),
      changes,
    });
    if (ended) {
      this.#options.logger.info(
        { runId: row.id, chatId: row.chat_id, status: ending.status, code: ending.error?.code },
        'run ended',
      );
    }
  }

  /**
   * The budget ran out. `pause` (the default) makes the run wait for `POST /v1/runs/:id/continue` (a step
   * the budget cut is closed as interrupted, and redone after); `abort` ends it `aborted`/`budget_exceeded`
   * with its partial output; `continue` (step budgets only) ends it and starts a follow-up run.
   */
  async #onBudgetExceeded(options: {
    row: RunRow;
    epoch: number;
    config: RunConfig;
    exceeded: BudgetExceeded;
    cut: boolean;
    projector: MessageProjector;
    changes: { usage: string; cost_usd: number; step_count: number };
  }): Promise<void> {
    const { row, epoch, config, exceeded, projector, changes } = options;
    const onExceeded = config.budget.onExceeded ?? 'pause';
    if (onExceeded === 'abort') {
      await this.#end(row, epoch, Ending.aborted(RunErrorCode.budgetExceeded), projector, changes);
      return;
    }
    if (onExceeded === 'continue' && exceeded === 'steps') {
      await this.#end(row, epoch, Ending.succeeded(), projector, changes);
      await this.#options
        .continueRun?.(row, config)
        .catch((error: unknown) =>
          this.#options.logger.error({ err: error, runId: row.id }, 'starting the continuation failed'),
        );
      return;
    }
    const spent = JSON.parse(changes.usage) as RunUsage;
    const waiting: RunWaiting = {
      reason: 'budget',
      exceeded,
      usage: spent,
      budget: { ...config.budget },
      expiresAt: this.#waitExpiresAt(),
    };
    await this.#options.lifecycle.wait({
      runId: row.id,
      epoch,
      waiting,
      changes,
      closeInterruptedStep: options.cut ? INTERRUPTED_BY_BUDGET : undefined,
    });
    this.#options.logger.info({ runId: row.id, chatId: row.chat_id, exceeded }, 'run paused: budget used up');
  }

  #waitExpiresAt(): string {
    return new Date(
      (this.#options.clock?.now() ?? new Date()).getTime() + (this.#options.waitTtlMs ?? DEFAULT_WAIT_TTL_MS),
    ).toISOString();
  }

  /** What the run spent before this execution: its stored totals, and the time its finished steps took. */
  async #spentSoFar(row: RunRow, stepsDone: number): Promise<Spend> {
    const usage = (row.usage as RunUsage | null) ?? {};
    // Only an earlier execution of this run can have finished steps.
    const steps = row.attempt > 1 ? await this.#options.runs.listSteps(row.id) : [];
    return {
      steps: stepsDone,
      inputTokens: usage.inputTokens ?? 0,
      outputTokens: usage.outputTokens ?? 0,
      costUsd: row.cost_usd ?? 0,
      runningMs: steps.reduce(
        (sum, step) => sum + (step.finished_at.getTime() - step.started_at.getTime()),
        0,
      ),
    };
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

  #recordStep(runId: string, epoch: number, step: FinishedStep): Promise<void> {
    return retryTransient(() => this.#options.runs.recordStep({ runId, epoch, ...step }), {
      attempts: Number.POSITIVE_INFINITY,
      deadlineMs: Math.floor(this.leases.leaseMs / 2),
      delayMs: 50,
    });
  }

  /**
   * Where a resumed run goes on. The log is the truth: every step whose `finish-step` is durable counts as
   * finished (one whose record a crash lost is recorded now); a step it cut short was closed by
   * `data-step-interrupted` when the run was handed back, and is redone.
   */
  async #resumePoint(row: RunRow, epoch: number): Promise<ResumePoint> {
    const projector = new MessageProjector();
    const finished: { parts: UIMessage['parts']; seq: number }[] = [];
    const answers = new Map<string, { approved: boolean; reason?: string }>();
    for await (const { seq, chunk } of this.#options.log.replay(row.id)) {
      const step = projector.push(chunk as never);
      if (step) finished.push({ parts: step.parts, seq });
      const answer = chunk as {
        type: string;
        data?: { approvalId: string; approved: boolean; reason?: string | null };
      };
      if (answer.type === 'data-tool-approval' && answer.data) {
        answers.set(answer.data.approvalId, {
          approved: answer.data.approved,
          reason: answer.data.reason ?? undefined,
        });
      }
    }
    // Answered approvals reach the model as responses: the SDK then runs approved calls and reports denials.
    for (const step of finished) step.parts = step.parts.map((part) => withApprovalAnswer(part, answers));
    const recorded = await this.#options.runs.listSteps(row.id);
    const usages = finished.map((_, index) => (recorded[index]?.usage as RunUsage | null) ?? {});
    for (let index = recorded.length; index < finished.length; index++) {
      await this.#recordStep(row.id, epoch, {
        step: index + 1,
        parts: finished[index]!.parts,
        usage: null,
        costUsd: null,
        lastSeq: finished[index]!.seq,
        startedAt: new Date(),
      });
    }
    const last = finished.at(-1)?.parts;
    return {
      projector,
      stepsDone: finished.length,
      finishedParts: finished.flatMap((step) => step.parts),
      usages,
      loopEnded:
        last !== undefined &&
        !last.some((part) => part.type.startsWith('tool-') || part.type === 'dynamic-tool'),
    };
  }
}

/** A tool part waiting for approval, with the person's answer applied when there is one. */
function withApprovalAnswer(
  part: UIMessage['parts'][number],
  answers: Map<string, { approved: boolean; reason?: string }>,
): UIMessage['parts'][number] {
  const tool = part as { state?: string; approval?: { id: string } };
  if (tool.state !== 'approval-requested' || !tool.approval) return part;
  const answer = answers.get(tool.approval.id);
  if (!answer) return part;
  return {
    ...part,
    state: 'approval-responded',
    approval: { id: tool.approval.id, approved: answer.approved, reason: answer.reason },
  } as UIMessage['parts'][number];
}

function jsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}
