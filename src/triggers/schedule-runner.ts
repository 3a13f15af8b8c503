import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.ts';
import { RunAlreadyActiveError } from '../errors.ts';
import type { Metrics } from '../metrics.ts';
import { delayAfterPass, PassLoop, retryDelay } from '../pass-loop.ts';
import type { RunObject } from '../runs/run-object.ts';
import type { RunEngine } from '../runs/run-engine.ts';
import { isTerminalStatus } from '../runs/run-status.ts';
import type { Db } from '../store/database.ts';
import type { Database, ScheduleRow } from '../store/schema.ts';
import { ScheduleMultitask, ScheduleResult, type ScheduleInput } from './schedule-service.ts';
import { nextCronTime } from './schedule-time.ts';

/**
 * The longest a runner sleeps. It wakes at the next due time it read and at once when this instance writes a
 * schedule; this bounds how late it finds a schedule written by another instance that then went away.
 */
const DEFAULT_POLL_INTERVAL_MS = 10_000;
/** Due schedules one pass fires; a full batch is followed at once by another pass. */
const DUE_BATCH = 50;
/** How long `multitask: "interrupt"` waits for the chat's active run to end. */
const DEFAULT_INTERRUPT_WAIT_MS = 10_000;
/** How often an interrupting fire re-reads the run it stopped. */
const INTERRUPT_POLL_MS = 100;

export interface ScheduleRunnerOptions {
  db: Db;
  engine: Pick<RunEngine, 'startChatRun' | 'stopRun' | 'runs'>;
  logger: Logger;
  metrics?: Metrics;
  /** Where due times are read. @default the system clock */
  clock?: Clock;
  /** The longest the runner sleeps between passes. @default 10000 */
  pollIntervalMs?: number;
  /** @default 10000 */
  interruptWaitMs?: number;
}

/** Another instance fired this due time first (or is firing it): the begin transaction rolls back. */
class ScheduleClaimLostError extends Error {
  constructor() {
    super('The schedule was claimed by another runner.');
  }
}

type DueSchedule = ScheduleRow & { agent_id: string | null; chat_deleted_at: Date | null };

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
 * enabled schedule (at most `pollIntervalMs`), and `nudge()` — called after this instance writes a schedule —
 * wakes it at once. So an idle instance with no schedule due soon reads the table every `pollIntervalMs`
 * (docs/decisions/0017-pollers-sleep-until-due.md).
 */
export class ScheduleRunner {
  readonly #options: ScheduleRunnerOptions;
  readonly #clock: Clock;
  readonly #pollIntervalMs: number;
  readonly #loop = new PassLoop(() => this.#timedPass());
  #passes: Promise<unknown> = Promise.resolve();

  constructor(options: ScheduleRunnerOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  }

  /** Starts looking for due schedules. */
  start(): void {
    this.#loop.start();
  }

  /** Looks for due schedules now (call after writing a schedule: its due time may be sooner than the sleep). */
  nudge(): void {
    this.#loop.nudge();
  }

  /** Stops looking and waits for the pass in flight. */
  async stop(): Promise<void> {
    this.#loop.stop();
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
      this.#options.logger.error({ err: error }, 'firing schedules failed');
      return retryDelay(this.#pollIntervalMs);
    }
  }

  async #tick(): Promise<Pass> {
    const now = this.#clock.now();
    // A plain read finds candidates; the claim that counts is taken in each run's begin transaction.
    const due = await this.#options.db
      .selectFrom('schedules')
      .innerJoin('chats', 'chats.id', 'schedules.chat_id')
      .selectAll('schedules')
      .select(['chats.agent_id', 'chats.deleted_at as chat_deleted_at'])
      .where('schedules.enabled', '=', true)
      .where('schedules.next_run_at', '<=', now)
      .orderBy('schedules.next_run_at')
      .limit(DUE_BATCH)
      .execute();
    let handled = 0;
    for (const schedule of due) {
      if (await this.#fire(schedule as DueSchedule, now)) handled += 1;
    }
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
    if (schedule.chat_deleted_at) {
      return this.#record(schedule, due, {
        ...after,
        enabled: false,
        next_run_at: null,
        last_result: ScheduleResult.chatDeleted,
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
        parts: 'text' in input ? [{ type: 'text', text: input.text }] : input.parts,
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
        // Stopped by id: a run another runner began for this due time is never the one interrupted.
        await this.#interrupt(String(error.details.runId));
        await start('reject');
      }
      this.#options.metrics?.scheduleFires.inc({ result: ScheduleResult.fired });
      return true;
    } catch (error) {
      if (error instanceof ScheduleClaimLostError) return false;
      // After an interrupt, a queued run or a new request took the slot first.
      if (error instanceof RunAlreadyActiveError) return skipped();
      logger.error(
        { err: error, scheduleId: schedule.id, chatId: schedule.chat_id },
        'a schedule could not start its run',
      );
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
      // Validated on write; a runtime that no longer knows the zone disables the schedule rather than loop.
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

  /** Stops the run and waits, up to `interruptWaitMs`, for it to end. */
  async #interrupt(runId: string): Promise<void> {
    const { engine } = this.#options;
    await engine.stopRun(runId);
    const deadline = Date.now() + (this.#options.interruptWaitMs ?? DEFAULT_INTERRUPT_WAIT_MS);
    while (Date.now() < deadline) {
      const run = await engine.runs.get(runId);
      if (!run || isTerminalStatus(run.status)) return;
      await new Promise((resolve) => setTimeout(resolve, INTERRUPT_POLL_MS));
    }
  }
}
