import { sql, type QueryCreator, type RawBuilder, type Transaction, type UpdateObject } from 'kysely';
import type { Logger } from 'pino';
import type { ModelPrice } from '../agent/prices.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import { MessageProjector } from '../protocol/message-projector.ts';
import { observeRunEnded, type Metrics } from '../metrics.ts';
import { QueueClosedError, type RunQueue } from '../queue/queue.ts';
import type { Db } from '../store/database.ts';
import type { Database, RunRow } from '../store/schema.ts';
import { StatementShapes, type Shape } from '../store/statement-shapes.ts';
import { fallBackOf, retryTransient } from '../store/transient.ts';
import {
  eventsArray,
  insertEvents,
  numberSerialized,
  serializeChunk,
  type EventLog,
  type LogEvent,
} from '../stream/event-log.ts';
import { interruptedStep } from '../stream/interrupted-step.ts';
import { runStatusChunk } from '../stream/run-event.ts';
import type { RunWaiting } from '../protocol/run.ts';
import type { FinishedStep } from './agent-loop.ts';
import { toRunObject, type RunObject } from './run-object.ts';
import type { RunErrorCode } from './run-status.ts';
import {
  ACTIVE_RUN_STATUSES,
  RUN_ERROR_MESSAGES,
  RunStatus,
  isActiveStatus,
  isTerminalStatus,
  type RunError,
  type TerminalRunStatus,
} from './run-status.ts';

/**
 * Every transition a run may take (DESIGN §2). The table is the code: `Lifecycle.transition` refuses any
 * other, so a status change that is not drawn here cannot happen.
 *
 *     queued ──▶ pending ──claim──▶ running ──▶ succeeded | failed | aborted
 *                   ▲                 │  │
 *                   ├─release/requeue─┘  └─approval or budget─▶ waiting ──expire/stop─▶ aborted
 *                   └────────────answered / continued──────────────┘
 */
export const RUN_TRANSITIONS: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  // Promoted when the chat's active run ends, or cancelled.
  queued: [RunStatus.pending, RunStatus.aborted],
  // Claimed by a worker, stopped, or failed by the start path's safety net.
  pending: [RunStatus.running, RunStatus.aborted, RunStatus.failed],
  // Released or requeued, paused for a person, or ended.
  running: [RunStatus.pending, RunStatus.waiting, RunStatus.succeeded, RunStatus.failed, RunStatus.aborted],
  // Answered (back to a worker), stopped or expired.
  waiting: [RunStatus.pending, RunStatus.aborted],
  succeeded: [],
  failed: [],
  aborted: [],
};

/** A status change the table does not allow: a bug in the caller, never a user error. */
export class InvalidTransitionError extends Error {
  readonly code = 'invalid_transition';
  constructor(from: RunStatus, to: RunStatus) {
    super(`A run cannot go from ${from} to ${to}.`);
    this.name = 'InvalidTransitionError';
  }
}

/** Whether the table allows `from → to`. */
export function canTransition(from: RunStatus, to: RunStatus): boolean {
  return RUN_TRANSITIONS[from].includes(to);
}

/**
 * How a run ends, as a value: its terminal status, its error and the chunks that close its stream before
 * the terminal `data-run`. Every ending — the owner finishing, a stop, the sweeper, the start path's
 * safety net, a budget — is built here, from the one table of codes and messages.
 */
export interface Ending {
  status: TerminalRunStatus;
  error: RunError | null;
  chunks: unknown[];
}

export const Ending = {
  succeeded(): Ending {
    return { status: RunStatus.succeeded, error: null, chunks: [] };
  },
  /** Aborted with `code`; `abort` is the AI SDK's closing chunk (left out when the loop already sent one). */
  aborted(code: RunErrorCode, options: { sendAbort?: boolean } = {}): Ending {
    return {
      status: RunStatus.aborted,
      error: { code, message: RUN_ERROR_MESSAGES[code] },
      chunks: options.sendAbort === false ? [] : [{ type: 'abort' }],
    };
  },
  /** Failed with `code`; `message` replaces the table's (a model's own error text). */
  failed(code: RunErrorCode, options: { message?: string; sendError?: boolean } = {}): Ending {
    const message = options.message ?? RUN_ERROR_MESSAGES[code];
    return {
      status: RunStatus.failed,
      error: { code, message },
      chunks: options.sendError === false ? [] : [{ type: 'error', errorText: message }],
    };
  },
} as const;

/** Where a run's assistant message status lands for each status of its run. */
const MESSAGE_STATUS = {
  queued: 'queued',
  pending: 'streaming',
  running: 'streaming',
  waiting: 'streaming',
  succeeded: 'completed',
  failed: 'error',
  aborted: 'aborted',
} as const;

type RunChanges = Omit<UpdateObject<Database, 'runs'>, 'id' | 'status' | 'epoch'>;

