import type { Transaction } from 'kysely';
import type { ScheduleObject as WireScheduleObject } from '../protocol/schedule.ts';
import type { Caller } from '../auth/auth-service.ts';
import { systemClock, type Clock } from '../clock.ts';
import { NotFoundError } from '../errors.ts';
import { newId } from '../ids.ts';
import { assertFitsContext } from '../runs/run-context.ts';
import type { RunConfigResolver } from '../runs/run-engine.ts';
import type { Db } from '../store/database.ts';
import type { Database, ScheduleRow } from '../store/schema.ts';
import { assertTimeZone, invalidField, nextCronTime } from './schedule-time.ts';

/** What a schedule does when it comes due while its chat has an active run. */
export const ScheduleMultitask = {
  /** Start nothing; the due time is recorded as `skipped`. The default. */
  skip: 'skip',
  /** Queue the run behind the active one. */
  enqueue: 'enqueue',
  /** Stop the active run, wait for it to end, then start. */
  interrupt: 'interrupt',
} as const;
export type ScheduleMultitask = (typeof ScheduleMultitask)[keyof typeof ScheduleMultitask];

/** What a schedule's last due time did. */
export const ScheduleResult = {
  fired: 'fired',
  skipped: 'skipped',
  /** The run could not start (the chat's agent is gone, its model unavailable, …). */
  failed: 'failed',
  /** The chat was deleted; the schedule was disabled. */
  chatDeleted: 'chat_deleted',
  /** The chat's owner was removed from the workspace; the schedule was disabled. */
  ownerRemoved: 'owner_removed',
} as const;

/** The run input a schedule starts with: the same shapes as a run request's `input`. */
export type ScheduleInput = { text: string } | { parts: unknown[] };

/** The message parts a schedule's input starts its run with. */
export function inputParts(input: ScheduleInput): unknown[] {
  return 'text' in input ? [{ type: 'text', text: input.text }] : input.parts;
}

/** A schedule as the API shows it (`src/protocol/schedule.ts`). */
export type ScheduleObject = WireScheduleObject;

export interface CreateScheduleOptions {
  cron?: string;
  /** @default 'UTC' */
  timezone?: string;
  at?: string | Date;
  input: ScheduleInput;
  /** @default 'skip' */
  multitask?: ScheduleMultitask;
  /** @default true */
  enabled?: boolean;
}

export type UpdateScheduleOptions = Partial<Omit<CreateScheduleOptions, 'at'>> & { at?: string | Date };

export const toScheduleObject = (row: ScheduleRow): ScheduleObject => ({
  id: row.id,
  chatId: row.chat_id,
  cron: row.cron,
  timezone: row.timezone,
  at: row.at?.toISOString() ?? null,
  input: row.input as ScheduleInput,
  multitask: row.multitask,
  enabled: row.enabled,
  nextRunAt: row.next_run_at?.toISOString() ?? null,
  lastFiredAt: row.last_fired_at?.toISOString() ?? null,
  lastRunId: row.last_run_id,
  lastResult: row.last_result,
  trigger: row.trigger,
  parentRunId: row.parent_run_id,
  createdAt: row.created_at.toISOString(),
});

export interface ScheduleServiceOptions {
  db: Db;
  clock?: Clock;
  /** Called after every committed write that may have made a due time sooner. */
  onWrite?: () => void;
  /**
   * The configuration a run of a chat's agent would have: an input its context could never hold is refused
   * on create and update, not at every due time. Without it, inputs are not checked.
   */
  configs?: RunConfigResolver;
}

/**
 * Schedules in the database: create, read, change and delete them, scoped like chats (a schedule belongs to
 * its chat, and another user's is `schedule_not_found`). Every write computes `next_run_at` from the clock;
 * firing them is `ScheduleRunner`'s.
 */
export class ScheduleService {
  readonly #db: Db;
  readonly #clock: Clock;
  readonly #onWrite: () => void;
  readonly #configs: ScheduleServiceOptions['configs'];

  constructor(options: ScheduleServiceOptions) {
    this.#db = options.db;
    this.#clock = options.clock ?? systemClock;
    this.#onWrite = options.onWrite ?? (() => {});
    this.#configs = options.configs;
  }

