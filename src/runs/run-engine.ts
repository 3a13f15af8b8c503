import type { Logger } from 'pino';
import { BusChannel, type Bus } from '../bus/bus.ts';
import { systemClock, type Clock } from '../clock.ts';
import type { ModelPrices } from '../agent/prices.ts';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  OutrunError,
  QuotaExceededError,
  RunAlreadyActiveError,
} from '../errors.ts';
import type { Db } from '../store/database.ts';
import { logPassFailure, retryTransient } from '../store/transient.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import type { Metrics } from '../metrics.ts';
import type { StartGuard } from '../quotas/quota-service.ts';
import type { RunQueue } from '../queue/queue.ts';
import type { Transaction } from 'kysely';
import type { Database, RunRow } from '../store/schema.ts';
import type { EventCompactor } from '../stream/event-compactor.ts';
import type { EventLog } from '../stream/event-log.ts';
import {
  Ending,
  INTERRUPTED_BY_CRASH,
  STOPPABLE_STATUSES,
  type Lifecycle,
  type TransitionResult,
} from './lifecycle.ts';
import { approvalAlreadyAnswered, findApprovalAnswer } from './approval-answer.ts';
import { usedUpLimit, type BudgetExceeded, type Spend } from './budget.ts';
import { spentByRun } from './resume-point.ts';
import { assertFitsContext } from './run-context.ts';
import type { LocalRun, RunExecutor } from './run-executor.ts';
import { toRunObject, type RunObject } from './run-object.ts';
import type { BeginRunOptions, RunService } from './run-service.ts';
import type { RunOverrides } from '../agents/agent-schema.ts';
import type { Budget, RunConfig } from '../protocol/agent.ts';
import type { RunWaiting } from '../protocol/run.ts';
import { RunErrorCode, RunStatus, RunTrigger, isTerminalStatus } from './run-status.ts';

/** What to do when the chat already has an active run (DESIGN §4). */
export type Multitask = 'reject' | 'interrupt' | 'enqueue';

export interface StartRunOptions extends Omit<BeginRunOptions, 'enqueue'> {
  /** @default 'reject' */
  multitask?: Multitask;
}

/** Resolves the configuration a run executes with: its chat's agent (or the default) and the run's overrides. */
export interface RunConfigResolver {
  runConfig(options: {
    workspaceId: string;
    agentId: string | null;
    overrides?: RunOverrides;
  }): Promise<RunConfig>;
  /**
   * The tokens of the definitions of the built-in tools `config` offers, sent with every call and never cut:
   * the part of a run's tools a start can count (an MCP server's are listed when the run executes).
   */
  builtInToolsTokens(config: RunConfig): Promise<number>;
}

export interface StartChatRunOptions {
  /** The new run's id, chosen beforehand (see `BeginRunOptions.runId`). */
  runId?: string;
  workspaceId: string;
  userId: string;
  chatId: string;
  /** The chat's agent; null for the workspace default. */
  agentId: string | null;
  /**
   * For a caller that did not read the chat: the user it must belong to, and the API key to check with it.
   * The statement that begins the run checks them, and that the chat's agent is `agentId` (see
   * `BeginRunOptions.chatCheck`).
   */
  checkChat?: { ownerId: string; keyId?: string };
  parts: unknown[];
  trigger: RunTrigger;
  overrides?: RunOverrides;
  metadata?: Record<string, unknown> | null;
  parentRunId?: string | null;
  scheduleId?: string | null;
  inTransaction?: BeginRunOptions['inTransaction'];
  /** Creates the chat in the run's transaction (see `BeginRunOptions.createChat`). */
  createChat?: BeginRunOptions['createChat'];
}

export interface StopResult {
  stopped: boolean;
  run: RunObject | null;
  /** With `includeQueued`: how many queued runs were cancelled. */
  queuedCancelled?: number;
}