export interface TransitionRequest {
  runId: string;
  to: RunStatus;
  /** The statuses the run may be in; every one must allow `to` in `RUN_TRANSITIONS`. */
  from: readonly RunStatus[];
  /** Fence: only while the run is still at this epoch (its owner's token). */
  epoch?: number;
  /** Only if the run's lease ran out before this time (the sweeper's condition, checked in the update). */
  leaseExpiredBefore?: Date;
  /** Other columns to change with the status. */
  changes?: RunChanges;
  /**
   * Close the step a dead or departing owner left open, with this reason: computed in the transaction from
   * the run's log (`text-end` of open parts, then `data-step-interrupted`), before `chunks`.
   */
  closeInterruptedStep?: string;
  /** Chunks appended before the `data-run`. */
  chunks?: unknown[];
  /**
   * The owner's last events as its writer serialized them, not written yet (`RunEventWriter.takeTail`,
   * decision 0015): appended first, numbered from `lastSeq + 1`, durable with the change.
   */
  tail?: readonly string[];
  /** A terminal status's final message parts. Absent: projected from the run's log. */
  parts?: unknown[];
  /** The run's last sequence number, when the caller knows it in this transaction (saves reading it). */
  lastSeq?: number;
  /**
   * A finished step to record with the change (the owner's last, which then needs no statement of its own).
   * The run's totals are the caller's `changes`; a step already recorded is kept.
   */
  step?: FinishedStep;
  /**
   * The row this change leaves, when its owner knows every column of it (`Lifecycle.end` with the owner's
   * row and spend). A terminal change from `running` then goes in one statement (decision 0011), which falls
   * back to the transaction when it cannot be sure: see `#endInOneStatement`.
   */
  ended?: RunRow;
}

export interface TransitionResult {
  run: RunObject;
  row: RunRow;
  events: LogEvent[];
  /** The chat's oldest queued run, promoted to `pending` by this run's ending. */
  promoted: TransitionResult | null;
}

/**
 * Writes that join a status change's transaction (the webhooks outbox). `lookup`, when it gives an
 * expression, is read by the statement that appends the change's events (no round trip of its own), and
 * `record` gets its value. A start's local claim (`pending` → `running`, made by the run's insert) runs
 * none: `running` reports no webhook.
 */
/** What a listener's look-up is built from (`TransitionListener.lookup`). */
export interface LookupChange {
  status: RunStatus;
  workspaceId: string;
}

export interface TransitionListener {
  /**
   * Given only the status the run changes to and its workspace: an owner's ending in one statement builds its
   * look-up once per status and keeps it with the statement (`StatementShapes`), so the expression may decide
   * by `status` and must pass `workspaceId` into the statement as it is.
   */
  lookup?: (change: LookupChange) => RawBuilder<unknown> | null;
  record: (tx: Transaction<Database>, change: TransitionResult, lookedUp: unknown) => Promise<void>;
}

export interface LifecycleOptions {
  db: Db;
  log: EventLog;
  queue: RunQueue;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  /** Called inside every status change's transaction. */
  listeners?: TransitionListener[];
  /** Called after a status change committed (for instance, to nudge a dispatcher). */
  afterCommit?: (change: TransitionResult) => void;
  /** A model's price, for what a step cut by a crash spent. @default no price */
  prices?: { of(model: string): ModelPrice | null };
}

/**
 * The run lifecycle as one mechanism. Every status change of every run goes through `transition`: it checks
 * the table, writes the row under the fence (bumping `epoch`, so whoever held the run before is fenced out
 * of its log), appends the closing chunks and the `data-run` event through the event log in the same
 * transaction, gives a terminal run's message its final parts, promotes the chat's next queued run, and —
 * after commit — publishes the events and hands `pending` runs to the queue.
 */
export class Lifecycle {
  readonly #options: LifecycleOptions;
  readonly #endings = new StatementShapes<EndingShape, EndingValues>();

  constructor(options: LifecycleOptions) {
    this.#options = options;
  }