  /** A new schedule on `chatId`, which the caller must own (else `chat_not_found`). Validates before writing. */
  async create(caller: Caller, chatId: string, options: CreateScheduleOptions): Promise<ScheduleObject> {
    const chat = await this.#ownChat(caller, chatId);
    await this.#assertInputFits(caller, chat.agent_id, options.input);
    const timing = this.#timing({ cron: options.cron, timezone: options.timezone, at: options.at });
    const enabled = options.enabled ?? true;
    const row = await this.#db
      .insertInto('schedules')
      .values({
        id: newId('schedule'),
        workspace_id: caller.workspaceId,
        chat_id: chatId,
        created_by: caller.userId,
        cron: timing.cron,
        timezone: timing.timezone,
        at: timing.at,
        input: JSON.stringify(options.input),
        multitask: options.multitask ?? ScheduleMultitask.skip,
        enabled,
        next_run_at: enabled ? timing.nextRunAt : null,
        created_at: this.#clock.now(),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    this.#onWrite();
    return toScheduleObject(row);
  }

  /**
   * A one-shot follow-up a run schedules for its own chat (`schedule_followup`): due `inSeconds` from now,
   * it starts a run with trigger `continue` whose parent is `parentRunId` and whose user message is `note`.
   */
  async createFollowup(options: {
    workspaceId: string;
    chatId: string;
    userId: string;
    parentRunId: string;
    inSeconds: number;
    note: string;
  }): Promise<ScheduleObject> {
    const at = new Date(this.#clock.now().getTime() + options.inSeconds * 1000);
    const row = await this.#db
      .insertInto('schedules')
      .values({
        id: newId('schedule'),
        workspace_id: options.workspaceId,
        chat_id: options.chatId,
        created_by: options.userId,
        at,
        input: JSON.stringify({ text: options.note }),
        // A follow-up waits its turn rather than being lost to a busy chat.
        multitask: ScheduleMultitask.enqueue,
        next_run_at: at,
        trigger: 'continue',
        parent_run_id: options.parentRunId,
        created_at: this.#clock.now(),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    this.#onWrite();
    return toScheduleObject(row);
  }

  /** The chat's schedules, oldest first. */
  async list(caller: Caller, chatId: string): Promise<{ items: ScheduleObject[] }> {
    await this.#ownChat(caller, chatId);
    const rows = await this.#db
      .selectFrom('schedules')
      .selectAll()
      .where('chat_id', '=', chatId)
      .orderBy('id')
      .limit(LIST_LIMIT)
      .execute();
    return { items: rows.map(toScheduleObject) };
  }

  async get(caller: Caller, scheduleId: string): Promise<ScheduleObject> {
    return toScheduleObject(await this.#ownSchedule(caller, scheduleId));
  }

  /**
   * Changes a schedule. Setting `cron` replaces an `at` and the other way round; changing the timing or
   * enabling a schedule computes its next due time from now (a due time missed while disabled never fires).
   */
  async update(caller: Caller, scheduleId: string, patch: UpdateScheduleOptions): Promise<ScheduleObject> {
    if (patch.input) {
      // Outside the transaction: the agent's configuration is read on another connection (PGlite has one).
      const schedule = await this.#ownSchedule(caller, scheduleId);
      const chat = await this.#ownChat(caller, schedule.chat_id);
      await this.#assertInputFits(caller, chat.agent_id, patch.input);
    }
    // The row is read locked: a due time fired meanwhile (its claim locks the row too) is seen advanced, never
    // written back as due again.
    const updated = await this.#db.transaction().execute(async (tx) => {
      const row = await this.#ownSchedule(caller, scheduleId, tx);
      const retimed = patch.cron !== undefined || patch.at !== undefined || patch.timezone !== undefined;
      const enabled = patch.enabled ?? row.enabled;
      let timing = { cron: row.cron, timezone: row.timezone, at: row.at, nextRunAt: row.next_run_at };
      if (retimed || (enabled && !row.enabled)) {
        const cron = patch.cron ?? (patch.at !== undefined ? undefined : (row.cron ?? undefined));
        const at = patch.at ?? (patch.cron !== undefined ? undefined : (row.at ?? undefined));
        timing = this.#timing({ cron, at, timezone: patch.timezone ?? row.timezone });
      }
      return tx
        .updateTable('schedules')
        .set({
          cron: timing.cron,
          timezone: timing.timezone,
          at: timing.at,
          input: patch.input ? JSON.stringify(patch.input) : JSON.stringify(row.input),
          multitask: patch.multitask ?? row.multitask,
          enabled,
          next_run_at: enabled ? timing.nextRunAt : null,
        })
        .where('id', '=', scheduleId)
        .returningAll()
        .executeTakeFirstOrThrow();
    });
    this.#onWrite();
    return toScheduleObject(updated);
  }

  async delete(caller: Caller, scheduleId: string): Promise<void> {
    await this.#ownSchedule(caller, scheduleId);
    await this.#db.deleteFrom('schedules').where('id', '=', scheduleId).execute();
  }

  /** Checks `cron`/`timezone`/`at` (exactly one of cron and at; a known zone; an `at` in the future). */
  #timing(options: { cron?: string; timezone?: string; at?: string | Date }): {
    cron: string | null;
    timezone: string;
    at: Date | null;
    nextRunAt: Date;
  } {
    const timezone = options.timezone ?? 'UTC';
    if (options.cron !== undefined && options.at !== undefined) {
      throw invalidField('cron', 'give either cron or at, not both');
    }
    if (options.cron === undefined && options.at === undefined) {
      throw invalidField('cron', 'give either cron (repeating) or at (once)');
    }
    assertTimeZone(timezone);
    const now = this.#clock.now();
    if (options.cron !== undefined) {
      return {
        cron: options.cron,
        timezone,
        at: null,
        nextRunAt: nextCronTime({ cron: options.cron, timeZone: timezone, after: now }),
      };
    }
    const at = new Date(options.at!);
    if (Number.isNaN(at.getTime())) throw invalidField('at', 'is not a date-time');
    if (at.getTime() <= now.getTime()) throw invalidField('at', 'is in the past');
    return { cron: null, timezone, at, nextRunAt: at };
  }

  /**
   * Refuses an input that, with the instructions and built-in tools of the chat's agent, is over its context
   * budget: every due time would be refused (`400 invalid_request` on `input`, as a start is). The agent can
   * still change after.
   */
  async #assertInputFits(caller: Caller, agentId: string | null, input: ScheduleInput): Promise<void> {
    if (!this.#configs) return;
    const config = await this.#configs.runConfig({ workspaceId: caller.workspaceId, agentId });
    assertFitsContext(config, inputParts(input), await this.#configs.builtInToolsTokens(config));
  }

  async #ownChat(
    caller: Caller,
    chatId: string,
    tx?: Transaction<Database>,
  ): Promise<{ agent_id: string | null }> {
    const chat = await (tx ?? this.#db)
      .selectFrom('chats')
      .select('agent_id')
      .where('id', '=', chatId)
      .where('workspace_id', '=', caller.workspaceId)
      .where('owner_id', '=', caller.userId)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    if (!chat) throw new NotFoundError('chat', chatId);
    return chat;
  }

  /** The caller's schedule; read in `tx`, its row is locked until `tx` ends. */
  async #ownSchedule(caller: Caller, scheduleId: string, tx?: Transaction<Database>): Promise<ScheduleRow> {
    let query = (tx ?? this.#db)
      .selectFrom('schedules')
      .innerJoin('chats', 'chats.id', 'schedules.chat_id')
      .selectAll('schedules')
      .where('schedules.id', '=', scheduleId)
      .where('chats.workspace_id', '=', caller.workspaceId)
      .where('chats.owner_id', '=', caller.userId)
      .where('chats.deleted_at', 'is', null);
    if (tx) query = query.forUpdate('schedules');
    const row = await query.executeTakeFirst();
    if (!row) throw new NotFoundError('schedule', scheduleId);
    return row;
  }
}

/** Schedules one list answers; a chat with more is unusual enough not to page. */
const LIST_LIMIT = 500;
