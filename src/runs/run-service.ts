import { sql, type Insertable, type Transaction } from 'kysely';
import { keyStillValid } from '../auth/auth-service.ts';
import { chatSeenBy } from '../chats/chat-service.ts';
import { NotFoundError, RunAlreadyActiveError, UnauthorizedError } from '../errors.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import { newId } from '../ids.ts';
import type { Metrics } from '../metrics.ts';
import type { Db } from '../store/database.ts';
import { StatementShapes, type Shape } from '../store/statement-shapes.ts';
import { fallBackOf, isUniqueViolation } from '../store/transient.ts';
import type { Database, MessageRow, RunRow } from '../store/schema.ts';
import {
  lastSeqExpression,
  numberEvents,
  upToOf,
  visibleRunOf,
  visibleRunStatement,
  type LogEvent,
} from '../stream/event-log.ts';
import { runStatusChunk } from '../stream/run-event.ts';
import { STOPPABLE_STATUSES, type TransitionResult } from './lifecycle.ts';
import type { RunObject, RunUsage } from './run-object.ts';
import { ACTIVE_RUN_STATUSES, RunStatus, type RunTrigger } from './run-status.ts';

export interface BeginRunOptions {
  /**
   * The new run's id, when the caller chose it beforehand (a streaming start subscribes to the run's events
   * before they exist). @default a new id
   */
  runId?: string;
  workspaceId: string;
  chatId: string;
  userId: string;
  /** The user message's parts (AI SDK `UIMessage` part shapes). */
  parts: unknown[];
  model: string;
  trigger: RunTrigger;
  /** When the chat already has an active run, create this one `queued` behind it instead of refusing. */
  enqueue?: boolean;
  /** Run options kept on the row for the worker (budget and the like). */
  options?: Record<string, unknown>;
  /** The resolved configuration the run executes with. */
  config?: Record<string, unknown> | null;
  agentId?: string | null;
  parentRunId?: string | null;
  scheduleId?: string | null;
  metadata?: Record<string, unknown> | null;
  /**
   * More writes that must commit with the run (a schedule advancing its next due time, a local claim);
   * `lastSeq` is the run's last sequence number so far.
   */
  inTransaction?: (tx: Transaction<Database>, run: RunObject, lastSeq: number) => Promise<void>;
  /**
   * Creates the chat (`chatId`) in the run's own transaction, first: a chat whose agent starts at once
   * (`autostart`) exists with its first run or not at all.
   */
  createChat?: (tx: Transaction<Database>) => Promise<void>;
  /**
   * A claim by this instance, made by the insert itself when the run begins `pending` (`RunExecutor.adopt`):
   * called with the new run's id before the insert; null declines.
   */
  localClaim?: (runId: string) => LocalClaim | null;
  /**
   * For a start that did not read its chat (the HTTP routes): the statement itself inserts only into a chat
   * of `ownerId` in the workspace, not deleted, whose agent is `agentId`, and with `keyId` only while that
   * API key authenticates. Otherwise it writes nothing and `begin` throws `UnauthorizedError` for the key,
   * `NotFoundError('chat')` (what a read would have answered), or `ChatAgentMismatchError` when only the
   * agent differs: the run's configuration was resolved for the wrong agent.
   */
  chatCheck?: ChatCheck;
}

/** What the statement that begins a run checks of its chat and its caller (`BeginRunOptions.chatCheck`). */
export interface ChatCheck {
  ownerId: string;
  agentId: string | null;
  keyId?: string;
}

/** The chat has another agent than the start assumed (`BeginRunOptions.chatCheck`); nothing was written. */
export class ChatAgentMismatchError extends Error {
  constructor(readonly agentId: string | null) {
    super(`The chat's agent is ${agentId ?? 'none'}.`);
    this.name = 'ChatAgentMismatchError';
  }
}

/** Who claims a run in the statement that begins it, and until when (`claimRequest`'s changes). */
export interface LocalClaim {
  owner: string;
  leaseExpiresAt: Date;
}

export interface BeginResult {
  /** The run as begun (`pending` or `queued`). */
  run: RunObject;
  /** The first event (the `data-run` of the new run), to publish after commit. */
  events: LogEvent[];
  /** The local claim (the run `running` under epoch 1, and its event), when one was made. */
  claimed: TransitionResult | null;
  /**
   * With a local claim: the run's history, the chat's messages before its assistant message, read by the
   * statement that began it. Null when that statement could not be sure its snapshot was current (its
   * executor then reads the history itself).
   */
  history: MessageRow[] | null;
}

export interface RunServiceOptions {
  db: Db;
  metrics: Metrics;
  faults: Faults;
}

/** Whose run a read is for (`RunService.getForOwner`). */
export interface OwnerRead {
  runId: string;
  workspaceId: string;
  userId: string;
  /** The caller's API key, checked in the statement: a read with a key that no longer authenticates finds nothing. */
  keyId?: string;
  /** Only a run of this chat (a scoped token's). */
  chatId?: string;
}