export interface RunEngineOptions {
  db: Db;
  runs: RunService;
  lifecycle: Lifecycle;
  executor: RunExecutor;
  configs: RunConfigResolver;
  prices: ModelPrices;
  /**
   * Workspace quotas: a start beyond one is refused before anything is written, or, for `runsPerMinute`, by
   * the guard it returns, in the transaction that begins the run (which then writes nothing).
   */
  quotas?: { assertCanStart(workspaceId: string): Promise<StartGuard | null> };
  /** Throws `ModelUnavailableError` for a model this server cannot call. */
  resolveModel: (modelId: string) => unknown;
  log: EventLog;
  /** Each sweep also compacts finished runs whose events are still rows (their scheduling was lost). */
  compactor?: Pick<EventCompactor, 'sweep'>;
  bus: Bus;
  queue: RunQueue;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  clock?: Clock;
  /**
   * This instance is the only one on its database (embedded mode): on start, every run left `running` was
   * left by a previous process, and is resumed at once instead of after its lease. @default true
   */
  singleInstance?: boolean;
  /** How often the sweeper looks for runs whose lease ran out. @default 10000 */
  sweepIntervalMs?: number;
  /** A worker's lease; a pending run unclaimed for this long is handed to the queue again. @default 30000 */
  leaseMs?: number;
  /** Executions a run gets: one whose worker died is resumed until then, and settled after. @default 3 */
  maxAttempts?: number;
  /** This instance executes runs (a worker); false for an API-only instance. @default true */
  worker?: boolean;
  /** How long `multitask: "interrupt"` waits for the active run to end. @default 10000 */
  interruptWaitMs?: number;
}

/**
 * The run engine, the one door to runs for HTTP, the CLI and tests: starts runs (the gate, the multitask
 * policies, the queue, a safety net between them), stops them from any instance, executes them on workers,
 * sweeps up runs a crash left behind, and on shutdown hands unfinished runs back for the next owner.
 */
export class RunEngine {
  readonly #options: RunEngineOptions;
  readonly #clock: Clock;
  #sweepTimer: NodeJS.Timeout | null = null;
  #unsubscribeStop: (() => Promise<void>) | null = null;
  #sweeping: Promise<number> | null = null;

  constructor(options: RunEngineOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
  }

  get runs(): RunService {
    return this.#options.runs;
  }

