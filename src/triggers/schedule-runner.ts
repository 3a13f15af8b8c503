import { randomUUID } from 'node:crypto';
import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import { BusChannel, publishBestEffort, type Bus } from '../bus/bus.ts';
import { systemClock, type Clock } from '../clock.ts';
import { NotFoundError, OutrunError, RunAlreadyActiveError } from '../errors.ts';
import type { Metrics } from '../metrics.ts';
import { delayAfterPass, PassLoop, retryDelay } from '../pass-loop.ts';
import type { RunObject } from '../runs/run-object.ts';
import type { RunEngine } from '../runs/run-engine.ts';
import { RunStatus } from '../runs/run-status.ts';
import type { Db } from '../store/database.ts';
import { logPassFailure } from '../store/transient.ts';
import type { Database, ScheduleRow } from '../store/schema.ts';
import { inputParts, ScheduleMultitask, ScheduleResult, type ScheduleInput } from './schedule-service.ts';
import { nextCronTime } from './schedule-time.ts';

/**
 * The longest a runner sleeps. It wakes at the next due time it read and at once when this instance writes a
 * schedule; this bounds how late it finds a schedule written by another instance that then went away.
 */
const DEFAULT_POLL_INTERVAL_MS = 10_000;
/** Due schedules one pass fires; a full batch is followed at once by another pass. */
const DUE_BATCH = 50;
/**
 * Chats whose due schedules one pass fires at once: a slow fire (an interrupt waiting for its run to end)
 * holds up its own chat's next schedules only, not every other chat's.
 */
const FIRE_CONCURRENCY = 8;

export interface ScheduleRunnerOptions {
  db: Db;
  engine: Pick<RunEngine, 'startChatRun' | 'interrupt' | 'runs'>;
  logger: Logger;
  metrics?: Metrics;
  /** Where due times are read. @default the system clock */
  clock?: Clock;
  /** The longest the runner sleeps between passes. @default 10000 */
  pollIntervalMs?: number;
  /**
   * Where this runner tells the other instances' runners that a schedule was written here, and hears theirs
   * (`BusChannel.schedulesChanged`): a schedule written through one instance is found on time by every
   * instance, so it fires on time even if the one that wrote it goes away first. Without a bus (or when a
   * message is lost) the others find it within `pollIntervalMs`.
   */
  bus?: Bus;
  /** Names this instance on the bus (its own messages are not heard twice). @default a new id */
  instanceId?: string;
}

/**
 * An `enqueue` schedule's run from an earlier due time still waits in its chat's queue: this due time adds no
 * second one (the begin transaction rolls back), so a long-busy chat does not pile up one run per due time.
 */
class ScheduleRunStillQueuedError extends Error {
  constructor() {
    super("The schedule's earlier run is still queued.");
  }
}

/** Another instance fired this due time first (or is firing it): the begin transaction rolls back. */
class ScheduleClaimLostError extends Error {
  constructor() {
    super('The schedule was claimed by another runner.');
  }
}

type DueSchedule = ScheduleRow & {
  agent_id: string | null;
  chat_deleted_at: Date | null;
  owner_deleted_at: Date | null;
};

interface Pass {
  /** Due times this pass handled. */
  handled: number;
  /** How long to sleep before the next pass. */
  delayMs: number;
}

/**
 * Fires due schedules. Every instance runs one; they share the `schedules` table. A due time fires exactly
 * once: the run's own begin transaction claims the row (`FOR UPDATE SKIP LOCKED`, only while `next_run_at`
 * still holds the due time read) and advances `next_run_at` from now, so the run and the advance commit
 * together or not at all. A runner that lost the claim rolls its whole start back; a due time missed while
 * every instance was down fires once, and the next due time is the first one after now.
 *
 * A runner does not poll at a fixed rate: after a pass it sleeps until the earliest `next_run_at` of any
 * enabled schedule (at most `pollIntervalMs`), and `written()` — called after a schedule is written through
 * this instance — wakes it at once and, over the bus, every other instance's runner. So an idle instance with
 * no schedule due soon reads the table every `pollIntervalMs` (docs/decisions/0017-pollers-sleep-until-due.md).
 */