/**
 * Runs in the database, apart from their status changes (those go through `Lifecycle`): begin a run (the
 * insert is the gate), read runs, record finished steps, record stop requests, renew leases, and find the
 * runs the sweeper must look at. Every method is one short statement or transaction; nothing calls a model.
 */
export class RunService {
  readonly #db: Db;
  readonly #metrics: Metrics;
  readonly #faults: Faults;
  readonly #beginStatements = new StatementShapes<BeginShape, BeginValues>();
  readonly #activeOfChatStatements = new StatementShapes<
    { key: boolean },
    { chatId: string; workspaceId: string; userId: string; keyId: string | null; upTo: number; limit: number }
  >();
  readonly #readOwnedStatements = new StatementShapes<
    { key: boolean; chat: boolean },
    {
      runId: string;
      workspaceId: string;
      userId: string;
      keyId: string | null;
      chatId: string | null;
      after: number;
      upTo: number;
      limit: number;
    }
  >();

  constructor(options: RunServiceOptions) {
    this.#db = options.db;
    this.#metrics = options.metrics;
    this.#faults = options.faults;
  }

  /**
   * Inserts a run with its user message, its assistant message and its first events: `pending` (claimed by
   * `localClaim` when given), or `queued` with `enqueue` when the chat has an active run. Throws
   * `RunAlreadyActiveError` (nothing written) when the chat is busy and `enqueue` is not set.
   *
   * The partial unique index on active runs is the gate. A start into an idle chat is one statement (the
   * common case): it inserts everything as `pending` and touches the chat; the index refuses it if the chat
   * has an active run, even one committed meanwhile. Then, and whenever `inTransaction` has writes to join,
   * a transaction locks the chat row first, which orders a `queued` insert against the promotion of a queued
   * run when the active one ends, looks for the active run, and inserts.
   */
  async begin(options: BeginRunOptions): Promise<BeginResult> {
    try {
      if (!options.inTransaction && !options.createChat) {
        try {
          return await this.#insertRun(this.#db, options, RunStatus.pending, { gate: 'shared' });
        } catch (error) {
          // The chat is busy: the locked path decides between refusing and queueing.
          if (!isActiveRunConflict(error)) throw error;
        }
      }
      return await this.#db.transaction().execute((tx) => this.#insertLocked(tx, options));
    } catch (error) {
      const declined = fallBackOf(error);
      if (declined?.reason === 'key') throw new UnauthorizedError('The API key is not valid.');
      if (declined?.reason === 'chat') throw new NotFoundError('chat', options.chatId);
      if (declined?.reason === 'agent') throw new ChatAgentMismatchError(declined.detail);
      if (!isActiveRunConflict(error)) throw error;
      this.#metrics.runsRejected.inc();
      throw new RunAlreadyActiveError((await this.findActive(options.chatId))?.id ?? 'unknown');
    }
  }