  /** Resumes what a previous process left active, then starts taking runs and sweeping. */
  async start(): Promise<void> {
    const { bus, queue, executor } = this.#options;
    this.#unsubscribeStop = await bus.subscribe(BusChannel.runStop, (message) => {
      executor.abort((message as { runId: string }).runId, RunErrorCode.stopped);
    });
    if (this.#options.worker !== false) queue.process((job) => executor.execute(job.runId));
    if (this.#options.singleInstance !== false) await this.sweep({ all: true });
    const interval = this.#options.sweepIntervalMs ?? 10_000;
    this.#sweepTimer = setInterval(() => {
      this.sweep({ all: false }).catch((error: unknown) =>
        logPassFailure(this.#options.logger, error, 'sweeping runs failed'),
      );
    }, interval);
    this.#sweepTimer.unref();
  }

  /**
   * Starts a run on a chat: checks the workspace's quotas, resolves the configuration the run will execute
   * with (stored on the run, so a later edit of the agent never changes it), checks the model before anything
   * is written, then `#beginRun` with the quota's guard.
   */
  async startChatRun(options: StartChatRunOptions): Promise<RunObject> {
    const guard = (await this.#options.quotas?.assertCanStart(options.workspaceId)) ?? null;
    const { configs } = this.#options;
    const config = await configs.runConfig({
      workspaceId: options.workspaceId,
      agentId: options.agentId,
      overrides: options.overrides,
    });
    // Fails with 400 model_unavailable before anything is written or any model is called.
    this.#options.resolveModel(config.model);
    if (config.budget.maxCostUsd !== undefined) this.#assertPriced(config.model);
    assertFitsContext(config, options.parts, await configs.builtInToolsTokens(config));
    return this.#beginRun({
      runId: options.runId,
      workspaceId: options.workspaceId,
      chatId: options.chatId,
      userId: options.userId,
      parts: options.parts,
      model: config.model,
      trigger: options.trigger,
      config: config as unknown as Record<string, unknown>,
      agentId: config.agentId,
      multitask: options.overrides?.multitask ?? config.multitask,
      metadata: options.metadata,
      parentRunId: options.parentRunId,
      scheduleId: options.scheduleId,
      inTransaction: withGuard(guard, options.inTransaction),
      createChat: options.createChat,
      chatCheck: options.checkChat && { ...options.checkChat, agentId: options.agentId },
    });
  }

  /**
   * Begins a run, held to the workspace's quotas like every run the workspace begins: a start beyond one
   * throws `QuotaExceededError` having written nothing (see `RunEngineOptions.quotas`). Then `#beginRun`.
   */
  async startRun(options: StartRunOptions): Promise<RunObject> {
    const guard = (await this.#options.quotas?.assertCanStart(options.workspaceId)) ?? null;
    return this.#beginRun({ ...options, inTransaction: withGuard(guard, options.inTransaction) });
  }

  /**
   * Begins a run whose start already passed the quota check (its guard is in `inTransaction`) and hands it to
   * a worker. When the chat has an active run, `multitask` decides: `reject` throws `RunAlreadyActiveError`
   * before any model call, `interrupt` stops that run and waits for it to end, `enqueue` creates this one
   * `queued` behind it. If the start path fails after the run was begun, the run is ended `failed` rather
   * than left pending.
   */
  async #beginRun(options: StartRunOptions): Promise<RunObject> {
    const { runs, lifecycle, log, queue, logger, faults } = this.#options;
    const multitask = options.multitask ?? 'reject';
    // A free slot on this worker: the run is claimed by the statement that begins it and executes here,
    // skipping the queue hop and a second transaction (the first token comes sooner under load).
    const localClaim = this.#options.worker !== false && !faults.isArmed(FaultPoint.beforeClaim);
    const slot = localClaim ? (queue.reserve?.() ?? null) : null;
    let local: LocalRun | null = null;
    let claimed = null as TransitionResult | null;
    const begin = async (beginOptions: BeginRunOptions) => {
      const result = await runs.begin({
        ...beginOptions,
        localClaim: slot
          ? (runId) => {
              // A first attempt the chat refused (the start then retries locked) claimed another run id.
              local?.cancel();
              local = this.#options.executor.adopt(runId);
              return local?.claim ?? null;
            }
          : undefined,
      });
      claimed = result.claimed;
      return result;
    };
    const forgetClaim = () => {
      local?.cancel();
      local = null;
      claimed = null;
    };
    const abandonLocal = () => {
      forgetClaim();
      slot?.release();
    };
    let begun;
    try {
      try {
        begun = await begin({ ...options, enqueue: multitask === 'enqueue' });
      } catch (error) {
        forgetClaim();
        if (!(error instanceof RunAlreadyActiveError) || multitask !== 'interrupt') throw error;
        await this.#assertNothingQueued(options.chatId, String(error.details.runId));
        await this.interrupt(String(error.details.runId));
        begun = await begin(options);
      }
    } catch (error) {
      abandonLocal();
      throw error;
    }
    const { run } = begun;
    await log.publish(run.id, begun.events).catch(() => {});
    if (run.status === RunStatus.queued) {
      abandonLocal();
      return run;
    }
    if (claimed) await lifecycle.afterCommit(claimed);
    try {
      await faults.hit(FaultPoint.afterBegin, { runId: run.id });
    } catch (error) {
      logger.error({ err: error, runId: run.id, chatId: run.chatId }, 'starting the run failed');
      const epoch = claimed?.row.epoch;
      abandonLocal();
      const ended = await lifecycle.endUnowned({
        runId: run.id,
        from: epoch === undefined ? [RunStatus.pending] : [RunStatus.running],
        epoch,
        ending: Ending.failed(RunErrorCode.startFailed),
      });
      return ended?.run ?? run;
    }
    if (slot && local && claimed) {
      const [localRun, claim] = [local as LocalRun, claimed];
      slot.run(() => localRun.run(claim, begun.history));
      // The run as begun (`pending`): the start's answer is the same whichever path executes it.
      return run;
    }
    abandonLocal();
    await queue.enqueue({ runId: run.id, epoch: 0 }).catch((error: unknown) => {
      // The run stays pending: the sweeper hands it to the queue again once the queue is back.
      logger.warn({ err: error, runId: run.id }, 'handing the run to the queue failed; the sweeper retries');
    });
    return run;
  }

  /**
   * Starts the follow-up of a run whose step budget ran out with `onExceeded: "continue"`: a run in the same
   * chat (`trigger: "continue"`, `parentRunId`), with the same configuration, as long as the chain has not
   * used the agent's `continuation.maxRuns`. Returns the new run, or null at the end of the chain. Held to
   * the workspace's quotas as any start (`startRun`): a refused one throws `QuotaExceededError`.
   *
   * The parent's ending recorded the follow-up as owed (`continuation_owed_at`); the follow-up's begin
   * transaction settles that, and only a start that settles it begins a run. So the parent's owner and the
   * sweeper (which starts what a dead owner owed) may both call this, on any instances: one follow-up begins.
   * A refused start (the chain's end, a deleted chat, a daily quota) settles the debt too: it is not tried
   * again. One the workspace's `runsPerMinute` refused stays owed, deferred until its window has room.
   */
  async startContinuation(parent: RunRow, config: RunConfig): Promise<RunObject | null> {
    const { runs, db } = this.#options;
    const maxRuns = config.continuation?.maxRuns ?? 0;
    const followUp = () =>
      db
        .selectFrom('runs')
        .selectAll()
        .where('chat_id', '=', parent.chat_id)
        .where('parent_run_id', '=', parent.id)
        .where('trigger', '=', RunTrigger.continue)
        .executeTakeFirst();
    // A transient database error here would lose the follow-up until the sweeper's next look, so the start is
    // retried; a try whose commit went through unanswered settled the debt, and its follow-up is found.
    return retryTransient(
      async () => {
        if ((await runs.continuationDepth(parent.id)) >= maxRuns) {
          await runs.settleContinuation(parent.id);
          return null;
        }
        try {
          return await this.startRun({
            workspaceId: parent.workspace_id,
            chatId: parent.chat_id,
            userId: parent.created_by,
            parts: [{ type: 'text', text: CONTINUATION_TEXT }],
            model: config.model,
            trigger: RunTrigger.continue,
            config: config as unknown as Record<string, unknown>,
            agentId: parent.agent_id,
            parentRunId: parent.id,
            multitask: 'enqueue',
            inTransaction: async (tx) => {
              if (!(await runs.settleContinuation(parent.id, tx))) throw new ContinuationSettledError();
            },
          });
        } catch (error) {
          if (error instanceof ContinuationSettledError) {
            const begun = await followUp();
            return begun ? toRunObject(begun) : null;
          }
          // The workspace started its minute's runs: owed still, tried again once the window has room.
          if (error instanceof QuotaExceededError && error.quota === 'runsPerMinute') {
            await runs.deferContinuation(parent.id, error.retryAfterSeconds);
          } else if (error instanceof OutrunError) {
            // Refused for the workspace's state (the chat was deleted, a daily quota): owed no longer.
            await runs.settleContinuation(parent.id);
          }
          throw error;
        }
      },
      { attempts: 6, deadlineMs: 30_000 },
    );
  }

  /**
   * Answers one pending approval of a `waiting` run (from any instance, at any later time). The answer is an
   * event of the run's stream; once every approval is answered the run becomes `pending` and a worker
   * resumes it: approved calls execute, denied ones tell the model so. An approval the run had answered, in
   * this wait or an earlier one, is refused with `409 approval_already_answered` (and its `approved`) whatever
   * the run's status; an id the run never had gets `404 approval_not_found` while the run waits for an
   * approval, `409 run_not_waiting` otherwise.
   */
  async answerApproval(options: {
    runId: string;
    approvalId: string;
    approved: boolean;
    reason?: string;
  }): Promise<RunObject> {
    const { db, log, lifecycle } = this.#options;
    const answering = db.transaction().execute(async (tx) => {
      const { row, waiting } = await lockWaitingRun(tx, options.runId, 'approval');
      const approval = waiting.approvals.find((candidate) => candidate.approvalId === options.approvalId);
      if (!approval) throw new NotFoundError('approval', options.approvalId);
      if (approval.approved !== undefined) throw approvalAlreadyAnswered({ approved: approval.approved });
      approval.approved = options.approved;
      if (options.reason !== undefined) approval.reason = options.reason;
      const events = await log.appendInTransaction(tx, row.id, [
        {
          type: 'data-tool-approval',
          data: {
            approvalId: approval.approvalId,
            approved: options.approved,
            reason: options.reason ?? null,
          },
        },
      ]);
      if (waiting.approvals.every((candidate) => candidate.approved !== undefined)) {
        const change = await lifecycle.transitionIn(tx, {
          runId: row.id,
          to: RunStatus.pending,
          from: [RunStatus.waiting],
        });
        return { events, change, run: change?.run ?? toRunObject(row) };
      }
      const updated = await tx
        .updateTable('runs')
        .set({ waiting: JSON.stringify(waiting), updated_at: new Date() })
        .where('id', '=', row.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      return { events, change: null, run: toRunObject(updated) };
    });
    // Only an approval outside the current wait reads the log, once the transaction has let the row go.
    const result = await answering.catch(async (error: unknown) => {
      throw await this.#answeredEarlier(options, error);
    });
    await log.publish(options.runId, result.events).catch(() => {});
    if (result.change) await lifecycle.afterCommit(result.change);
    return result.run;
  }

  /**
   * Raises the budget of a run paused by it and resumes the run from its last finished step. Spend so far
   * stays spent: the new limits are totals for the whole run. A budget under which the run could not make
   * its next model call (a limit at or below what the run has spent) is refused with a 400 naming the limit,
   * and the run keeps waiting as it was: a continue that is accepted really resumes the run.
   */
  async continueRun(options: { runId: string; budget: Budget }): Promise<RunObject> {
    const { db, lifecycle } = this.#options;
    const change = await db.transaction().execute(async (tx) => {
      const { row } = await lockWaitingRun(tx, options.runId, 'budget');
      const config = (row.config ?? {}) as unknown as RunConfig;
      const raised = { ...config, budget: { ...config.budget, ...options.budget } };
      if (options.budget.maxCostUsd !== undefined) this.#assertPriced(row.model);
      // Counted as the run's next execution counts it (`spentBefore`): the steps of every execution so far.
      const steps = await tx
        .selectFrom('run_steps')
        .select(['started_at', 'finished_at'])
        .where('run_id', '=', row.id)
        .execute();
      assertBudgetLeft(raised.budget, spentByRun({ row, stepsDone: row.step_count, steps }));
      return lifecycle.transitionIn(tx, {
        runId: row.id,
        to: RunStatus.pending,
        from: [RunStatus.waiting],
        changes: { config: JSON.stringify(raised) },
      });
    });
    if (!change) throw new ConflictError('run_not_waiting', 'This run is not paused by its budget.');
    await lifecycle.afterCommit(change);
    return change.run;
  }

  /**
   * The refusal of an answer to an approval that is not in the run's current wait (`approval_not_found`,
   * `run_not_waiting`): `409 approval_already_answered` when an earlier wait had it answered, as it was
   * otherwise. Any other error is returned as it is.
   */
  async #answeredEarlier(options: { runId: string; approvalId: string }, error: unknown): Promise<unknown> {
    const notInWait =
      (error instanceof NotFoundError && error.code === 'approval_not_found') ||
      (error instanceof ConflictError && error.code === 'run_not_waiting');
    if (!notInWait) return error;
    const earlier = await findApprovalAnswer({ log: this.#options.log, ...options });
    return earlier ? approvalAlreadyAnswered(earlier) : error;
  }

  /** A cost budget needs the model's price: `400 price_unknown` for a model without one. */
  #assertPriced(model: string): void {
    if (this.#options.prices.of(model)) return;
    throw new InvalidRequestError(
      `budget.maxCostUsd: the model "${model}" has no price; add it to OUTRUN_MODEL_PRICES.`,
      { field: 'budget.maxCostUsd' },
      'price_unknown',
    );
  }

  /**
   * Refuses an interrupt into a chat with runs queued behind its active run, before anything is stopped: the
   * oldest queued run takes the chat as the active one settles, so the interrupt would end the active run and
   * still not start. 409 `run_already_active`, with the active run's id and how many wait.
   */
  async #assertNothingQueued(chatId: string, activeRunId: string): Promise<void> {
    const queued = (await this.#options.runs.listQueued(chatId)).length;
    if (queued === 0) return;
    throw new ConflictError(
      'run_already_active',
      `A run is active on this chat and ${queued} more wait behind it; an interrupt does not jump the queue. ` +
        'Enqueue this run, or stop the chat with includeQueued first.',
      { runId: activeRunId, queued },
    );
  }

  /**
   * Stops a run and waits, up to `interruptWaitMs`, for it to end: what `multitask: "interrupt"` does to a
   * chat's active run, for a start or a schedule. Returns early if the run is already over.
   */
  async interrupt(runId: string): Promise<void> {
    const { log, runs } = this.#options;
    let resolveEnded!: () => void;
    const ended = new Promise<void>((resolve) => (resolveEnded = resolve));
    // Subscribed before the stop, so the ending's event cannot slip past.
    const unsubscribe = await log.subscribe(runId, (events) => {
      if (events.some((event) => event.terminal)) resolveEnded();
    });
    let timer: NodeJS.Timeout | undefined;
    let waiting = true;
    try {
      const { run } = await this.stopRun(runId);
      if (!run || isTerminalStatus(run.status)) return;
      const timeout = new Promise<void>(
        (resolve) => (timer = setTimeout(resolve, this.#options.interruptWaitMs ?? 10_000)),
      );
      // The bus is best effort: a slow poll of the row backs the wait up, until the wait is over.
      const polled = (async () => {
        while (waiting) {
          await new Promise((resolve) => setTimeout(resolve, INTERRUPT_POLL_MS));
          if (!waiting) return;
          const row = await runs.get(runId);
          if (!row || isTerminalStatus(row.status)) return;
        }
      })();
      await Promise.race([ended, timeout, polled]);
    } finally {
      waiting = false;
      clearTimeout(timer);
      await unsubscribe();
    }
  }

  /**
   * Stops a run, wherever it executes: the request is recorded on the row at once, then signalled on the
   * bus (best effort: the owner's heartbeat reads the row too). A queued, pending or waiting run is ended
   * here; a running one is aborted by its worker, which ends it.
   */
  async stopRun(runId: string): Promise<StopResult> {
    const { runs, bus, lifecycle, executor, logger } = this.#options;
    const { stopped, run } = await runs.requestStop(runId);
    // A run that ended owing a follow-up (a budget `continue`) its owner did not start: the stop cancels it.
    if (!stopped && run?.continuation_owed_at) await runs.settleContinuation(run.id);
    if (!stopped || !run) return { stopped, run: run ? toRunObject(run) : null };
    if (run.status !== RunStatus.running) {
      const ended = await lifecycle.endUnowned({
        runId,
        from: [RunStatus.queued, RunStatus.pending, RunStatus.waiting],
        ending: Ending.aborted(RunErrorCode.stopped),
      });
      if (ended) return { stopped, run: ended.run };
    }
    executor.abort(runId, RunErrorCode.stopped);
    await bus.publish(BusChannel.runStop, { runId }).catch((error: unknown) => {
      logger.warn({ err: error, runId }, 'publishing a stop failed; the owner sees it at its next heartbeat');
    });
    const latest = await runs.get(runId);
    return { stopped, run: toRunObject(latest ?? run) };
  }

  /**
   * Stops the chat's active run, if it has one, and cancels a follow-up a run of the chat owes (a budget
   * `continue` whose owner died before starting it). With `includeQueued`, its queued runs are cancelled
   * first (so none of them is promoted by the active run's ending).
   */
  async stopChat(chatId: string, options: { includeQueued?: boolean } = {}): Promise<StopResult> {
    const { runs } = this.#options;
    // First: a follow-up owed but not begun (its owner died) is not started after the stop. One being begun
    // now either commits first (and is the active run stopped below) or finds the debt settled.
    await runs.settleContinuationsOfChat(chatId);
    let queuedCancelled: number | undefined;
    if (options.includeQueued) {
      queuedCancelled = 0;
      for (const queued of await runs.listQueued(chatId)) {
        if ((await this.stopRun(queued.id)).stopped) queuedCancelled += 1;
      }
    }
    const active = await runs.findActive(chatId);
    const result = active ? await this.stopRun(active.id) : { stopped: false, run: null };
    return queuedCancelled === undefined ? result : { ...result, queuedCancelled };
  }

  /**
   * Looks after runs a crash left behind. A `running` run whose lease ran out (with `all`, at the start of a
   * single instance: any `running` run) is handed back to `pending` for a worker to resume from its last
   * finished step, or, once it has used `maxAttempts` executions, ended `aborted`/`lease_expired`. A
   * `pending` run nobody claimed within a lease is handed to the queue again; a `waiting` run past its
   * `expiresAt` is ended `aborted`/`wait_expired`. It also starts, in the background, the compaction of
   * finished runs whose events are still rows. Returns how many runs it changed or re-dispatched.
   */
  async sweep(options: { all: boolean }): Promise<number> {
    if (this.#sweeping) return this.#sweeping;
    this.#sweeping = this.#sweep(options).finally(() => (this.#sweeping = null));
    return this.#sweeping;
  }

  async #sweep(options: { all: boolean }): Promise<number> {
    const { runs, executor, metrics, queue, lifecycle, faults } = this.#options;
    metrics.sweeps.inc();
    const now = this.#clock.now();
    const pendingBefore = new Date(now.getTime() - (this.#options.leaseMs ?? 30_000));
    const orphans = await runs.findOrphans({ all: options.all, now, pendingBefore });
    // In the background: compaction is never urgent, and never holds up the runs below.
    this.#options.compactor
      ?.sweep()
      .catch((error: unknown) =>
        this.#options.logger.warn({ err: error }, 'sweeping finished runs for compaction failed'),
      );
    let handled = 0;
    for (const run of orphans) {
      if (executor.isActive(run.id)) continue;
      const leaseExpiredBefore = options.all ? undefined : now;
      if (run.status === RunStatus.waiting) {
        const ended = await lifecycle.endUnowned({
          runId: run.id,
          from: [RunStatus.waiting],
          epoch: run.epoch,
          ending: Ending.aborted(RunErrorCode.waitExpired),
        });
        if (ended) this.#swept(run, RunErrorCode.waitExpired);
        handled += ended ? 1 : 0;
      } else if (run.status === RunStatus.pending) {
        // Its job may be lost (a queue that dropped it, a restart); the job key makes a duplicate harmless.
        await queue.enqueue({ runId: run.id, epoch: run.epoch }).catch(() => {});
        handled += 1;
      } else if (run.lost_executions + 1 >= (this.#options.maxAttempts ?? 3)) {
        // This execution is lost too: that makes `maxAttempts` lost ones. Resumes after a wait and hand-backs
        // on shutdown also begin executions (`attempt`), but lose none.
        const ended = await lifecycle.endUnowned({
          runId: run.id,
          from: [RunStatus.running],
          epoch: run.epoch,
          leaseExpiredBefore,
          ending: Ending.aborted(RunErrorCode.leaseExpired),
        });
        if (ended) this.#swept(run, RunErrorCode.leaseExpired);
        handled += ended ? 1 : 0;
      } else {
        await faults.hit(FaultPoint.beforeRequeue, { runId: run.id });
        const requeued = await lifecycle.handBack({
          runId: run.id,
          epoch: run.epoch,
          leaseExpiredBefore,
          reason: INTERRUPTED_BY_CRASH,
          changes: { lost_executions: run.lost_executions + 1 },
        });
        if (requeued) this.#swept(run, 'requeued');
        handled += requeued ? 1 : 0;
      }
    }
    return handled + (await this.#startOwedContinuations(options.all ? now : pendingBefore));
  }

  /**
   * Starts the follow-ups that runs ended before `before` owe and did not start: their process died between
   * the ending and the start, or the start failed for good. Owners start their own at once, so the sweeper
   * leaves a lease's time to them (none when it sweeps everything at a single instance's start).
   */
  async #startOwedContinuations(before: Date): Promise<number> {
    const { runs, logger } = this.#options;
    let started = 0;
    for (const parent of await runs.findOwedContinuations({ before })) {
      try {
        const followUp = await this.startContinuation(parent, parent.config as unknown as RunConfig);
        if (!followUp) continue;
        logger.warn(
          { runId: parent.id, chatId: parent.chat_id, followUpRunId: followUp.id },
          'started the follow-up a run owed',
        );
        started += 1;
      } catch (error) {
        if (error instanceof OutrunError) {
          logger.warn({ runId: parent.id, code: error.code }, `no continuation: ${error.message}`);
        } else logger.error({ err: error, runId: parent.id }, 'starting an owed continuation failed');
      }
    }
    return started;
  }

  #swept(run: RunRow, reason: string): void {
    this.#options.metrics.runsSwept.inc({ reason });
    this.#options.logger.warn(
      { runId: run.id, chatId: run.chat_id, previousStatus: run.status, attempt: run.attempt, reason },
      reason === 'requeued' ? 'handed back a run whose worker stopped responding' : 'ended a run left active',
    );
  }

  /**
   * Graceful shutdown: stop taking runs, give the ones executing here `graceMs` to finish (their streams
   * stay open meanwhile), then hand the rest back to `pending` — another worker resumes them at once, or
   * this server after its restart — and wait until each is released.
   */
  async shutdown(options: { graceMs?: number } = {}): Promise<void> {
    const { executor, queue } = this.#options;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    // Stops taking jobs now; resolves once the running handlers (the runs below) have returned.
    const closing = queue.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      executor.idle(),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, options.graceMs ?? 10_000))),
    ]);
    clearTimeout(timer);
    await executor.releaseAll();
    await closing;
    executor.leases.stop();
    await this.#sweeping;
    await this.#unsubscribeStop?.();
  }
}