  /**
   * Applies one transition in its own transaction, retried on transient database errors, then publishes.
   * An owner's ending that knows the row it leaves (`ended`) tries one statement first, and takes the
   * transaction only if that statement declines. Returns null when the run was not in a state the request
   * allows (another change won the race).
   */
  async transition(request: TransitionRequest): Promise<TransitionResult | null> {
    const { ended } = request;
    const result = await retryTransient(
      async () =>
        (ended && (await this.#endInOneStatement(request, ended))) ??
        (await this.#options.db.transaction().execute((tx) => this.transitionIn(tx, request))),
      { attempts: 6, onRetry: () => this.#options.metrics.settleRetries.inc() },
    );
    if (result) await this.afterCommit(result);
    return result;
  }

  /**
   * Applies one transition inside the caller's transaction. Call `afterCommit` with the result once the
   * transaction has committed.
   */
  async transitionIn(
    tx: Transaction<Database>,
    request: TransitionRequest,
  ): Promise<TransitionResult | null> {
    for (const from of request.from) {
      if (!canTransition(from, request.to)) throw new InvalidTransitionError(from, request.to);
    }
    const terminal = isTerminalStatus(request.to);
    let update = tx
      .updateTable('runs')
      .set((eb) => {
        return {
          ...request.changes,
          status: request.to,
          epoch: eb('epoch', '+', 1),
          ...(request.to === RunStatus.waiting || request.to === RunStatus.pending || terminal
            ? { lease_owner: null, lease_expires_at: null }
            : {}),
          ...(request.to === RunStatus.waiting ? {} : { waiting: null }),
          ...(terminal ? { finished_at: sql<Date>`now()` } : {}),
          updated_at: sql<Date>`now()`,
        };
      })
      .where('id', '=', request.runId)
      .where('status', 'in', request.from);
    if (request.epoch !== undefined) update = update.where('epoch', '=', request.epoch);
    if (request.leaseExpiredBefore) {
      update = update.where('lease_expires_at', '<', request.leaseExpiredBefore);
    }
    // A run that ends from an active status held the chat's one active slot: its ending hands the slot to the
    // chat's oldest queued run. The chat row's lock orders that against a concurrent start that would queue
    // (see RunService.begin). The update takes it in the same statement, after the run's row (the lock's
    // lookup reads the updated row), the order an ending always had (decision 0008 says why it matters). The
    // queued run is looked for by the next statement, whose snapshot is taken once the lock is held.
    const promotes = terminal && request.from.some((status) => isActiveStatus(status));
    const updated = promotes
      ? await tx
          .with('changed', () => update.returningAll())
          .with('chat', (db) =>
            db
              .selectFrom('chats')
              .select('id')
              .where('id', 'in', db.selectFrom('changed').select('chat_id'))
              .forUpdate(),
          )
          .selectFrom('changed')
          .innerJoin('chat', 'chat.id', 'changed.chat_id')
          .selectAll('changed')
          .executeTakeFirst()
      : await update.returningAll().executeTakeFirst();
    if (!updated) return null;

    const { log } = this.#options;
    const tail = request.tail ?? [];
    if (tail.length > 0 && (request.closeInterruptedStep || request.lastSeq === undefined)) {
      throw new Error(
        `run ${updated.id}: an owner's tail needs its last sequence number and no step to close`,
      );
    }
    const interrupted = request.closeInterruptedStep
      ? interruptedStep(await collectChunks(log.replay(updated.id, tx)), request.closeInterruptedStep)
      : null;
    // A crash left no owner to count what the cut step spent (a budget cut and a hand-back count it
    // themselves): the run's usage and the day's count it now, from the output the stream shows.
    const row =
      interrupted && interrupted.outputChunks > 0 && request.closeInterruptedStep === INTERRUPTED_BY_CRASH
        ? await countCrashedStep(
            tx,
            updated,
            interrupted.outputChunks,
            this.#options.prices?.of(updated.model),
          )
        : updated;
    const chunks = interrupted?.closure ?? [];
    chunks.push(...(request.chunks ?? []));
    const run = toRunObject(row);
    chunks.push(runStatusChunk(run));
    // Numbered by the statement below, which reads the last sequence number itself unless the caller knows it.
    const data = [...tail, ...chunks.map(serializeChunk)];

    // The message changes with a terminal status, or when its status differs (not for pending ⇄ running).
    const messageChanges =
      terminal || request.from.some((from) => MESSAGE_STATUS[from] !== MESSAGE_STATUS[request.to]);
    const messageId = messageChanges ? row.assistant_message_id : null;
    const parts =
      messageId && terminal
        ? (request.parts ??
          (await this.#projectFromLog(tx, row.id, [...tail.map((text) => JSON.parse(text)), ...chunks])))
        : undefined;
    // One statement appends the events, updates the message and, for an ending that freed the chat's slot,
    // finds the chat's oldest queued run: it runs after the chat's lock was taken, so it sees every run a
    // start queued before.
    const written = changeWrites(tx, {
      runId: row.id,
      events: eventsArray(data),
      lastSeq: request.lastSeq,
      step: request.step && stepValues(request.step),
      messageId,
      to: request.to,
      parts: parts && JSON.stringify(parts),
    });
    // From active statuses only, this run held the slot (the unique index allows no other), so it is free
    // without looking; a stop that may also end a queued run looks for an active one.
    const slotFree = request.from.every((status) => isActiveStatus(status));
    // The listeners' look-ups (the webhooks a terminal status reports to) ride in the same statement.
    const listeners = this.#options.listeners ?? [];
    const change = { status: request.to, workspaceId: row.workspace_id };
    const lookups = listeners.map((listener) => listener.lookup?.(change) ?? sql`null`);
    const found = await written
      .selectNoFrom((eb) => [
        (promotes
          ? eb
              .selectFrom('runs')
              .select('id')
              .where('chat_id', '=', row.chat_id)
              .where('status', '=', RunStatus.queued)
              .orderBy('id')
              .limit(1)
          : sql<string | null>`null`
        ).as('queued'),
        (promotes && !slotFree
          ? eb
              .selectFrom('runs')
              .select('id')
              .where('chat_id', '=', row.chat_id)
              .where('status', 'in', ACTIVE_RUN_STATUSES)
              .limit(1)
          : sql<string | null>`null`
        ).as('active'),
        ...lookups.map((lookup, index) => lookup.as(`lookup_${index}`)),
        sql<number>`(select min(seq) from appended)`.as('first_seq'),
      ])
      .executeTakeFirstOrThrow();
    const { queued, active } = found;
    const events = numberSerialized(data, Number(found.first_seq) - 1);

    const result: TransitionResult = { run, row, events, promoted: null };
    // The chat's slot is free: its oldest queued run takes it, in this same transaction.
    if (queued && !active) {
      result.promoted = await this.transitionIn(tx, {
        runId: queued,
        to: RunStatus.pending,
        from: [RunStatus.queued],
      });
    }
    for (const [index, listener] of listeners.entries()) {
      await listener.record(tx, result, (found as Record<string, unknown>)[`lookup_${index}`]);
    }
    if (terminal) await this.#options.faults.hit(FaultPoint.settleBeforeCommit, { runId: row.id });
    return result;
  }

  /**
   * An owner's ending in one autocommit statement (decision 0011), where the transaction of `transitionIn`
   * takes four round trips: the run's update, the chat's lock, the events, the last step and the message,
   * with the `data-run` event built beforehand from `ended`, the row the change leaves. Returns undefined,
   * having written nothing, when the statement cannot be sure of its ending, and `transition` then takes the
   * transaction:
   *
   * - `run`: the update matched nothing. Fenced out, already ended, or a stop was requested (the event
   *   carries `stopRequestedAt`, which `ended` does not know).
   * - `chat`: the chat's row changed while the statement waited for its lock. The lock reads the newest
   *   version, the plain read the statement's snapshot, and every start touches the chat's row, so they
   *   differ exactly when a start committed meanwhile, whose queued run this snapshot cannot see.
   * - `queued`: a queued run takes the slot this ending frees; the transaction promotes it.
   * - `listener`: a listener has something to record (a webhook delivery), which needs the transaction.
   *
   * The statement raises through `outrun_fall_back` (migration 0010), so it writes nothing when it declines.
   */
  async #endInOneStatement(request: TransitionRequest, ended: RunRow): Promise<TransitionResult | undefined> {
    const { db, faults, metrics } = this.#options;
    const { runId, parts } = request;
    if (
      !isTerminalStatus(request.to) ||
      ended.status !== request.to ||
      request.from.length !== 1 ||
      request.from[0] !== RunStatus.running ||
      request.epoch === undefined ||
      ended.epoch !== request.epoch + 1 ||
      request.closeInterruptedStep !== undefined ||
      parts === undefined ||
      (request.tail !== undefined && request.tail.length > 0 && request.lastSeq === undefined)
    ) {
      throw new Error(
        `run ${runId}: only an owner's ending from running, with its parts ` +
          '(and, with a tail, its last sequence number), goes in one statement',
      );
    }
    const run = toRunObject(ended);
    const data = [
      ...(request.tail ?? []),
      ...[...(request.chunks ?? []), runStatusChunk(run)].map(serializeChunk),
    ];
    const json = (value: unknown) => (value === null ? null : JSON.stringify(value));
    const listeners = this.#options.listeners ?? [];
    const shape: EndingShape = {
      to: request.to,
      lastSeq: request.lastSeq !== undefined,
      step: request.step !== undefined,
      message: ended.assistant_message_id !== null,
      // Which listeners look something up for this status: their expressions go into the statement.
      lookups: listeners
        .map((listener) =>
          listener.lookup?.({ status: request.to, workspaceId: ended.workspace_id }) ? '1' : '0',
        )
        .join(''),
    };
    const step = request.step && stepValues(request.step);
    const values: EndingValues = {
      runId,
      chatId: ended.chat_id,
      workspaceId: ended.workspace_id,
      epoch: request.epoch,
      error: json(ended.error),
      usage: json(ended.usage),
      costUsd: ended.cost_usd,
      stepCount: ended.step_count,
      newEpoch: ended.epoch,
      finishedAt: ended.finished_at,
      updatedAt: ended.updated_at,
      events: eventsArray(data),
      lastSeq: request.lastSeq ?? null,
      step: step?.step ?? null,
      stepParts: step?.parts ?? null,
      stepUsage: step?.usage ?? null,
      stepCostUsd: step?.costUsd ?? null,
      stepLastSeq: step?.lastSeq ?? null,
      stepStartedAt: step?.startedAt ?? null,
      stepFinishedAt: step?.finishedAt ?? null,
      messageId: ended.assistant_message_id,
      parts: JSON.stringify(parts),
    };
    const statement = this.#endings.compile(shape, values, (compiling, v) =>
      endingStatement(db, compiling, v, listeners),
    );
    // "Before commit", as in the transaction: a fault here leaves nothing written, as a crash would.
    await faults.hit(FaultPoint.settleBeforeCommit, { runId });
    let found: { first_seq: unknown };
    try {
      const result = await db.executeQuery(statement);
      found = result.rows[0]!;
    } catch (error) {
      const reason = fallBackOf(error)?.reason;
      if (reason === undefined) throw error;
      metrics.endingFallbacks.inc({ reason });
      return undefined;
    }
    return { run, row: ended, events: numberSerialized(data, Number(found.first_seq) - 1), promoted: null };
  }

  /** After commit: count, publish the events, and hand `pending` runs to the queue (best effort). */
  async afterCommit(result: TransitionResult): Promise<void> {
    const { log, queue, metrics, logger } = this.#options;
    for (let change: TransitionResult | null = result; change; change = change.promoted) {
      const { run } = change;
      metrics.runTransitions.inc({ to: run.status });
      if (isTerminalStatus(run.status)) {
        metrics.runsSettled.inc({ status: run.status });
        observeRunEnded(metrics, run);
      }
      await log.publish(run.id, change.events).catch((error: unknown) => {
        // Readers re-read the log on their next keep-alive; the database is the truth.
        logger.warn({ err: error, runId: run.id }, 'publishing a status change failed');
      });
      if (run.status === RunStatus.pending) {
        await queue.enqueue({ runId: run.id, epoch: change.row.epoch }).catch((error: unknown) => {
          // The run stays pending; the sweeper hands it to the queue again. A queue closed by this process's
          // shutdown (an in-process queue, whose runs it hands back) is what a restart expects, not a fault.
          if (error instanceof QueueClosedError) {
            logger.info(
              { runId: run.id },
              'the queue is closed by shutdown; the run stays pending for the next sweep',
            );
          } else {
            logger.warn(
              { err: error, runId: run.id },
              'handing the run to the queue failed; the sweeper retries',
            );
          }
        });
      }
      this.#options.afterCommit?.(change);
    }
  }

  /** The message's parts: the run's durable events, then `appending` (not yet written). */
  async #projectFromLog(tx: Transaction<Database>, runId: string, appending: unknown[]): Promise<unknown[]> {
    const projector = new MessageProjector();
    for await (const { chunk } of this.#options.log.replay(runId, tx)) projector.push(chunk as never);
    for (const chunk of appending) projector.push(chunk as never);
    return projector.parts();
  }

  // ——— The named transitions, each one row of the table ———

  /** `pending → running` for a worker: a new execution (`attempt + 1`) and a lease. */
  claim(options: ClaimOptions) {
    return this.transition(claimRequest(options));
  }

  /** The owner ends its run: the loop finished, failed or was stopped. */
  end(options: {
    runId: string;
    epoch: number;
    ending: Ending;
    parts?: unknown[];
    changes?: Partial<Spend>;
    /** The run's last sequence number, when the owner knows it (its writer's, all of it durable). */
    lastSeq?: number;
    /** The owner's last events, not written yet: numbered from `lastSeq + 1` and written with the ending. */
    tail?: readonly string[];
    /** The owner's last finished step, recorded with the ending. */
    step?: FinishedStep;
    /**
     * The row the owner claimed the run with. With it, the run's whole spend in `changes` and its `parts`,
     * the ending knows the row it leaves and goes in one statement (decision 0011).
     */
    owner?: RunRow;
    /**
     * The ending makes a follow-up owed (`onExceeded: "continue"`): recorded with the ending, so that the
     * follow-up is started even if this process dies before it starts it (`RunEngine.startContinuation`).
     */
    continuationOwed?: boolean;
  }) {
    const { owner, parts, continuationOwed } = options;
    const { usage, cost_usd, step_count } = options.changes ?? {};
    if (continuationOwed) {
      // Rare enough (once per continued run) to take the transaction's path rather than shape the one statement.
      const changes = { ...options.changes, continuation_owed_at: sql<Date>`now()` };
      return this.#end({ ...options, changes, from: [RunStatus.running], owned: true });
    }
    const ended =
      owner?.epoch === options.epoch &&
      owner.stop_requested_at === null &&
      parts !== undefined &&
      usage !== undefined &&
      cost_usd !== undefined &&
      step_count !== undefined
        ? endedRow(owner, options.ending, { usage, cost_usd, step_count })
        : undefined;
    return this.#end({ ...options, from: [RunStatus.running], owned: true, ended });
  }

  /**
   * Someone other than its owner ends a run (a stop of a queued, pending or waiting run, the sweeper, the
   * safety net). `epoch` fences the change to the state the caller read; a step a dead worker left open
   * is closed first.
   */
  endUnowned(options: {
    runId: string;
    from: readonly RunStatus[];
    ending: Ending;
    epoch?: number;
    leaseExpiredBefore?: Date;
  }) {
    return this.#end({ ...options, owned: false });
  }

  #end(options: {
    runId: string;
    from: readonly RunStatus[];
    ending: Ending;
    owned: boolean;
    epoch?: number;
    parts?: unknown[];
    leaseExpiredBefore?: Date;
    changes?: RunChanges;
    lastSeq?: number;
    tail?: readonly string[];
    step?: FinishedStep;
    ended?: RunRow;
  }) {
    const { ending } = options;
    const closing = !options.owned && options.from.includes(RunStatus.running);
    return this.#settled(
      this.transition({
        runId: options.runId,
        to: ending.status,
        from: options.from,
        epoch: options.epoch,
        leaseExpiredBefore: options.leaseExpiredBefore,
        changes: { ...options.changes, error: ending.error ? JSON.stringify(ending.error) : null },
        closeInterruptedStep: closing ? INTERRUPTED_BY_CRASH : undefined,
        chunks: ending.chunks,
        parts: options.parts,
        lastSeq: options.lastSeq,
        tail: options.tail,
        step: options.step,
        ended: options.ended,
      }),
      options.runId,
      ending,
    );
  }

  /** Settles are logged once at error level if they fail for good, with run and chat ids (invariant 4). */
  async #settled(
    attempt: Promise<TransitionResult | null>,
    runId: string,
    ending: Ending,
  ): Promise<TransitionResult | null> {
    try {
      return await attempt;
    } catch (error) {
      this.#options.metrics.settleFailures.inc();
      const run = await this.#options.db
        .selectFrom('runs')
        .select('chat_id')
        .where('id', '=', runId)
        .executeTakeFirst()
        .catch(() => undefined);
      this.#options.logger.error(
        { err: error, runId, chatId: run?.chat_id, status: ending.status, code: ending.error?.code },
        'settling the run failed; the sweeper will settle it when its lease runs out',
      );
      return null;
    }
  }

  /** `running → waiting`, by its owner: the run pauses for a person and holds no worker or lease. */
  wait(options: {
    runId: string;
    epoch: number;
    waiting: RunWaiting;
    changes?: RunChanges;
    closeInterruptedStep?: string;
    /** The run's last sequence number, when the owner knows it. */
    lastSeq?: number;
    /** The owner's last events, not written yet: numbered from `lastSeq + 1` and written with the change. */
    tail?: readonly string[];
    /** The owner's last finished step, recorded with the change. */
    step?: FinishedStep;
  }) {
    return this.transition({
      runId: options.runId,
      to: RunStatus.waiting,
      from: [RunStatus.running],
      epoch: options.epoch,
      changes: { ...options.changes, waiting: JSON.stringify(options.waiting) },
      closeInterruptedStep: options.closeInterruptedStep,
      lastSeq: options.lastSeq,
      tail: options.tail,
      step: options.step,
    });
  }

  /**
   * `running → pending`, by its owner on shutdown (a release) or by the sweeper after the lease ran out (a
   * requeue): the open step is closed with `data-step-interrupted`, the epoch bump fences the old owner
   * out, and the queue hands the run to the next worker after commit.
   */
  handBack(options: {
    runId: string;
    epoch: number;
    leaseExpiredBefore?: Date;
    reason: string;
    /** A releasing owner's totals, with what its cut step spent, so the next owner's budget counts it. */
    changes?: RunChanges;
  }) {
    return this.transition({
      runId: options.runId,
      to: RunStatus.pending,
      from: [RunStatus.running],
      epoch: options.epoch,
      leaseExpiredBefore: options.leaseExpiredBefore,
      closeInterruptedStep: options.reason,
      changes: options.changes,
    });
  }
}