  async #insertLocked(tx: Transaction<Database>, options: BeginRunOptions): Promise<BeginResult> {
    await options.createChat?.(tx);
    // The chat's start gate, alone, before the chat's row: a one-statement start holds the gate shared from
    // before its insert meets the unique index on active runs until it commits, and waits for the chat's row
    // after that. Taking the row first, this transaction could insert an active run while such a start's
    // uncommitted one is in the index: each would wait for the other until PostgreSQL broke the deadlock.
    await sql`select ${chatStartGate(options.chatId, 'exclusive')}`.execute(tx);
    // Locks the chat row, ordering concurrent starts and promotions on the chat.
    await tx.selectFrom('chats').select('id').where('id', '=', options.chatId).forUpdate().execute();
    const active = await tx
      .selectFrom('runs')
      .select('id')
      .where('chat_id', '=', options.chatId)
      .where('status', 'in', ACTIVE_RUN_STATUSES)
      .executeTakeFirst();
    if (active && !options.enqueue) {
      this.#metrics.runsRejected.inc();
      throw new RunAlreadyActiveError(active.id);
    }
    const status = active ? RunStatus.queued : RunStatus.pending;
    const begun = await this.#insertRun(tx, options, status, { gate: 'held' });
    await options.inTransaction?.(tx, begun.run, (begun.claimed ?? begun).events.at(-1)!.seq);
    await this.#faults.hit(FaultPoint.startBeforeCommit, { runId: begun.run.id });
    return begun;
  }

  /**
   * The insert itself: one statement, in `db` or in the caller's transaction. `gate`: whether the statement
   * takes the chat's start gate (`shared`) or its transaction holds it already (`held`).
   */
  async #insertRun(
    db: Db | Transaction<Database>,
    options: BeginRunOptions,
    status: typeof RunStatus.pending | typeof RunStatus.queued,
    { gate }: { gate: 'shared' | 'held' },
  ): Promise<BeginResult> {
    const now = new Date();
    // A retry after a refused first attempt keeps the id: that attempt wrote nothing.
    const runId = options.runId ?? newId('run');
    const userMessageId = newId('message');
    const assistantMessageId = newId('message');
    const claim = status === RunStatus.pending ? (options.localClaim?.(runId) ?? null) : null;
    const json = (value: unknown) => (value === undefined || value === null ? null : JSON.stringify(value));
    // The run as begun, and as claimed: every field is known here, so their `data-run` events go into the
    // same statement as the run (test/local-claim.test.ts checks them against the row).
    const begun: RunObject = {
      id: runId,
      chatId: options.chatId,
      agentId: options.agentId ?? null,
      status,
      trigger: options.trigger,
      parentRunId: options.parentRunId ?? null,
      scheduleId: options.scheduleId ?? null,
      model: options.model,
      error: null,
      waiting: null,
      stepCount: 0,
      usage: null,
      costUsd: null,
      attempt: 0,
      assistantMessageId,
      stopRequestedAt: null,
      queuedAt: status === RunStatus.queued ? now.toISOString() : null,
      startedAt: null,
      finishedAt: null,
      createdAt: now.toISOString(),
      updatedAt: now.toISOString(),
      metadata: options.metadata ?? null,
    };
    const claimed: RunObject | null = claim
      ? { ...begun, status: RunStatus.running, attempt: 1, startedAt: now.toISOString() }
      : null;
    const events = numberEvents(
      claimed ? [runStatusChunk(begun), runStatusChunk(claimed)] : [runStatusChunk(begun)],
      0,
    );
    const values: BeginValues = {
      runId,
      chatId: options.chatId,
      workspaceId: options.workspaceId,
      userId: options.userId,
      trigger: options.trigger,
      status: claimed ? RunStatus.running : status,
      model: options.model,
      options: JSON.stringify(options.options ?? {}),
      config: json(options.config),
      agentId: options.agentId ?? null,
      parentRunId: options.parentRunId ?? null,
      scheduleId: options.scheduleId ?? null,
      metadata: json(options.metadata),
      assistantMessageId,
      assistantStatus: status === RunStatus.queued ? 'queued' : 'streaming',
      queuedAt: status === RunStatus.queued ? now : null,
      // What `claimRequest` and the transition to `running` set: one execution, under the first epoch.
      attempt: claim ? 1 : 0,
      leaseOwner: claim?.owner ?? null,
      leaseExpiresAt: claim?.leaseExpiresAt ?? null,
      startedAt: claim ? now : null,
      now,
      userMessageId,
      userParts: JSON.stringify(options.parts),
      firstEvent: events[0]!.data,
      secondEvent: events[1]?.data ?? null,
      keyId: options.chatCheck?.keyId ?? null,
      ownerId: options.chatCheck?.ownerId ?? null,
      expectedAgentId: options.chatCheck?.agentId ?? null,
    };
    const shape: BeginShape = {
      gate,
      claimed: claimed !== null,
      chatCheck: options.chatCheck ? (options.chatCheck.keyId ? 'key' : 'chat') : 'none',
    };
    const statement = this.#beginStatements.compile(shape, values, (compiling, placeholders) =>
      beginStatement(this.#db, compiling, placeholders),
    );
    const inserted = (await db.executeQuery(statement)).rows[0];
    if (!inserted) throw new Error(`The statement that begins run ${runId} returned no row.`);
    const { history, history_current: historyCurrent, chat_live: _live, ...row } = inserted;
    this.#metrics.runsStarted.inc();
    return {
      run: begun,
      events: events.slice(0, 1),
      claimed: claimed ? { run: claimed, row, events: events.slice(1), promoted: null } : null,
      history: claimed && historyCurrent ? currentHistory(history ?? [], values, options.parts) : null,
    };
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

  /** The chat's queued runs, oldest first. */
  async listQueued(chatId: string): Promise<RunRow[]> {
    return this.#db
      .selectFrom('runs')
      .selectAll()
      .where('chat_id', '=', chatId)
      .where('status', '=', RunStatus.queued)
      .orderBy('id')
      .execute();
  }

  async get(runId: string): Promise<RunRow | undefined> {
    return this.#db.selectFrom('runs').selectAll().where('id', '=', runId).executeTakeFirst();
  }

  /**
   * A run as its chat's owner may see it: undefined for someone else's run or a deleted chat, and with
   * `keyId`, also when that API key no longer authenticates (the read checks the caller's key itself), and
   * with `chatId`, for a run of another chat.
   */
  async getForOwner(options: OwnerRead): Promise<RunRow | undefined> {
    return this.#owned(options).selectAll('runs').executeTakeFirst();
  }

  /**
   * A run's status and its events after `after` (at most `limit`, as `EventLog.read`), as its chat's owner may
   * see them (`getForOwner`), in one statement: a resume's first read. Undefined where `getForOwner` is.
   */
  async readOwned(
    options: OwnerRead & { after: number; limit: number },
  ): Promise<{ status: string; eventsDeletedAt: Date | null; events: LogEvent[] } | undefined> {
    const { after, limit } = options;
    // Built and compiled once per shape (a key to check, a chat to keep to): a resume's first statement.
    const statement = this.#readOwnedStatements.compile(
      { key: options.keyId !== undefined, chat: options.chatId !== undefined },
      {
        runId: options.runId,
        workspaceId: options.workspaceId,
        userId: options.userId,
        keyId: options.keyId ?? null,
        chatId: options.chatId ?? null,
        after,
        upTo: upToOf(after, limit),
        limit,
      },
      (shape, values) =>
        visibleRunStatement(
          this.#db,
          this.#owned({
            runId: values.runId,
            workspaceId: values.workspaceId,
            userId: values.userId,
            keyId: shape.key ? values.keyId! : undefined,
            chatId: shape.chat ? values.chatId! : undefined,
          }).select(['runs.status', 'runs.events_deleted_at']),
          values,
        ),
    );
    const read = visibleRunOf(await this.#db.executeQuery(statement), after, limit);
    return (
      read && { status: read.row.status, eventsDeletedAt: read.row.events_deleted_at, events: read.events }
    );
  }

  /**
   * A chat's active run as the chat's owner may see it (`ChatService.getRow`'s check, and with `keyId` the
   * key's), with the run's last durable sequence number and its first `firstPage` events, in one statement:
   * useChat's resume. Undefined when the caller may not see the chat; `run` undefined when the chat has no
   * active run.
   */
  async activeOfOwnedChat(options: {
    chatId: string;
    workspaceId: string;
    userId: string;
    keyId?: string;
    firstPage: number;
  }): Promise<
    | {
        agentId: string | null;
        run?: { id: string; status: string; lastSeq: number; firstEvents: LogEvent[] };
      }
    | undefined
  > {
    const { firstPage } = options;
    // Built and compiled once per shape (a key to check or not): useChat's resume's one statement.
    const statement = this.#activeOfChatStatements.compile(
      { key: options.keyId !== undefined },
      {
        chatId: options.chatId,
        workspaceId: options.workspaceId,
        userId: options.userId,
        keyId: options.keyId ?? null,
        upTo: upToOf(0, firstPage),
        limit: firstPage,
      },
      (shape, values) => {
        const visible = this.#db
          .selectFrom('chats')
          // At most one: invariant 3's unique index admits one active run per chat.
          .leftJoin('runs', (join) =>
            join.onRef('runs.chat_id', '=', 'chats.id').on('runs.status', 'in', ACTIVE_RUN_STATUSES),
          )
          .select([
            'chats.agent_id',
            'runs.id as run_id',
            'runs.status as run_status',
            lastSeqExpression(sql.ref<string | null>('runs.id')).as('last_seq'),
          ])
          .where('chats.id', '=', values.chatId)
          .where(
            chatSeenBy({
              workspaceId: values.workspaceId,
              userId: values.userId,
              keyId: shape.key ? values.keyId! : undefined,
            }),
          );
        return visibleRunStatement(this.#db, visible, {
          runId: sql.ref<string | null>('visible_run.run_id'),
          after: 0,
          upTo: values.upTo,
          limit: values.limit,
        });
      },
    );
    const read = visibleRunOf(await this.#db.executeQuery(statement), 0, firstPage);
    if (!read) return undefined;
    const { row, events } = read;
    const run =
      row.run_id === null
        ? undefined
        : { id: row.run_id, status: row.run_status!, lastSeq: Number(row.last_seq), firstEvents: events };
    return { agentId: row.agent_id, run };
  }

  #owned(options: OwnerRead) {
    let query = this.#db
      .selectFrom('runs')
      .innerJoin('chats', 'chats.id', 'runs.chat_id')
      .where('runs.id', '=', options.runId)
      .where(chatSeenBy(options));
    if (options.chatId) query = query.where('runs.chat_id', '=', options.chatId);
    return query;
  }

  /** A chat's runs, newest first. */
  async listForChat(options: { chatId: string; limit: number; cursor?: string }): Promise<RunRow[]> {
    let query = this.#db.selectFrom('runs').selectAll().where('chat_id', '=', options.chatId);
    if (options.cursor) query = query.where('id', '<', options.cursor);
    return query.orderBy('id', 'desc').limit(options.limit).execute();
  }

  /**
   * Extends the leases this instance holds, in one statement (a heartbeat per run would queue behind the
   * event log's row locks). Returns, for each run whose lease is still held, whether a stop was recorded on
   * it, by any instance; a run missing from the result lost its lease (taken over or settled).
   */
  async heartbeatMany(options: {
    runs: { runId: string; epoch: number }[];
    owner: string;
    leaseExpiresAt: Date;
  }): Promise<Map<string, { stopRequested: boolean }>> {
    if (options.runs.length === 0) return new Map();
    await this.#faults.hit(FaultPoint.heartbeat);
    const held = JSON.stringify(options.runs.map((run) => ({ id: run.runId, epoch: run.epoch })));
    // The rows are locked in id order first, as the event log's group commit locks them: two statements that
    // lock many runs each, in different orders, would deadlock (and PostgreSQL breaks that only after 1 s).
    const result = await sql<{ id: string; stop_requested_at: Date | null }>`
      with held as (
        select runs.id from runs
        join json_to_recordset(${held}::json) as held(id text, epoch int)
          on runs.id = held.id and runs.epoch = held.epoch
        where runs.lease_owner = ${options.owner} and runs.status = ${RunStatus.running}
        order by runs.id
        for update of runs
      )
      update runs set lease_expires_at = ${options.leaseExpiresAt}
      from held where runs.id = held.id
      returning runs.id, runs.stop_requested_at`.execute(this.#db);
    return new Map(result.rows.map((row) => [row.id, { stopRequested: row.stop_requested_at !== null }]));
  }

  /**
   * Records one finished step: its parts go into their own row (so each step is written once, O(steps)),
   * and the run's step count moves on. Fenced by the owner's epoch; a step already recorded is kept.
   */
  async recordStep(options: {
    runId: string;
    epoch: number;
    step: number;
    parts: unknown[];
    usage: RunUsage | null;
    costUsd: number | null;
    lastSeq: number;
    startedAt: Date;
  }): Promise<void> {
    await this.#faults.hit(FaultPoint.beforeStepRecord, { runId: options.runId });
    const usage = options.usage;
    // One statement (its own transaction, one round trip): the run's totals grow with each recorded step,
    // so a crash never gives spent budget back, and the step is inserted only if the fenced update matched.
    await sql`
      with fenced as (
        update runs set
          step_count = greatest(step_count, ${options.step}),
          usage = jsonb_build_object(
            'inputTokens', coalesce((usage->>'inputTokens')::bigint, 0) + ${usage?.inputTokens ?? 0},
            'outputTokens', coalesce((usage->>'outputTokens')::bigint, 0) + ${usage?.outputTokens ?? 0}),
          cost_usd = coalesce(cost_usd, 0) + ${options.costUsd ?? 0},
          updated_at = now()
        where id = ${options.runId} and epoch = ${options.epoch} and status = ${RunStatus.running}
        returning id
      )
      insert into run_steps (run_id, step, parts, usage, cost_usd, last_seq, started_at, finished_at)
      select id, ${options.step}::integer, ${JSON.stringify(options.parts)}::jsonb,
        ${usage ? JSON.stringify(usage) : null}::jsonb, ${options.costUsd}::double precision,
        ${options.lastSeq}::integer, ${options.startedAt}::timestamptz, ${new Date()}::timestamptz
      from fenced
      on conflict (run_id, step) do nothing`.execute(this.#db);
  }

  /**
   * Writes a recorded step's parts again, under the run's current epoch: what became of its calls (an
   * approved call's output, a denial) came after the step had finished, in the execution the answer resumed.
   */
  async updateStepParts(options: {
    runId: string;
    epoch: number;
    step: number;
    parts: unknown[];
  }): Promise<void> {
    await sql`
      update run_steps set parts = ${JSON.stringify(options.parts)}::jsonb
      where run_id = ${options.runId} and step = ${options.step}
        and exists (
          select 1 from runs where id = ${options.runId} and epoch = ${options.epoch} and status = ${RunStatus.running}
        )`.execute(this.#db);
  }

  /**
   * Records what an execution spent outside its finished steps: a step it did not finish (cut by a stop, a
   * budget or a quota, or under way at a hand-back) and its context summaries' model calls. No `run_steps` row
   * holds that spend; the workspace's daily usage counts this one.
   */
  async recordSpendOutsideSteps(options: {
    runId: string;
    workspaceId: string;
    tokens: number;
    costUsd: number | null;
  }): Promise<void> {
    await this.#db
      .insertInto('spend_outside_steps')
      .values({
        run_id: options.runId,
        workspace_id: options.workspaceId,
        tokens: Math.round(options.tokens),
        cost_usd: options.costUsd,
        recorded_at: new Date(),
      })
      .execute();
  }

  /** How many `continue` runs lead up to this one (following `parent_run_id`). */
  async continuationDepth(runId: string): Promise<number> {
    const result = await sql<{ depth: number }>`
      with recursive chain(id, parent_run_id, trigger, depth) as (
        select id, parent_run_id, trigger, 0 from runs where id = ${runId}
        union all
        select runs.id, runs.parent_run_id, runs.trigger, chain.depth + 1
        from runs join chain on runs.id = chain.parent_run_id
        where chain.trigger = 'continue' and chain.depth < ${MAX_CHAIN_WALK}
      )
      select count(*)::int as depth from chain where trigger = 'continue'`.execute(this.#db);
    return result.rows[0]?.depth ?? 0;
  }

  /**
   * Runs whose ending made a follow-up owed before `before` that has not begun (or been refused) since: their
   * owner died between the two, or failed to start it (`RunEngine.startContinuation`). Oldest first.
   */
  async findOwedContinuations(options: { before: Date }): Promise<RunRow[]> {
    return this.#db
      .selectFrom('runs')
      .selectAll()
      .where('continuation_owed_at', 'is not', null)
      .where('continuation_owed_at', '<', options.before)
      .orderBy('continuation_owed_at')
      .limit(SWEEP_BATCH)
      .execute();
  }

  /**
   * Settles the follow-up `parentRunId` owed, in `db` (a follow-up's begin transaction, or alone once its start
   * was refused). True only for the one caller that settled it: in a transaction, that caller holds the
   * parent's row until it commits, and any other waits for that and then gets false.
   */
  async settleContinuation(parentRunId: string, db: Db | Transaction<Database> = this.#db): Promise<boolean> {
    const settled = await db
      .updateTable('runs')
      .set({ continuation_owed_at: null })
      .where('id', '=', parentRunId)
      .where('continuation_owed_at', 'is not', null)
      .executeTakeFirst();
    return Number(settled.numUpdatedRows) === 1;
  }

  /**
   * Defers the follow-up `parentRunId` owes by `seconds`: the sweeper looks at it again a lease after that
   * (its `continuation_owed_at` is moved on, by the database's clock).
   */
  async deferContinuation(parentRunId: string, seconds: number): Promise<void> {
    await this.#db
      .updateTable('runs')
      .set({ continuation_owed_at: sql<Date>`now() + make_interval(secs => ${seconds})` })
      .where('id', '=', parentRunId)
      .where('continuation_owed_at', 'is not', null)
      .execute();
  }

  /** Settles every follow-up the chat's runs owe (a stop of the chat cancels them). */
  async settleContinuationsOfChat(chatId: string): Promise<void> {
    await this.#db
      .updateTable('runs')
      .set({ continuation_owed_at: null })
      .where('chat_id', '=', chatId)
      .where('continuation_owed_at', 'is not', null)
      .execute();
  }

  /** A run's finished steps, in order. */
  async listSteps(runId: string) {
    return this.#db.selectFrom('run_steps').selectAll().where('run_id', '=', runId).orderBy('step').execute();
  }

  /**
   * Records a stop request on an active or queued run. `stopped` is true only for the request that set it;
   * a second stop (or a stop of a finished run) changes nothing and answers false.
   */
  async requestStop(runId: string): Promise<{ stopped: boolean; run: RunRow | undefined }> {
    const row = await this.#db
      .updateTable('runs')
      .set({ stop_requested_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
      .where('id', '=', runId)
      .where('status', 'in', STOPPABLE_STATUSES)
      .where('stop_requested_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    if (row) return { stopped: true, run: row };
    return { stopped: false, run: await this.get(runId) };
  }

  /**
   * Runs the sweeper must look at. With `all` (a single instance at start: whatever is active was left by
   * a previous process) every `pending` and `running` run; otherwise `running` runs whose lease ran out by
   * `now`, and `pending` runs nobody claimed since `pendingBefore` (their job may be lost). Also `waiting`
   * runs whose wait expired by `now`.
   */
  async findOrphans(options: { all: boolean; now: Date; pendingBefore: Date }): Promise<RunRow[]> {
    const { now } = options;
    return this.#db
      .selectFrom('runs')
      .selectAll()
      .where('status', 'in', ACTIVE_RUN_STATUSES)
      .where((eb) =>
        eb.or([
          options.all
            ? eb('status', 'in', [RunStatus.pending, RunStatus.running])
            : eb.or([
                eb.and([eb('status', '=', RunStatus.running), eb('lease_expires_at', '<', now)]),
                eb.and([eb('status', '=', RunStatus.pending), eb('updated_at', '<', options.pendingBefore)]),
              ]),
          eb.and([
            eb('status', '=', RunStatus.waiting),
            sql<boolean>`(waiting->>'expiresAt')::timestamptz < ${now}`,
          ]),
        ]),
      )
      .orderBy('id')
      .limit(SWEEP_BATCH)
      .execute();
  }
}

/** The longest continuation chain walked back (a guard against a cycle in bad data). */
const MAX_CHAIN_WALK = 1000;

/** Runs one sweeper pass looks at; the next pass takes the rest. */
const SWEEP_BATCH = 500;

function isActiveRunConflict(error: unknown): boolean {
  const pgError = error as { constraint?: unknown; message?: unknown };
  return (
    isUniqueViolation(error) &&
    (pgError.constraint === 'runs_one_active_per_chat' ||
      String(pgError.message).includes('runs_one_active_per_chat'))
  );
}

/** A message row as `json_agg` gives it: its times as text. */
type MessageRowJson = Omit<MessageRow, 'created_at' | 'updated_at'> & {
  created_at: string;
  updated_at: string;
};

/** Statuses of a message whose run has not ended (it may still change). */
const UNSETTLED_MESSAGE_STATUSES: readonly string[] = ['streaming', 'queued'];

/**
 * The history a start read in its own statement, with the user message that statement inserted (which its
 * snapshot does not show), or null when it may be out of date. A chat whose row kept its version had no start
 * meanwhile (every start touches it); an earlier run's message that had not settled in the snapshot means
 * that run's ending committed while this statement waited for it (the unique index on active runs makes a
 * start wait for the ending of the chat's active run). Either way, the history is read again.
 */
function currentHistory(
  history: MessageRowJson[],
  begun: BeginValues,
  userParts: unknown[],
): MessageRow[] | null {
  if (history.some((message) => UNSETTLED_MESSAGE_STATUSES.includes(message.status))) return null;
  return [
    ...history.map((message) => ({
      ...message,
      created_at: new Date(message.created_at),
      updated_at: new Date(message.updated_at),
    })),
    // The user message the statement inserted (`beginStatement`), which its snapshot does not show.
    {
      id: begun.userMessageId,
      chat_id: begun.chatId,
      workspace_id: begun.workspaceId,
      role: 'user',
      parts: userParts,
      status: 'completed',
      run_id: begun.runId,
      created_at: begun.now,
      updated_at: begun.now,
    },
  ];
}

/**
 * Advisory locks' first key for chats' start gates (the second is a hash of the chat's id): a namespace of its
 * own, apart from the single-key locks (`pg_advisory_xact_lock(bigint)`) others may take in the same database.
 */
export const CHAT_START_GATE = 0x6f72_7331; // 'ors1'

/**
 * Takes a chat's start gate until the transaction ends: `shared` by a start in one statement, `exclusive` by
 * a start that locks the chat's row (`RunService.#insertLocked`). Two chats may share a gate (a hash
 * collision), which only makes one wait for the other.
 */
function chatStartGate(chatId: string, mode: 'shared' | 'exclusive') {
  return mode === 'shared'
    ? sql`pg_advisory_xact_lock_shared(${CHAT_START_GATE}::int, hashtext(${chatId}))`
    : sql`pg_advisory_xact_lock(${CHAT_START_GATE}::int, hashtext(${chatId}))`;
}

/** Every value of the statement that begins a run (`beginStatement`), bound per call. */
interface BeginValues extends Record<string, unknown> {
  runId: string;
  chatId: string;
  workspaceId: string;
  userId: string;
  trigger: RunTrigger;
  status: RunStatus;
  model: string;
  options: string;
  config: string | null;
  agentId: string | null;
  parentRunId: string | null;
  scheduleId: string | null;
  metadata: string | null;
  assistantMessageId: string;
  assistantStatus: 'queued' | 'streaming';
  queuedAt: Date | null;
  attempt: number;
  leaseOwner: string | null;
  leaseExpiresAt: Date | null;
  startedAt: Date | null;
  now: Date;
  userMessageId: string;
  userParts: string;
  /** The run's `data-run` events as begun and, with a local claim, as claimed (`secondEvent`). */
  firstEvent: string;
  secondEvent: string | null;
  /** `ChatCheck`'s values (null without a check). */
  keyId: string | null;
  ownerId: string | null;
  expectedAgentId: string | null;
}

/** What shapes the statement that begins a run (`StatementShapes`): everything else is a bound value. */
interface BeginShape extends Shape {
  /** Whether the statement takes the chat's start gate (`shared`) or its transaction holds it (`held`). */
  gate: 'shared' | 'held';
  /** With a local claim: the claimed run's event, and the history read. */
  claimed: boolean;
  /** `BeginRunOptions.chatCheck`: none, the chat's, or the chat's and the API key's. */
  chatCheck: 'none' | 'chat' | 'key';
}

/**
 * One statement for the run, its two messages and its first events; the messages' foreign key to the run is
 * checked at the statement's end, when all are in. The chat is touched last: its update reads the inserted
 * run, so the run's place in the unique index on active runs is settled before this statement waits for the
 * chat's lock. (An ending locks its run's row, then the chat to promote a queued run: a start that held the
 * chat's lock while the index made it wait for that ending would deadlock with it.) The run's chat id is
 * computed under the chat's start gate, so the gate is held before the row meets the index
 * (`RunService.#insertLocked` says why).
 *
 * Built once per shape, with placeholders for `v` (`StatementShapes`): it decides nothing by a value.
 */
function beginStatement(db: Db, shape: BeginShape, v: BeginValues) {
  const chatId =
    shape.chatCheck === 'none' ? sql<string>`${v.chatId}::text` : checkedChatId(v, shape.chatCheck === 'key');
  const messages: Insertable<Database['messages']>[] = [
    {
      id: v.userMessageId,
      chat_id: v.chatId,
      workspace_id: v.workspaceId,
      role: 'user',
      parts: v.userParts,
      status: 'completed',
      run_id: v.runId,
      created_at: v.now,
      updated_at: v.now,
    },
    {
      id: v.assistantMessageId,
      chat_id: v.chatId,
      workspace_id: v.workspaceId,
      role: 'assistant',
      parts: '[]',
      status: v.assistantStatus,
      run_id: v.runId,
      created_at: v.now,
      updated_at: v.now,
    },
  ];
  const events = [{ run_id: v.runId, seq: 1, chunk: v.firstEvent }];
  if (shape.claimed) events.push({ run_id: v.runId, seq: 2, chunk: v.secondEvent! });
  return (
    db
      .with('inserted_run', (cte) =>
        cte
          .insertInto('runs')
          .values({
            id: v.runId,
            chat_id:
              shape.gate === 'shared'
                ? sql<string>`(select ${chatId} from (select ${chatStartGate(v.chatId, 'shared')}) as gate)`
                : chatId,
            workspace_id: v.workspaceId,
            created_by: v.userId,
            trigger: v.trigger,
            status: v.status,
            model: v.model,
            options: v.options,
            config: v.config,
            agent_id: v.agentId,
            parent_run_id: v.parentRunId,
            schedule_id: v.scheduleId,
            metadata: v.metadata,
            assistant_message_id: v.assistantMessageId,
            queued_at: v.queuedAt,
            step_count: 0,
            attempt: v.attempt,
            epoch: v.attempt,
            lease_owner: v.leaseOwner,
            lease_expires_at: v.leaseExpiresAt,
            started_at: v.startedAt,
            created_at: v.now,
            updated_at: v.now,
          })
          .returningAll(),
      )
      .with('inserted_messages', (cte) => cte.insertInto('messages').values(messages).returning('id'))
      .with('inserted_events', (cte) => cte.insertInto('run_events').values(events).returning('seq'))
      // The chat's newest version, locked before the touch below changes it (the touch reads it): against the
      // version this statement's snapshot holds, it says whether the history read below is current. Locked, the
      // row is read as committed last: a chat deleted since this statement's snapshot yields nothing here, and
      // the start declines (`chat_live` below), so no run begins in a chat once its deletion has committed.
      .with('chat_version', (cte) =>
        cte
          .selectFrom('chats')
          .select(sql<string>`xmin::text`.as('version'))
          .where('id', '=', (eb) => eb.selectFrom('inserted_run').select('chat_id'))
          .where('deleted_at', 'is', null)
          .forUpdate(),
      )
      .with('touched_chat', (cte) =>
        cte
          .updateTable('chats')
          .set({ updated_at: v.now })
          .where('id', '=', (eb) => eb.selectFrom('inserted_run').select('chat_id'))
          .where((eb) => eb.exists(eb.selectFrom('chat_version').select('version')))
          .returning('id'),
      )
      .selectFrom('inserted_run')
      .selectAll()
      .select(
        sql<null>`(case when exists (select from chat_version) then null
          when outrun_fall_back('chat') then null end)`.as('chat_live'),
      )
      .select(
        shape.claimed
          ? [
              sql<MessageRowJson[] | null>`(select json_agg(m order by m.id) from messages m
              where m.chat_id = ${v.chatId} and m.id < ${v.userMessageId})`.as('history'),
              sql<boolean>`(select version from chat_version)
              = (select xmin::text from chats where id = ${v.chatId})`.as('history_current'),
            ]
          : [sql<null>`null`.as('history'), sql<boolean>`false`.as('history_current')],
      )
  );
}

/**
 * The run's `chat_id` under `BeginRunOptions.chatCheck`: the chat's id when the key (`withKey`) authenticates
 * and the chat is the owner's, not deleted, and has the expected agent; otherwise `outrun_fall_back`
 * (migration 0010) fails the whole statement, with `key`, `chat` or `agent:<the chat's agent>`. The key comes
 * first: a decline for the chat or its agent says the key authenticated (the start route relies on it).
 * The run's values are computed before its row meets the unique index on active runs, so someone else's busy
 * chat is refused as missing, never as busy.
 */
function checkedChatId(v: BeginValues, withKey: boolean) {
  const key = withKey
    ? sql`when not ${keyStillValid(v.keyId!)} then case when outrun_fall_back('key') then null end`
    : sql``;
  return sql<string>`(select case ${key}
      when c.id is null then case when outrun_fall_back('chat') then null end
      when c.agent_id is distinct from ${v.expectedAgentId}::text
        then case when outrun_fall_back('agent:' || coalesce(c.agent_id, '')) then null end
      else c.id end
    from (values (1)) as one (x)
    left join chats c on c.id = ${v.chatId} and c.workspace_id = ${v.workspaceId}
      and c.owner_id = ${v.ownerId} and c.deleted_at is null)`;
}
