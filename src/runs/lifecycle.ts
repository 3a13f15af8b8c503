import { sql, type RawBuilder, type Transaction, type UpdateObject } from 'kysely';
import type { Logger } from 'pino';
import { FaultPoint, type Faults } from '../faults.ts';
import { MessageProjector } from '../protocol/message-projector.ts';
import { observeRunEnded, type Metrics } from '../metrics.ts';
import type { RunQueue } from '../queue/queue.ts';
import type { Db } from '../store/database.ts';
import type { Database, RunRow } from '../store/schema.ts';
import { retryTransient } from '../store/transient.ts';
import {
  insertEvents,
  numberSerialized,
  serializeChunk,
  type EventLog,
  type LogEvent,
} from '../stream/event-log.ts';
import { interruptedStepClosure } from '../stream/interrupted-step.ts';
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
  /** A terminal status's final message parts. Absent: projected from the run's log. */
  parts?: unknown[];
  /** The run's last sequence number, when the caller knows it in this transaction (saves reading it). */
  lastSeq?: number;
  /**
   * A finished step to record with the change (the owner's last, which then needs no statement of its own).
   * The run's totals are the caller's `changes`; a step already recorded is kept.
   */
  step?: FinishedStep;
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
export interface TransitionListener {
  lookup?: (change: { row: RunRow; run: RunObject }) => RawBuilder<unknown> | null;
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

  constructor(options: LifecycleOptions) {
    this.#options = options;
  }

  /**
   * Applies one transition in its own transaction, retried on transient database errors, then publishes.
   * Returns null when the run was not in a state the request allows (another change won the race).
   */
  async transition(request: TransitionRequest): Promise<TransitionResult | null> {
    const result = await retryTransient(
      () => this.#options.db.transaction().execute((tx) => this.transitionIn(tx, request)),
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
    const row = promotes
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
    if (!row) return null;

    const { log } = this.#options;
    const chunks = request.closeInterruptedStep
      ? interruptedStepClosure(await collectChunks(log.replay(row.id, tx)), request.closeInterruptedStep)
      : [];
    chunks.push(...(request.chunks ?? []));
    const run = toRunObject(row);
    chunks.push(runStatusChunk(run));
    // Numbered by the statement below, which reads the last sequence number itself unless the caller knows it.
    const data = chunks.map(serializeChunk);

    // The message changes with a terminal status, or when its status differs (not for pending ⇄ running).
    const messageChanges =
      terminal || request.from.some((from) => MESSAGE_STATUS[from] !== MESSAGE_STATUS[request.to]);
    const messageId = messageChanges ? row.assistant_message_id : null;
    const parts =
      messageId && terminal ? (request.parts ?? (await this.#projectFromLog(tx, row.id, chunks))) : undefined;
    // One statement appends the events, updates the message and, for an ending that freed the chat's slot,
    // finds the chat's oldest queued run: it runs after the chat's lock was taken, so it sees every run a
    // start queued before.
    const { step } = request;
    const withEvents = tx.with('appended', (db) => insertEvents(db, row.id, data, request.lastSeq));
    // The last finished step rides along (typed as `withEvents`: the final select does not read it).
    const appended = (
      step
        ? withEvents.with('recorded', (db) =>
            db
              .insertInto('run_steps')
              .values({
                run_id: row.id,
                step: step.step,
                parts: JSON.stringify(step.parts),
                usage: step.usage ? JSON.stringify(step.usage) : null,
                cost_usd: step.costUsd,
                last_seq: step.lastSeq,
                started_at: step.startedAt,
                finished_at: new Date(),
              })
              .onConflict((conflict) => conflict.columns(['run_id', 'step']).doNothing())
              .returning('run_id'),
          )
        : withEvents
    ) as typeof withEvents;
    const written = messageId
      ? appended.with('message', (db) =>
          db
            .updateTable('messages')
            .set({
              ...(parts ? { parts: JSON.stringify(parts) } : {}),
              status: MESSAGE_STATUS[request.to],
              updated_at: sql<Date>`now()`,
            })
            .where('id', '=', messageId)
            .returning('id'),
        )
      : appended;
    // From active statuses only, this run held the slot (the unique index allows no other), so it is free
    // without looking; a stop that may also end a queued run looks for an active one.
    const slotFree = request.from.every((status) => isActiveStatus(status));
    // The listeners' look-ups (the webhooks a terminal status reports to) ride in the same statement.
    const listeners = this.#options.listeners ?? [];
    const lookups = listeners.map((listener) => listener.lookup?.({ row, run }) ?? sql`null`);
    // (Typed as `appended`: the select reads neither table the statement writes.)
    const found = await (written as typeof appended)
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
          // The run stays pending; the sweeper hands it to the queue again.
          logger.warn(
            { err: error, runId: run.id },
            'handing the run to the queue failed; the sweeper retries',
          );
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
    changes?: RunChanges;
    /** The run's last sequence number, when the owner knows it (its writer's, all of it durable). */
    lastSeq?: number;
    /** The owner's last finished step, recorded with the ending. */
    step?: FinishedStep;
  }) {
    return this.#end({ ...options, from: [RunStatus.running], owned: true });
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
    step?: FinishedStep;
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
        step: options.step,
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
      step: options.step,
    });
  }

  /**
   * `running → pending`, by its owner on shutdown (a release) or by the sweeper after the lease ran out (a
   * requeue): the open step is closed with `data-step-interrupted`, the epoch bump fences the old owner
   * out, and the queue hands the run to the next worker after commit.
   */
  handBack(options: { runId: string; epoch: number; leaseExpiredBefore?: Date; reason: string }) {
    return this.transition({
      runId: options.runId,
      to: RunStatus.pending,
      from: [RunStatus.running],
      epoch: options.epoch,
      leaseExpiredBefore: options.leaseExpiredBefore,
      closeInterruptedStep: options.reason,
    });
  }
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