/** The whole spend an owner's ending sets (`spendChanges` in run-outcome.ts). */
interface Spend {
  usage: string | null;
  cost_usd: number | null;
  step_count: number;
}

/**
 * The row an owner's ending leaves: the row it claimed the run with (nobody else changes a running run's
 * columns but its stop request, which the one statement checks), with the ending's columns. Its times are
 * the server's, set by the statement as they are here.
 */
function endedRow(owner: RunRow, ending: Ending, spend: Spend): RunRow {
  const now = new Date();
  return {
    ...owner,
    status: ending.status,
    error: ending.error,
    usage: spend.usage === null ? null : (JSON.parse(spend.usage) as Record<string, number>),
    cost_usd: spend.cost_usd,
    step_count: spend.step_count,
    epoch: owner.epoch + 1,
    waiting: null,
    lease_owner: null,
    lease_expires_at: null,
    finished_at: now,
    updated_at: now,
  };
}

/** The `data-step-interrupted` reason for a step whose worker died. */
export const INTERRUPTED_BY_CRASH = 'crash';
/** The `data-step-interrupted` reason for a step whose worker shut down and handed the run back. */
export const INTERRUPTED_BY_SHUTDOWN = 'shutdown';

/** The `data-step-interrupted` reason for a step the budget cut; it is redone when the run continues. */
export const INTERRUPTED_BY_BUDGET = 'budget';