export class ScheduleRunner {
  readonly #options: ScheduleRunnerOptions;
  readonly #clock: Clock;
  readonly #pollIntervalMs: number;
  readonly #instanceId: string;
  readonly #loop = new PassLoop(() => this.#timedPass());
  #passes: Promise<unknown> = Promise.resolve();
  /** The subscription to other instances' schedule writes, once `start()` asked for it. */
  #subscription: Promise<(() => Promise<void>) | null> | null = null;

  constructor(options: ScheduleRunnerOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.#instanceId = options.instanceId ?? randomUUID();
  }

  /** Starts looking for due schedules, and listening for the schedules other instances write. */
  async start(): Promise<void> {
    this.#loop.start();
    const { bus, logger } = this.#options;
    this.#subscription ??= bus
      ? bus
          .subscribe(BusChannel.schedulesChanged, ({ from }) => {
            if (from !== this.#instanceId) this.nudge();
          })
          .catch((error: unknown) => {
            // Not a reason to refuse to start: the poll still finds other instances' schedules.
            logger.warn({ err: error }, "not hearing other instances' schedule writes; polling for them");
            return null;
          })
      : Promise.resolve(null);
    await this.#subscription;
  }

  /** Looks for due schedules now. */
  nudge(): void {
    this.#loop.nudge();
  }

  /**
   * A schedule was written through this instance (its due time may be sooner than any runner sleeps): looks
   * now, and tells the other instances' runners to look too (best effort), whether or not this one runs.
   */
  written(): void {
    this.nudge();
    const { bus, logger } = this.#options;
    if (!bus) return;
    const message = { from: this.#instanceId };
    void publishBestEffort({ bus, channel: BusChannel.schedulesChanged, message, logger });
  }

  /** Stops looking and listening, and waits for the pass in flight. */
  async stop(): Promise<void> {
    this.#loop.stop();
    const unsubscribe = await this.#subscription;
    this.#subscription = null;
    await unsubscribe?.();
    await this.#passes;
  }

  /**
   * One pass: fires every due schedule it can claim. Passes of one runner run one after another, so a pass
   * asked for after the clock moved always reads the moved clock. Returns how many due times it handled.
   */
  async tick(): Promise<number> {
    return (await this.#pass()).handled;
  }

  #pass(): Promise<Pass> {
    const pass = this.#passes.then(() => this.#tick());
    this.#passes = pass.catch(() => {});
    return pass;
  }

  /** A pass of the loop: fires what is due, returns how long to sleep. */
  async #timedPass(): Promise<number> {
    try {
      return (await this.#pass()).delayMs;
    } catch (error) {
      logPassFailure(this.#options.logger, error, 'firing schedules failed');
      return retryDelay(this.#pollIntervalMs);
    }
  }

  async #tick(): Promise<Pass> {
    const now = this.#clock.now();
    // A plain read finds candidates; the claim that counts is taken in each run's begin transaction.
    const due = await this.#options.db
      .selectFrom('schedules')
      .innerJoin('chats', 'chats.id', 'schedules.chat_id')
      .innerJoin('users', 'users.id', 'chats.owner_id')
      .selectAll('schedules')
      .select([
        'chats.agent_id',
        'chats.deleted_at as chat_deleted_at',
        'users.deleted_at as owner_deleted_at',
      ])
      .where('schedules.enabled', '=', true)
      .where('schedules.next_run_at', '<=', now)
      .orderBy('schedules.next_run_at')
      .limit(DUE_BATCH)
      .execute();
    // One lane per chat, its schedules fired in due order; up to FIRE_CONCURRENCY lanes at once.
    const lanes = new Map<string, DueSchedule[]>();
    for (const schedule of due as DueSchedule[]) {
      const lane = lanes.get(schedule.chat_id);
      if (lane) lane.push(schedule);
      else lanes.set(schedule.chat_id, [schedule]);
    }
    const waiting = [...lanes.values()];
    let handled = 0;
    const fireLanes = async () => {
      for (let lane = waiting.shift(); lane; lane = waiting.shift()) {
        for (const schedule of lane) if (await this.#fire(schedule, now)) handled += 1;
      }
    };
    const fired = await Promise.allSettled(Array.from({ length: FIRE_CONCURRENCY }, fireLanes));
    const failed = fired.find((outcome) => outcome.status === 'rejected');
    if (failed) throw failed.reason;
    // A full batch: more may be due.
    if (due.length === DUE_BATCH) return { handled, delayMs: 0 };
    const { next } = await this.#options.db
      .selectFrom('schedules')
      .select((eb) => eb.fn.min('next_run_at').as('next'))
      .where('enabled', '=', true)
      .executeTakeFirstOrThrow();
    const delayMs = delayAfterPass({
      next: next === null ? null : new Date(next),
      passBegan: now,
      now: this.#clock.now(),
      maxMs: this.#pollIntervalMs,
    });
    return { handled, delayMs };
  }

  /** Fires one due time of `schedule`; false when another runner had it or nothing could be recorded. */
  async #fire(schedule: DueSchedule, now: Date): Promise<boolean> {
    const { logger } = this.#options;
    const due = schedule.next_run_at!;
    const after = this.#advance(schedule, now);
    const chatDeleted = () =>
      this.#record(schedule, due, {
        ...after,
        enabled: false,
        next_run_at: null,
        last_result: ScheduleResult.chatDeleted,
      });
    if (schedule.chat_deleted_at) return chatDeleted();
    // Removing a user disables their schedules; one left enabled by an earlier version is disabled here.
    if (schedule.owner_deleted_at) {
      return this.#record(schedule, due, {
        ...after,
        enabled: false,
        next_run_at: null,
        last_result: ScheduleResult.ownerRemoved,
      });
    }
    const claim = async (tx: Transaction<Database>, run: RunObject) => {
      const claimed = await tx
        .selectFrom('schedules')
        .select('id')
        .where('id', '=', schedule.id)
        .where('enabled', '=', true)
        .where('next_run_at', '=', due)
        .forUpdate()
        .skipLocked()
        .executeTakeFirst();
      if (!claimed) throw new ScheduleClaimLostError();
      if (run.status === RunStatus.queued) {
        // The begin transaction holds the chat's row: queued runs cannot change under this read.
        const earlier = await tx
          .selectFrom('runs')
          .select('id')
          .where('chat_id', '=', schedule.chat_id)
          .where('schedule_id', '=', schedule.id)
          .where('status', '=', RunStatus.queued)
          .where('id', '!=', run.id)
          .executeTakeFirst();
        if (earlier) throw new ScheduleRunStillQueuedError();
      }
      await tx
        .updateTable('schedules')
        .set({ ...after, last_fired_at: now, last_run_id: run.id, last_result: ScheduleResult.fired })
        .where('id', '=', schedule.id)
        .execute();
    };
    const input = schedule.input as ScheduleInput;
    const start = (multitask: 'reject' | 'enqueue') =>
      this.#options.engine.startChatRun({
        workspaceId: schedule.workspace_id,
        userId: schedule.created_by,
        chatId: schedule.chat_id,
        agentId: schedule.agent_id,
        parts: inputParts(input),
        trigger: schedule.trigger,
        overrides: { multitask },
        parentRunId: schedule.parent_run_id,
        scheduleId: schedule.id,
        inTransaction: claim,
      });
    const skipped = () => this.#record(schedule, due, { ...after, last_result: ScheduleResult.skipped });
    try {
      try {
        await start(schedule.multitask === ScheduleMultitask.enqueue ? 'enqueue' : 'reject');
      } catch (error) {
        if (!(error instanceof RunAlreadyActiveError)) throw error;
        // Whoever advanced the row meanwhile owns this due time; the busy chat may be its own run.
        if (!(await this.#stillDue(schedule.id, due))) return false;
        if (schedule.multitask !== ScheduleMultitask.interrupt) return await skipped();
        // Runs queued behind the active one would take the chat first: skipped, nothing stopped.
        const activeRunId = String(error.details.runId);
        if ((await this.#options.engine.runs.listQueued(schedule.chat_id)).length > 0) return await skipped();
        // Stopped by id: a run another runner began for this due time is never the one interrupted.
        await this.#options.engine.interrupt(activeRunId);
        await start('reject');
      }
      this.#options.metrics?.scheduleFires.inc({ result: ScheduleResult.fired });
      return true;
    } catch (error) {
      if (error instanceof ScheduleClaimLostError) return false;
      if (error instanceof ScheduleRunStillQueuedError) return skipped();
      // After an interrupt, a queued run or a new request took the slot first.
      if (error instanceof RunAlreadyActiveError) return skipped();
      // The chat was deleted after this pass read it: its start declined (`RunService.begin`).
      if (error instanceof NotFoundError && error.code === 'chat_not_found') return chatDeleted();
      if (error instanceof OutrunError && error.status < 500) {
        // Refused for what the schedule asks (its input over the agent's context budget, the agent's model
        // gone, a quota): the workspace's state, not a fault of the server.
        logger.warn(
          { scheduleId: schedule.id, chatId: schedule.chat_id, code: error.code },
          `a schedule's run was refused: ${error.message}`,
        );
      } else {
        logger.error(
          { err: error, scheduleId: schedule.id, chatId: schedule.chat_id },
          'a schedule could not start its run',
        );
      }
      return this.#record(schedule, due, { ...after, last_result: ScheduleResult.failed }).catch(() => false);
    }
  }

  /** The row's next state once `due` is handled: a cron's first due time after now; a one-shot disabled. */
  #advance(
    schedule: ScheduleRow,
    now: Date,
  ): { next_run_at: Date | null; enabled: boolean; last_fired_at: Date } {
    if (!schedule.cron) return { next_run_at: null, enabled: false, last_fired_at: now };
    try {
      return {
        next_run_at: nextCronTime({ cron: schedule.cron, timeZone: schedule.timezone, after: now }),
        enabled: true,
        last_fired_at: now,
      };
    } catch {
      // Validated on write; a cron or zone that no longer passes (a zone this runtime does not know, a field
      // count not taken) disables the schedule rather than loop.
      return { next_run_at: null, enabled: false, last_fired_at: now };
    }
  }

  /** Records a due time that started no run, only if it is still this runner's to handle (compare and set). */
  async #record(
    schedule: ScheduleRow,
    due: Date,
    changes: {
      next_run_at: Date | null;
      enabled: boolean;
      last_fired_at: Date;
      last_result: string;
    },
  ): Promise<boolean> {
    const result = await this.#options.db
      .updateTable('schedules')
      .set(changes)
      .where('id', '=', schedule.id)
      .where('enabled', '=', true)
      .where('next_run_at', '=', due)
      .executeTakeFirst();
    const recorded = Number(result.numUpdatedRows) === 1;
    if (recorded) this.#options.metrics?.scheduleFires.inc({ result: changes.last_result });
    return recorded;
  }

  async #stillDue(scheduleId: string, due: Date): Promise<boolean> {
    const row = await this.#options.db
      .selectFrom('schedules')
      .select('id')
      .where('id', '=', scheduleId)
      .where('enabled', '=', true)
      .where('next_run_at', '=', due)
      .executeTakeFirst();
    return row !== undefined;
  }
}