/** A run waiting for `reason`, locked for the answer; `409 run_not_waiting` otherwise. */
async function lockWaitingRun<Reason extends RunWaiting['reason']>(
  tx: Transaction<Database>,
  runId: string,
  reason: Reason,
): Promise<{ row: RunRow; waiting: Extract<RunWaiting, { reason: Reason }> }> {
  const row = await tx.selectFrom('runs').selectAll().where('id', '=', runId).forUpdate().executeTakeFirst();
  const waiting = row?.waiting as RunWaiting | null | undefined;
  if (!row || row.status !== RunStatus.waiting || waiting?.reason !== reason) {
    throw new ConflictError(
      'run_not_waiting',
      reason === 'approval'
        ? 'This run is not waiting for an approval.'
        : 'This run is not paused by its budget.',
      { status: row?.status },
    );
  }
  return { row, waiting: waiting as Extract<RunWaiting, { reason: Reason }> };
}

/** What `assertBudgetLeft` says of each limit a run has used up. */
const USED_UP: Record<BudgetExceeded, { field: keyof Budget; spent: (spent: Spend) => string }> = {
  steps: {
    field: 'maxSteps',
    spent: (spent) => `the ${spent.steps} ${spent.steps === 1 ? 'step' : 'steps'} the run has made`,
  },
  tokens: {
    field: 'maxTokens',
    spent: (spent) => `the ${spent.inputTokens + spent.outputTokens} tokens the run has spent`,
  },
  cost: { field: 'maxCostUsd', spent: (spent) => `the $${spent.costUsd} the run has spent` },
  duration: {
    field: 'maxDurationMs',
    spent: (spent) => `the ${Math.round(spent.runningMs)} ms the run has spent running`,
  },
};