/** The statuses a stop ends a run from: the active ones and `queued`. */
export const STOPPABLE_STATUSES: readonly RunStatus[] = [...ACTIVE_RUN_STATUSES, RunStatus.queued];

export interface ClaimOptions {
  runId: string;
  owner: string;
  leaseExpiresAt: Date;
}

/** The claim as a transition request (a start's local claim is made by its insert: `RunService.begin`). */
function claimRequest(options: ClaimOptions): TransitionRequest {
  return {
    runId: options.runId,
    to: RunStatus.running,
    from: [RunStatus.pending],
    changes: {
      attempt: sql<number>`attempt + 1`,
      lease_owner: options.owner,
      lease_expires_at: options.leaseExpiresAt,
      started_at: sql<Date>`coalesce(started_at, now())`,
    },
  };
}

async function collectChunks(source: AsyncIterable<{ chunk: unknown }>): Promise<unknown[]> {
  const chunks: unknown[] = [];
  for await (const { chunk } of source) chunks.push(chunk);
  return chunks;
}

/** What shapes an owner's ending in one statement (`StatementShapes`): everything else is a bound value. */
interface EndingShape extends Shape {
  to: RunStatus;
  /** Whether the owner knows its last sequence number (else the statement reads it). */
  lastSeq: boolean;
  /** Whether a finished step is recorded with the ending. */
  step: boolean;
  /** Whether the run has an assistant message to finish. */
  message: boolean;
  /** Per listener, `1` when it looks something up for this status (`TransitionListener.lookup`). */
  lookups: string;
}

