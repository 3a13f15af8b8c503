import { sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import { MessageProjector } from '../protocol/message-projector.ts';
import { RunAlreadyActiveError } from '../errors.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import { newId } from '../ids.ts';
import type { Metrics } from '../metrics.ts';
import type { Db } from '../store/database.ts';
import type { Database, RunRow } from '../store/schema.ts';
import { isTransientDatabaseError } from '../store/transient.ts';
import { lastSeqOf, serializeChunk, type EventLog, type LogEvent } from '../stream/event-log.ts';
import { runStatusChunk } from '../stream/run-event.ts';
import { toRunObject, type RunObject, type RunUsage } from './run-object.ts';
import {
  ACTIVE_RUN_STATUSES,
  RunStatus,
  type ActiveRunStatus,
  type RunError,
  type RunTrigger,
  type TerminalRunStatus,
} from './run-status.ts';

export interface BeginRunOptions {
  workspaceId: string;
  chatId: string;
  userId: string;
  /** The user message's parts (AI SDK `UIMessage` part shapes). */
  parts: unknown[];
  model: string;
  trigger: RunTrigger;
  /** Run options kept on the row for the worker (budget and the like). */
  options?: Record<string, unknown>;
}

export interface SettleOptions {
  runId: string;
  status: TerminalRunStatus;
  error?: RunError | null;
  /** Settle only while the run is still held under this attempt (the owner's fencing token). */
  attempt?: number;
  /** Settle only from one of these statuses (a stop of a `pending` run must not settle a claimed one). */
  fromStatuses?: readonly ActiveRunStatus[];
  /** Settle only if the lease ran out (the sweeper's condition, checked inside the claim). */
  onlyIfLeaseExpired?: boolean;
  /** Chunks to append before the terminal `data-run` (an `abort` or `error` the loop did not emit). */
  chunks?: unknown[];
  /** The assistant message's final parts. Absent: rebuilt from the run's event log. */
  parts?: unknown[];
  usage?: RunUsage | null;
}

export interface SettleResult {
  run: RunObject;
  events: LogEvent[];
}

/** Where a run's assistant message status lands for each terminal run status. */
const MESSAGE_STATUS_BY_RUN_STATUS = {
  succeeded: 'completed',
  failed: 'error',
  aborted: 'aborted',
} as const;

export interface RunServiceOptions {
  db: Db;
  log: EventLog;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  /** Tries of a settle transaction on transient database errors. @default 5 */
  settleAttempts?: number;
  /** First retry delay of a settle; doubles each try. @default 25 */
  settleRetryDelayMs?: number;
}

/**
 * The run lifecycle in the database: begin (the insert is the gate), claim and heartbeat a lease, record
 * finished steps, request a stop, settle exactly once, find what the sweeper must settle. Every method is
 * one short transaction; nothing here calls a model.
 */
export class RunService {
  readonly #db: Db;
  readonly #log: EventLog;
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  readonly #faults: Faults;
  readonly #settleAttempts: number;
  readonly #settleRetryDelayMs: number;

  constructor(options: RunServiceOptions) {
    this.#db = options.db;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#faults = options.faults;
    this.#settleAttempts = options.settleAttempts ?? 5;
    this.#settleRetryDelayMs = options.settleRetryDelayMs ?? 25;
  }

  /**
   * Inserts a `pending` run with its user message, its (streaming) assistant message and its first event.
   * The partial unique index on active runs is the gate: losing the race throws `RunAlreadyActiveError`
   * and the transaction, user message included, is rolled back.
   */
  async begin(options: BeginRunOptions): Promise<RunObject> {
    try {
      return await this.#insertRun(options);
    } catch (error) {
      if (!isActiveRunConflict(error)) throw error;
      const active = await this.findActive(options.chatId);
      if (active) {
        this.#metrics.runsRejected.inc();
        throw new RunAlreadyActiveError(active.id);
      }
      // The run that held the gate settled in between: the chat is free, so try once more.
      return this.#insertRun(options).catch(async (retryError: unknown) => {
        if (!isActiveRunConflict(retryError)) throw retryError;
        this.#metrics.runsRejected.inc();
        throw new RunAlreadyActiveError((await this.findActive(options.chatId))?.id ?? 'unknown');
      });
    }
  }

  async #insertRun(options: BeginRunOptions): Promise<RunObject> {
    const runId = newId('run');
    const userMessageId = newId('message');
    const assistantMessageId = newId('message');
    const run = await this.#db.transaction().execute(async (tx) => {
      const now = new Date();
      const row = await tx
        .insertInto('runs')
        .values({
          id: runId,
          chat_id: options.chatId,
          workspace_id: options.workspaceId,
          created_by: options.userId,
          trigger: options.trigger,
          status: RunStatus.pending,
          model: options.model,
          options: JSON.stringify(options.options ?? {}),
          assistant_message_id: assistantMessageId,
          created_at: now,
          updated_at: now,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await tx
        .insertInto('messages')
        .values([
          {
            id: userMessageId,
            chat_id: options.chatId,
            workspace_id: options.workspaceId,
            role: 'user',
            parts: JSON.stringify(options.parts),
            status: 'completed',
            run_id: runId,
            created_at: now,
            updated_at: now,
          },
          {
            id: assistantMessageId,
            chat_id: options.chatId,
            workspace_id: options.workspaceId,
            role: 'assistant',
            parts: '[]',
            status: 'streaming',
            run_id: runId,
            created_at: now,
            updated_at: now,
          },
        ])
        .execute();
      await tx.updateTable('chats').set({ updated_at: now }).where('id', '=', options.chatId).execute();
      const object = toRunObject(row);
      await tx
        .insertInto('run_events')
        .values({ run_id: runId, seq: 1, chunk: serializeChunk(runStatusChunk(object)) })
        .execute();
      return object;
    });
    this.#metrics.runsStarted.inc();
    return run;
  }

  /** The chat's active run, if any. */
  async findActive(chatId: string): Promise<RunRow | undefined> {
    return this.#db
      .selectFrom('runs')
      .selectAll()
      .where('chat_id', '=', chatId)
      .where('status', 'in', ACTIVE_RUN_STATUSES)
      .executeTakeFirst();
  }

  async get(runId: string): Promise<RunRow | undefined> {
    return this.#db.selectFrom('runs').selectAll().where('id', '=', runId).executeTakeFirst();
  }

  /** A run as its chat's owner may see it: undefined for someone else's run or a deleted chat. */
  async getForOwner(options: {
    runId: string;
    workspaceId: string;
    userId: string;
  }): Promise<RunRow | undefined> {
    return this.#db
      .selectFrom('runs')
      .innerJoin('chats', 'chats.id', 'runs.chat_id')
      .selectAll('runs')
      .where('runs.id', '=', options.runId)
      .where('chats.workspace_id', '=', options.workspaceId)
      .where('chats.owner_id', '=', options.userId)
      .where('chats.deleted_at', 'is', null)
      .executeTakeFirst();
  }

  /** A chat's runs, newest first. */
  async listForChat(options: { chatId: string; limit: number; cursor?: string }): Promise<RunRow[]> {
    let query = this.#db.selectFrom('runs').selectAll().where('chat_id', '=', options.chatId);
    if (options.cursor) query = query.where('id', '<', options.cursor);
    return query.orderBy('id', 'desc').limit(options.limit).execute();
  }

  /**
   * Takes a `pending` run for this worker: `running`, a new attempt (the fencing token) and a lease.
   * Returns undefined when the run is no longer pending (already claimed, or settled by a stop).
   */
  async claim(options: { runId: string; owner: string; leaseMs: number }): Promise<RunRow | undefined> {
    return this.#db
      .updateTable('runs')
      .set((eb) => ({
        status: RunStatus.running,
        attempt: eb('attempt', '+', 1),
        lease_owner: options.owner,
        lease_expires_at: sql<Date>`now() + ${`${options.leaseMs} milliseconds`}::interval`,
        started_at: sql<Date>`coalesce(started_at, now())`,
        updated_at: sql<Date>`now()`,
      }))
      .where('id', '=', options.runId)
      .where('status', '=', RunStatus.pending)
      .returningAll()
      .executeTakeFirst();
  }

  /**
   * Extends the leases this instance holds, in one statement (a heartbeat per run would queue behind the
   * event log's row locks). Returns, for each run whose lease is still held, whether a stop was recorded on
   * it, by any instance; a run missing from the result lost its lease (taken over or settled).
   */
  async heartbeatMany(options: {
    runs: { runId: string; attempt: number }[];
    owner: string;
    leaseMs: number;
  }): Promise<Map<string, { stopRequested: boolean }>> {
    if (options.runs.length === 0) return new Map();
    const held = JSON.stringify(options.runs.map((run) => ({ id: run.runId, attempt: run.attempt })));
    const result = await sql<{ id: string; stop_requested_at: Date | null }>`
      update runs set lease_expires_at = now() + ${`${options.leaseMs} milliseconds`}::interval
      from json_to_recordset(${held}::json) as held(id text, attempt int)
      where runs.id = held.id and runs.attempt = held.attempt
        and runs.lease_owner = ${options.owner} and runs.status = ${RunStatus.running}
      returning runs.id, runs.stop_requested_at`.execute(this.#db);
    return new Map(result.rows.map((row) => [row.id, { stopRequested: row.stop_requested_at !== null }]));
  }

  /**
   * Records one finished step: its parts go into their own row (so each step is written once, O(steps)),
   * and the run's step count moves on. Fenced by the attempt.
   */
  async recordStep(options: {
    runId: string;
    attempt: number;
    step: number;
    parts: unknown[];
    usage: RunUsage | null;
    lastSeq: number;
    startedAt: Date;
  }): Promise<void> {
    await this.#faults.hit(FaultPoint.beforeStepRecord, { runId: options.runId });
    await this.#db.transaction().execute(async (tx) => {
      const updated = await tx
        .updateTable('runs')
        .set({ step_count: options.step, updated_at: sql<Date>`now()` })
        .where('id', '=', options.runId)
        .where('attempt', '=', options.attempt)
        .where('status', '=', RunStatus.running)
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) !== 1) return;
      await tx
        .insertInto('run_steps')
        .values({
          run_id: options.runId,
          step: options.step,
          parts: JSON.stringify(options.parts),
          usage: options.usage ? JSON.stringify(options.usage) : null,
          last_seq: options.lastSeq,
          started_at: options.startedAt,
          finished_at: new Date(),
        })
        .onConflict((oc) => oc.columns(['run_id', 'step']).doNothing())
        .execute();
    });
  }

  /**
   * Records a stop request on an active run. `stopped` is true only for the request that set it;
   * a second stop (or a stop of a finished run) changes nothing and answers false.
   */
  async requestStop(runId: string): Promise<{ stopped: boolean; run: RunRow | undefined }> {
    const row = await this.#db
      .updateTable('runs')
      .set({ stop_requested_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
      .where('id', '=', runId)
      .where('status', 'in', ACTIVE_RUN_STATUSES)
      .where('stop_requested_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    if (row) return { stopped: true, run: row };
    return { stopped: false, run: await this.get(runId) };
  }

  /**
   * Moves an active run to a terminal status, exactly once. The conditional update is the claim: only one
   * caller gets the row back, every other settle is a no-op returning null. In the same transaction the
   * final chunks and the terminal `data-run` are appended and the assistant message gets its final parts
   * and status. Transient database errors are retried; if every try fails, the failure is logged once at
   * error level and null is returned, leaving the run for the sweeper.
   */
  async settle(options: SettleOptions): Promise<SettleResult | null> {
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await this.#db.transaction().execute((tx) => this.#settleIn(tx, options));
        if (result) {
          this.#metrics.runsSettled.inc({ status: options.status });
          await this.#log.publish(options.runId, result.events);
        }
        return result;
      } catch (error) {
        if (isTransientDatabaseError(error) && attempt < this.#settleAttempts) {
          this.#metrics.settleRetries.inc();
          await new Promise((resolve) => setTimeout(resolve, this.#settleRetryDelayMs * 2 ** (attempt - 1)));
          continue;
        }
        this.#metrics.settleFailures.inc();
        const run = await this.get(options.runId).catch(() => undefined);
        this.#logger.error(
          {
            err: error,
            runId: options.runId,
            chatId: run?.chat_id,
            status: options.status,
            attempts: attempt,
          },
          'settling the run failed; the sweeper will settle it when its lease runs out',
        );
        return null;
      }
    }
  }

  async #settleIn(tx: Transaction<Database>, options: SettleOptions): Promise<SettleResult | null> {
    let claim = tx
      .updateTable('runs')
      .set((eb) => ({
        status: options.status,
        error: options.error ? JSON.stringify(options.error) : null,
        ...(options.usage ? { usage: JSON.stringify(options.usage) } : {}),
        // A settle by anyone but the owner bumps the attempt, which fences the owner out of the log.
        attempt: options.attempt === undefined ? eb('attempt', '+', 1) : eb.ref('attempt'),
        lease_owner: null,
        lease_expires_at: null,
        finished_at: sql<Date>`now()`,
        updated_at: sql<Date>`now()`,
      }))
      .where('id', '=', options.runId)
      .where('status', 'in', options.fromStatuses ?? ACTIVE_RUN_STATUSES);
    if (options.attempt !== undefined) claim = claim.where('attempt', '=', options.attempt);
    if (options.onlyIfLeaseExpired) {
      claim = claim.where((eb) =>
        eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', sql<Date>`now()`)]),
      );
    }
    const row = await claim.returningAll().executeTakeFirst();
    if (!row) return null;

    const stepRows = await tx
      .selectFrom('run_steps')
      .select((eb) => eb.fn.max('step').as('steps'))
      .where('run_id', '=', row.id)
      .executeTakeFirst();
    const stepCount = Math.max(row.step_count, Number(stepRows?.steps ?? 0));

    let seq = await lastSeqOf(tx, row.id);
    const parts = options.parts ?? (await this.#projectFromLog(tx, row.id));

    const settled = await tx
      .updateTable('runs')
      .set({ step_count: stepCount })
      .where('id', '=', row.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    const run = toRunObject(settled);
    const events: LogEvent[] = [];
    const chunks = [...(options.chunks ?? []), runStatusChunk(run)];
    for (const [index, chunk] of chunks.entries()) {
      seq += 1;
      events.push({ seq, data: serializeChunk(chunk), terminal: index === chunks.length - 1 });
    }
    await tx
      .insertInto('run_events')
      .values(events.map((event) => ({ run_id: row.id, seq: event.seq, chunk: event.data })))
      .execute();

    if (row.assistant_message_id) {
      await tx
        .updateTable('messages')
        .set({
          parts: JSON.stringify(parts),
          status: MESSAGE_STATUS_BY_RUN_STATUS[options.status],
          updated_at: sql<Date>`now()`,
        })
        .where('id', '=', row.assistant_message_id)
        .execute();
    }
    await this.#faults.hit(FaultPoint.settleBeforeCommit, { runId: row.id });
    return { run, events };
  }

  /** Rebuilds the assistant message from the durable events (for runs settled without their worker). */
  async #projectFromLog(tx: Transaction<Database>, runId: string): Promise<unknown[]> {
    return (await this.replayProjection(runId, tx)).parts();
  }

  /** A message projector fed with every durable event of a run, as its worker would have left it. */
  async replayProjection(
    runId: string,
    tx: Db | Transaction<Database> = this.#db,
  ): Promise<MessageProjector> {
    const projector = new MessageProjector();
    let after = 0;
    for (;;) {
      const rows = await tx
        .selectFrom('run_events')
        .select(['seq', 'chunk'])
        .where('run_id', '=', runId)
        .where('seq', '>', after)
        .orderBy('seq')
        .limit(1000)
        .execute();
      for (const row of rows) projector.push(row.chunk as never);
      if (rows.length < 1000) break;
      after = rows[rows.length - 1]!.seq;
    }
    return projector;
  }

  /** A run's finished steps, in order. */
  async listSteps(runId: string) {
    return this.#db.selectFrom('run_steps').selectAll().where('run_id', '=', runId).orderBy('step').execute();
  }

  /**
   * Hands a run whose worker died back to the queue: `running → pending` with a new attempt (which fences
   * the old owner out) and no lease, announced by a `data-run` event. Only while the run is still held
   * under `attempt` and its lease has run out. Returns the requeued run, or undefined if it was not.
   */
  async requeue(options: { runId: string; attempt: number }): Promise<RunObject | undefined> {
    const result = await this.#db.transaction().execute(async (tx) => {
      const row = await tx
        .updateTable('runs')
        .set((eb) => ({
          status: RunStatus.pending,
          attempt: eb('attempt', '+', 1),
          lease_owner: null,
          lease_expires_at: null,
          updated_at: sql<Date>`now()`,
        }))
        .where('id', '=', options.runId)
        .where('status', '=', RunStatus.running)
        .where('attempt', '=', options.attempt)
        .where('lease_expires_at', '<', sql<Date>`now()`)
        .returningAll()
        .executeTakeFirst();
      if (!row) return undefined;
      const run = toRunObject(row);
      const event: LogEvent = {
        seq: (await lastSeqOf(tx, row.id)) + 1,
        data: serializeChunk(runStatusChunk(run)),
        terminal: false,
      };
      await tx
        .insertInto('run_events')
        .values({ run_id: row.id, seq: event.seq, chunk: event.data })
        .execute();
      return { run, event };
    });
    if (!result) return undefined;
    await this.#log.publish(options.runId, [result.event]);
    return result.run;
  }

  /**
   * Active runs the sweeper must look at: with `all`, every active run (a single instance on start: whatever
   * is active was left by a previous process); otherwise running runs whose lease ran out, and pending runs
   * nobody claimed for `pendingOlderThanMs` (their job may be lost).
   */
  async findOrphans(options: { all: boolean; pendingOlderThanMs?: number }): Promise<RunRow[]> {
    let query = this.#db.selectFrom('runs').selectAll().where('status', 'in', ACTIVE_RUN_STATUSES);
    if (!options.all) {
      const pendingSince = `${options.pendingOlderThanMs ?? 60_000} milliseconds`;
      query = query.where((eb) =>
        eb.or([
          eb.and([eb('status', '=', RunStatus.running), eb('lease_expires_at', '<', sql<Date>`now()`)]),
          eb.and([
            eb('status', '=', RunStatus.pending),
            eb('updated_at', '<', sql<Date>`now() - ${pendingSince}::interval`),
          ]),
        ]),
      );
    }
    return query.orderBy('id').limit(500).execute();
  }
}

function isActiveRunConflict(error: unknown): boolean {
  const pgError = error as { code?: unknown; constraint?: unknown; message?: unknown };
  return (
    pgError?.code === '23505' &&
    (pgError.constraint === 'runs_one_active_per_chat' ||
      String(pgError.message).includes('runs_one_active_per_chat'))
  );
}