/**
 * Refuses a budget a run has already used up (`usedUpLimit`): under it the run could not make its next
 * model call. `400 invalid_request` naming the field, e.g. `budget.maxSteps`.
 */
function assertBudgetLeft(budget: Budget, spent: Spend): void {
  const exceeded = usedUpLimit(budget, spent);
  if (!exceeded) return;
  const used = USED_UP[exceeded];
  const field = `budget.${used.field}`;
  const message = `must be more than ${used.spent(spent)}`;
  throw new InvalidRequestError(`${field}: ${message}`, {
    field,
    issues: [{ path: ['budget', used.field], message }],
  });
}

/** Another start settled the follow-up its parent owed (it began it, or it was refused): this one begins none. */
class ContinuationSettledError extends Error {
  constructor() {
    super('The follow-up was already settled.');
  }
}

/** The user message of a continuation run. */
const CONTINUATION_TEXT = 'Continue where you left off.';

/** How often an interrupt re-reads the run's row while it waits for the run to end. */
const INTERRUPT_POLL_MS = 250;

export { STOPPABLE_STATUSES };

/** The start's transactional work with the quota's guard first (`QuotaService.assertCanStart`). */
function withGuard(
  guard: StartGuard | null,
  inTransaction: BeginRunOptions['inTransaction'],
): BeginRunOptions['inTransaction'] {
  if (!guard) return inTransaction;
  return async (tx, run, lastSeq) => {
    await guard(tx);
    await inTransaction?.(tx, run, lastSeq);
  };
}