/** The values of an owner's ending in one statement, each as it is stored. */
interface EndingValues extends Record<string, unknown> {
  runId: string;
  chatId: string;
  workspaceId: string;
  /** The epoch the owner claimed the run under; `newEpoch` the one the ending leaves. */
  epoch: number;
  error: string | null;
  usage: string | null;
  costUsd: number | null;
  stepCount: number;
  newEpoch: number;
  finishedAt: Date | null;
  updatedAt: Date;
  events: string;
  lastSeq: number | null;
  step: number | null;
  stepParts: string | null;
  stepUsage: string | null;
  stepCostUsd: number | null;
  stepLastSeq: number | null;
  stepStartedAt: Date | null;
  stepFinishedAt: Date | null;
  messageId: string | null;
  parts: string;
}

/**
 * An owner's ending in one statement (`Lifecycle.#endInOneStatement` says what it does and when it declines).
 * Built once per shape, with placeholders for `v` (`StatementShapes`): it decides nothing by a value. The
 * listeners' look-ups are built from the shape's status and the run's workspace, as their contract says.
 */
function endingStatement(db: Db, shape: EndingShape, v: EndingValues, listeners: TransitionListener[]) {
  const withChange = db
    .with('changed', (cte) =>
      cte
        .updateTable('runs')
        .set({
          status: shape.to,
          error: v.error,
          usage: v.usage,
          cost_usd: v.costUsd,
          step_count: v.stepCount,
          epoch: v.newEpoch,
          waiting: null,
          lease_owner: null,
          lease_expires_at: null,
          finished_at: v.finishedAt,
          updated_at: v.updatedAt,
        })
        .where('id', '=', v.runId)
        .where('status', '=', RunStatus.running)
        .where('epoch', '=', v.epoch)
        .where('stop_requested_at', 'is', null)
        .returning('chat_id'),
    )
    // After the run's row, as in the transaction (decision 0008): the chat's newest version, locked.
    .with('chat', (cte) =>
      cte
        .selectFrom('chats')
        .select(sql<string>`xmin::text`.as('version'))
        .where('id', 'in', cte.selectFrom('changed').select('chat_id'))
        .forUpdate(),
    ) as unknown as QueryCreator<Database>;
  const statement = changeWrites(withChange, {
    runId: v.runId,
    events: v.events,
    lastSeq: shape.lastSeq ? v.lastSeq! : undefined,
    // Fenced out, the run has another owner, whose events these numbers may already have.
    onlyIf: sql<boolean>`exists (select from changed)`,
    step: shape.step
      ? {
          step: v.step!,
          parts: v.stepParts!,
          usage: v.stepUsage,
          costUsd: v.stepCostUsd,
          lastSeq: v.stepLastSeq!,
          startedAt: v.stepStartedAt!,
          finishedAt: v.stepFinishedAt!,
        }
      : undefined,
    messageId: shape.message ? v.messageId : null,
    to: shape.to,
    parts: v.parts,
  });
  const change: LookupChange = { status: shape.to, workspaceId: v.workspaceId };
  const lookups = listeners.flatMap((listener, index) =>
    shape.lookups[index] === '1' ? [listener.lookup!(change)!] : [],
  );
  const declined = sql.join(
    [
      sql`when not exists (select from changed) then outrun_fall_back('run')`,
      sql`when (select version from chat) is distinct from
        (select xmin::text from chats where id = ${v.chatId}) then outrun_fall_back('chat')`,
      sql`when exists (select from runs where chat_id = ${v.chatId} and status = ${RunStatus.queued})
        then outrun_fall_back('queued')`,
      ...lookups.map((lookup) => sql`when (${lookup}) is not null then outrun_fall_back('listener')`),
    ],
    sql` `,
  );
  return statement.selectNoFrom([
    sql<boolean>`case ${declined} else false end`.as('declined'),
    sql<number>`(select min(seq) from appended)`.as('first_seq'),
  ]);
}

/** What a status change writes besides the run's row (`changeWrites`), each value as it is stored. */
interface ChangeWrites {
  runId: string;
  /** The change's chunks, serialized, as `eventsArray` joins them: appended as the run's next events. */
  events: string;
  lastSeq?: number;
  /** Appends the events only under this condition (the one-statement ending: that its update matched). */
  onlyIf?: RawBuilder<boolean>;
  step?: StepValues;
  /** The run's assistant message, when its status (and, for an ending, its parts) changes. */
  messageId: string | null;
  to: RunStatus;
  /** The message's parts as JSON, for an ending. */
  parts?: string;
}

/** A finished step as its `run_steps` row (`stepValues`). */
interface StepValues {
  step: number;
  parts: string;
  usage: string | null;
  costUsd: number | null;
  lastSeq: number;
  startedAt: Date;
  finishedAt: Date;
}

function stepValues(step: FinishedStep): StepValues {
  return {
    step: step.step,
    parts: JSON.stringify(step.parts),
    usage: step.usage ? JSON.stringify(step.usage) : null,
    costUsd: step.costUsd,
    lastSeq: step.lastSeq,
    startedAt: step.startedAt,
    finishedAt: new Date(),
  };
}

/**
 * The `with` clauses of a status change's statement that write besides the run's row: its events
 * (`appended`, each `seq`), its last finished step (`recorded`) and its message (`message`). Shared by the
 * transaction's second statement and the one-statement ending, which builds it once per shape
 * (`StatementShapes`): so it decides its structure only by which writes are given and `to`, and passes every
 * value into the statement as it is. Typed as the events' clause alone, since the final select reads only that
 * one.
 */
function changeWrites(db: QueryCreator<Database>, writes: ChangeWrites) {
  const { runId, step, messageId, parts } = writes;
  const withEvents = db.with('appended', (cte) =>
    insertEvents(cte, runId, writes.events, writes.lastSeq, writes.onlyIf),
  );
  const recorded = step
    ? withEvents.with('recorded', (cte) =>
        cte
          .insertInto('run_steps')
          .values({
            run_id: runId,
            step: step.step,
            parts: step.parts,
            usage: step.usage,
            cost_usd: step.costUsd,
            last_seq: step.lastSeq,
            started_at: step.startedAt,
            finished_at: step.finishedAt,
          })
          // A step already recorded is kept.
          .onConflict((conflict) => conflict.columns(['run_id', 'step']).doNothing())
          .returning('run_id'),
      )
    : withEvents;
  const written = messageId
    ? (recorded as typeof withEvents).with('message', (cte) =>
        cte
          .updateTable('messages')
          .set({
            ...(parts !== undefined ? { parts } : {}),
            status: MESSAGE_STATUS[writes.to],
            updated_at: sql<Date>`now()`,
          })
          .where('id', '=', messageId)
          .returning('id'),
      )
    : recorded;
  return written as typeof withEvents;
}

/**
 * Adds what a step cut by a crash spent to its run's usage and cost, and records it for the workspace's daily
 * usage (`spend_outside_steps`), in the transaction that closes the step: its output chunks a token each, and
 * as its prompt the prompt of the run's last recorded step (the history only grows); for a run's first step,
 * whose prompt no step recorded, an estimate: the characters of the agent's instructions and of the chat's
 * messages up to the run's own, as stored, / 4 (the estimate `estimateTokens` makes). Returns the run's row
 * with the new totals.
 */
async function countCrashedStep(
  tx: Transaction<Database>,
  row: RunRow,
  outputTokens: number,
  price: ModelPrice | null | undefined,
): Promise<RunRow> {
  const instructions = (row.config as { instructions?: unknown } | null)?.instructions;
  const instructionsLength = typeof instructions === 'string' ? instructions.length : 0;
  const { rows } = await sql<RunRow>`
    with step as (
      select coalesce(
        (select (usage->>'inputTokens')::bigint from run_steps where run_id = ${row.id} order by step desc limit 1),
        (select ceil((coalesce(sum(length(parts::text)), 0) + ${instructionsLength}) / 4.0)::bigint
          from messages where chat_id = ${row.chat_id} and id < ${row.assistant_message_id ?? ''}),
        0) as input_tokens
    ),
    counted as (
      update runs set
        usage = jsonb_build_object(
          'inputTokens', coalesce((runs.usage->>'inputTokens')::bigint, 0) + step.input_tokens,
          'outputTokens', coalesce((runs.usage->>'outputTokens')::bigint, 0) + ${outputTokens}::bigint),
        cost_usd = case when ${price !== null && price !== undefined}
          then coalesce(runs.cost_usd, 0) + (step.input_tokens * ${price?.inputPerMillion ?? 0}::double precision
            + ${outputTokens} * ${price?.outputPerMillion ?? 0}::double precision) / 1000000
          else runs.cost_usd end
      from step
      where runs.id = ${row.id}
      returning runs.*, step.input_tokens
    ),
    recorded as (
      insert into spend_outside_steps (run_id, workspace_id, tokens, cost_usd, recorded_at)
      select id, workspace_id, input_tokens + ${outputTokens}::bigint,
        case when ${price !== null && price !== undefined}
          then (input_tokens * ${price?.inputPerMillion ?? 0}::double precision
            + ${outputTokens} * ${price?.outputPerMillion ?? 0}::double precision) / 1000000
        end,
        now()
      from counted
    )
    select * from counted`.execute(tx);
  const counted = rows[0];
  if (!counted) return row;
  const { input_tokens: _inputTokens, ...runRow } = counted as RunRow & { input_tokens: unknown };
  return runRow as RunRow;
}
