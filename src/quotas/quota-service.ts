import { sql, type Transaction } from 'kysely';
import { z } from 'zod';
import { systemClock, type Clock } from '../clock.ts';
import { roundUsd } from '../agent/prices.ts';
import { NotFoundError, QuotaExceededError } from '../errors.ts';
import type { Db } from '../store/database.ts';
import type { QuotaRemaining, QuotaUsage, WorkspaceQuota } from '../protocol/workspace.ts';
import type { Database } from '../store/schema.ts';

/** `workspaces.quota` as the API accepts it: every field optional, positive, unknown fields rejected. */
export const WorkspaceQuotaSchema = z
  .object({
    tokensPerDay: z.int().positive().optional(),
    costUsdPerDay: z.number().positive().finite().optional(),
    runsPerMinute: z.int().positive().optional(),
  })
  .strict();

/**
 * How long the start path reuses a workspace's quota setting it read (ms): a start and its run read it once
 * instead of twice per run. A change through this process applies at once; one made through another process
 * applies here within this long. Usage (tokens, cost, runs) is never cached.
 */
export const QUOTA_SETTING_CACHE_MS = 1_000;

/** The window `runsPerMinute` counts runs in. */
export const RUNS_WINDOW_MS = 60_000;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Workspaces whose quota setting is cached at most (expired entries are dropped first when full). */
const SETTINGS_CACHED_AT_MOST = 10_000;

/**
 * The advisory lock (`pg_advisory_xact_lock(int, int)` with the workspace's `hashtext`) that orders the
 * `runsPerMinute` checks of one workspace's starts: each counts its window after the one before committed.
 */
const RUNS_PER_MINUTE_GATE = 0x6f72_7132; // 'orq2'

/**
 * Checks, inside the transaction that begins a run (whose row it sees), that the run still fits the
 * workspace's `runsPerMinute`; throws `QuotaExceededError` (the transaction then writes nothing) when not.
 */
export type StartGuard = (tx: Transaction<Database>) => Promise<void>;

/**
 * What is left of the daily quotas for one execution of a run: the quota less the workspace's recorded usage
 * when the execution began (or last refreshed), less what this process's executions in the workspace have
 * spent since and had not recorded then (its own included). So runs executing at the same time in one
 * process share what is left instead of each getting all of it. Runs executing in other processes are seen
 * once their steps are recorded, at the next `refresh`.
 */
export interface DailyAllowance extends QuotaRemaining {
  /** Tokens and cost counted against the allowance: this process's executions' spend since it was read. */
  spentSince(): { tokens: number; costUsd: number };
  /** Adds to what the caller's execution spent (a step's estimate as it streams, then the reported usage). */
  add(tokens: number, costUsd: number): void;
  /** Part of what the caller's execution spent is now in `run_steps`, where the next allowance reads it. */
  recorded(tokens: number, costUsd: number): void;
  /** The caller's execution is over. */
  close(): void;
  /**
   * Reads the day's recorded usage again, so that what other processes recorded since counts (a run reads it
   * before each model call after its first).
   */
  refresh(): Promise<void>;
}

/** The allowance of a workspace without daily quotas: nothing to count. */
const UNLIMITED: DailyAllowance = {
  tokens: null,
  costUsd: null,
  spentSince: () => ({ tokens: 0, costUsd: 0 }),
  add: () => {},
  recorded: () => {},
  close: () => {},
  refresh: async () => {},
};

/** Spend in tokens and US dollars. */
interface Spent {
  tokens: number;
  costUsd: number;
}

/** This process's spend in one workspace while any of its executions there is open. */
interface WorkspaceSpend extends Spent {
  /** Each open execution's spend that is not in `run_steps` yet. */
  unrecorded: Set<Spent>;
}

/**
 * Workspace quotas (DESIGN §3, §4): daily tokens and cost summed from the workspace's finished steps
 * (`run_steps`) and what runs spent outside them (`spend_outside_steps`: unfinished steps, context
 * summaries), and runs created per minute. Reads only; the start path calls `assertCanStart` before it writes anything.
 */
export class QuotaService {
  readonly #db: Db;
  readonly #clock: Clock;
  /** Quota settings the start path read lately, by workspace (see QUOTA_SETTING_CACHE_MS). */
  readonly #settings = new Map<string, { quota: WorkspaceQuota | null; until: number }>();
  /**
   * Reads of a setting under way, by workspace: starts that miss the cache together share one read instead of
   * each making its own (under a flood of starts every start in the read's round trip would miss, and each
   * would wait for a pooled connection to read the same row).
   */
  readonly #reading = new Map<string, Promise<WorkspaceQuota | null>>();
  /** Bumped by every `set`: a read that began before a change does not cache what it read. */
  #changes = 0;
  /**
   * What this process's executions spent, by workspace with a daily quota and an execution open: running
   * totals that only grow; an allowance counts from where they stood when it was read.
   */
  readonly #spentHere = new Map<string, WorkspaceSpend>();

  constructor(options: {
    db: Db;
    /** Where "today" and "the last minute" are read. @default the system clock */
    clock?: Clock;
  }) {
    this.#db = options.db;
    this.#clock = options.clock ?? systemClock;
  }

  /** The workspace's quota; null when it has none. Throws `NotFoundError` for an unknown workspace. */
  async get(workspaceId: string): Promise<WorkspaceQuota | null> {
    const row = await this.#db
      .selectFrom('workspaces')
      .select('quota')
      .where('id', '=', workspaceId)
      .executeTakeFirst();
    if (!row) throw new NotFoundError('workspace', workspaceId);
    return normalize(row.quota);
  }

  /** Replaces the workspace's quota whole; null (or `{}`) removes every limit. */
  async set(workspaceId: string, quota: WorkspaceQuota | null): Promise<WorkspaceQuota | null> {
    const value = normalize(quota === null ? null : WorkspaceQuotaSchema.parse(quota));
    const result = await this.#db
      .updateTable('workspaces')
      .set({ quota: value === null ? null : JSON.stringify(value) })
      .where('id', '=', workspaceId)
      .executeTakeFirst();
    if (result.numUpdatedRows === 0n) throw new NotFoundError('workspace', workspaceId);
    this.#changes += 1;
    // A start from now on reads the new setting, not one cached or being read from before it.
    this.#settings.delete(workspaceId);
    this.#reading.delete(workspaceId);
    return value;
  }

  /** Tokens and cost of the workspace's steps finished today (UTC), and its runs of the last minute. */
  async usage(workspaceId: string): Promise<QuotaUsage> {
    const [daily, runsLastMinute] = await Promise.all([
      this.#dailyUsage(workspaceId),
      this.#runsSince(workspaceId, new Date(this.#clock.now().getTime() - RUNS_WINDOW_MS)),
    ]);
    return { ...daily, runsLastMinute };
  }

  /**
   * Throws `QuotaExceededError` when the workspace may not start a run now: its daily tokens or cost are
   * used up (retry at midnight UTC), or it created `runsPerMinute` runs in the last 60 s (retry when the
   * oldest of them leaves the window). Writes nothing.
   *
   * With a `runsPerMinute`, returns the guard the start must also run in its transaction: this check reads
   * before the start writes, so concurrent starts could all pass it; the guard counts again under a lock
   * per workspace, with the run begun, so that a burst never begins more runs than the quota allows.
   */
  async assertCanStart(workspaceId: string): Promise<StartGuard | null> {
    const quota = await this.#setting(workspaceId);
    if (!quota) return null;
    const now = this.#clock.now();
    if (quota.runsPerMinute !== undefined) {
      // The `runsPerMinute`-th newest run of the window: once it is older than a minute, a start fits again.
      const row = await this.#db
        .selectFrom('runs')
        .select('created_at')
        .where('workspace_id', '=', workspaceId)
        .where('created_at', '>', new Date(now.getTime() - RUNS_WINDOW_MS))
        .orderBy('created_at', 'desc')
        .offset(quota.runsPerMinute - 1)
        .limit(1)
        .executeTakeFirst();
      if (row) {
        const leavesAt = row.created_at.getTime() + RUNS_WINDOW_MS;
        throw new QuotaExceededError({
          quota: 'runsPerMinute',
          limit: quota.runsPerMinute,
          used: await this.#runsSince(workspaceId, new Date(now.getTime() - RUNS_WINDOW_MS)),
          retryAfterSeconds: Math.max(1, Math.ceil((leavesAt - now.getTime()) / 1000)),
        });
      }
    }
    const limit = quota.runsPerMinute;
    const guard: StartGuard | null =
      limit === undefined ? null : (tx) => this.#assertRunFits(tx, workspaceId, limit);
    if (!hasDailyLimit(quota)) return guard;
    const daily = await this.#dailyUsage(workspaceId);
    const retryAfterSeconds = secondsToNextUtcDay(now);
    if (quota.tokensPerDay !== undefined && daily.tokens >= quota.tokensPerDay) {
      throw new QuotaExceededError({
        quota: 'tokensPerDay',
        limit: quota.tokensPerDay,
        used: daily.tokens,
        retryAfterSeconds,
      });
    }
    if (quota.costUsdPerDay !== undefined && daily.costUsd >= quota.costUsdPerDay) {
      throw new QuotaExceededError({
        quota: 'costUsdPerDay',
        limit: quota.costUsdPerDay,
        used: daily.costUsd,
        retryAfterSeconds,
      });
    }
    return guard;
  }

  /** `StartGuard` for `runsPerMinute`: the window, counted with the begun run, holds at most `limit`. */
  async #assertRunFits(tx: Transaction<Database>, workspaceId: string, limit: number): Promise<void> {
    await sql`select pg_advisory_xact_lock(${RUNS_PER_MINUTE_GATE}::int, hashtext(${workspaceId}))`.execute(
      tx,
    );
    const now = this.#clock.now();
    const windowStart = new Date(now.getTime() - RUNS_WINDOW_MS);
    // The newest run past the quota, counting the begun one: the other runs fill the window without it.
    const over = await tx
      .selectFrom('runs')
      .select('created_at')
      .where('workspace_id', '=', workspaceId)
      .where('created_at', '>', windowStart)
      .orderBy('created_at', 'desc')
      .offset(limit)
      .limit(1)
      .executeTakeFirst();
    if (!over) return;
    throw new QuotaExceededError({
      quota: 'runsPerMinute',
      limit,
      used: limit,
      retryAfterSeconds: Math.max(
        1,
        Math.ceil((over.created_at.getTime() + RUNS_WINDOW_MS - now.getTime()) / 1000),
      ),
    });
  }

  /**
   * What is left today of the workspace's daily token and cost quotas (never below 0); null for a quota
   * the workspace does not have. A run's budget check takes the smaller of this and its own budget.
   */
  async remaining(workspaceId: string): Promise<QuotaRemaining> {
    const quota = await this.#setting(workspaceId);
    if (!hasDailyLimit(quota)) return { tokens: null, costUsd: null };
    const daily = await this.#dailyUsage(workspaceId);
    return {
      tokens: quota.tokensPerDay === undefined ? null : Math.max(0, quota.tokensPerDay - daily.tokens),
      costUsd: quota.costUsdPerDay === undefined ? null : Math.max(0, quota.costUsdPerDay - daily.costUsd),
    };
  }

  /**
   * What is left of the daily quotas for an execution about to begin, shared with the workspace's other
   * executions in this process (`DailyAllowance`).
   */
  async allowance(workspaceId: string): Promise<DailyAllowance> {
    const quota = await this.#setting(workspaceId);
    if (!hasDailyLimit(quota)) return UNLIMITED;
    let spentHere = this.#spentHere.get(workspaceId);
    if (!spentHere) {
      spentHere = { tokens: 0, costUsd: 0, unrecorded: new Set() };
      this.#spentHere.set(workspaceId, spentHere);
    }
    const totals = spentHere;
    // Counted from before the read, less what the read will not see (the open executions' spend not yet
    // recorded, its own included): a step recorded during the read may count twice, never not at all.
    const markNow = () => {
      const mark = { tokens: totals.tokens, costUsd: totals.costUsd };
      for (const open of totals.unrecorded) {
        mark.tokens -= open.tokens;
        mark.costUsd -= open.costUsd;
      }
      return mark;
    };
    let mark = markNow();
    const mine: Spent = { tokens: 0, costUsd: 0 };
    totals.unrecorded.add(mine);
    const close = () => {
      totals.unrecorded.delete(mine);
      if (totals.unrecorded.size === 0 && this.#spentHere.get(workspaceId) === totals) {
        this.#spentHere.delete(workspaceId);
      }
    };
    let remaining: QuotaRemaining;
    try {
      remaining = await this.remaining(workspaceId);
    } catch (error) {
      close();
      throw error;
    }
    const allowance: DailyAllowance = {
      ...remaining,
      spentSince: () => ({ tokens: totals.tokens - mark.tokens, costUsd: totals.costUsd - mark.costUsd }),
      add: (tokens, costUsd) => {
        totals.tokens += tokens;
        totals.costUsd += costUsd;
        mine.tokens += tokens;
        mine.costUsd += costUsd;
      },
      recorded: (tokens, costUsd) => {
        mine.tokens -= tokens;
        mine.costUsd -= costUsd;
      },
      close,
      refresh: async () => {
        const next = markNow();
        const latest = await this.remaining(workspaceId);
        mark = next;
        allowance.tokens = latest.tokens;
        allowance.costUsd = latest.costUsd;
      },
    };
    return allowance;
  }

  /** Seconds until the daily quotas reset (midnight UTC). */
  secondsToReset(): number {
    return secondsToNextUtcDay(this.#clock.now());
  }

  /**
   * The workspace's quota as `get` reads it, reused for QUOTA_SETTING_CACHE_MS (monotonic time); callers that
   * miss the cache while a read is under way share it.
   */
  #setting(workspaceId: string): Promise<WorkspaceQuota | null> {
    const cached = this.#settings.get(workspaceId);
    if (cached && cached.until > performance.now()) return Promise.resolve(cached.quota);
    const pending = this.#reading.get(workspaceId);
    if (pending) return pending;
    const reading: Promise<WorkspaceQuota | null> = this.#read(workspaceId).finally(() => {
      // A `set` meanwhile may have put a later read in its place.
      if (this.#reading.get(workspaceId) === reading) this.#reading.delete(workspaceId);
    });
    this.#reading.set(workspaceId, reading);
    return reading;
  }

  async #read(workspaceId: string): Promise<WorkspaceQuota | null> {
    const changes = this.#changes;
    const quota = await this.get(workspaceId);
    if (changes !== this.#changes) return quota;
    const now = performance.now();
    if (this.#settings.size >= SETTINGS_CACHED_AT_MOST) {
      for (const [id, entry] of this.#settings) if (entry.until <= now) this.#settings.delete(id);
      if (this.#settings.size >= SETTINGS_CACHED_AT_MOST) this.#settings.clear();
    }
    this.#settings.set(workspaceId, { quota, until: now + QUOTA_SETTING_CACHE_MS });
    return quota;
  }

  /** Today's (UTC) tokens and cost: the finished steps', and what runs spent outside them. */
  async #dailyUsage(workspaceId: string): Promise<{ tokens: number; costUsd: number }> {
    const since = startOfUtcDay(this.#clock.now());
    const { rows } = await sql<{ tokens: string; costUsd: string }>`
      with finished as (
        select coalesce(sum(coalesce((s.usage->>'inputTokens')::bigint, 0)
                          + coalesce((s.usage->>'outputTokens')::bigint, 0)), 0) as tokens,
               coalesce(sum(s.cost_usd), 0) as cost_usd
          from run_steps s join runs r on r.id = s.run_id
         where r.workspace_id = ${workspaceId} and s.finished_at >= ${since}
      ), outside as (
        select coalesce(sum(tokens), 0) as tokens, coalesce(sum(cost_usd), 0) as cost_usd
          from spend_outside_steps
         where workspace_id = ${workspaceId} and recorded_at >= ${since}
      )
      select finished.tokens + outside.tokens as "tokens", finished.cost_usd + outside.cost_usd as "costUsd"
        from finished, outside`.execute(this.#db);
    const row = rows[0]!;
    return { tokens: Number(row.tokens), costUsd: roundUsd(Number(row.costUsd)) };
  }

  async #runsSince(workspaceId: string, since: Date): Promise<number> {
    const row = await this.#db
      .selectFrom('runs')
      .select((eb) => eb.fn.countAll<string>().as('count'))
      .where('workspace_id', '=', workspaceId)
      .where('created_at', '>', since)
      .executeTakeFirstOrThrow();
    return Number(row.count);
  }
}

/** Midnight UTC of `now`'s day. */
export function startOfUtcDay(now: Date): Date {
  return new Date(Math.floor(now.getTime() / DAY_MS) * DAY_MS);
}

/** Whole seconds from `now` to the next midnight UTC, at least 1. */
export function secondsToNextUtcDay(now: Date): number {
  const next = startOfUtcDay(now).getTime() + DAY_MS;
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}

/** Whether the quota limits daily tokens or cost (what executions are held to while they run). */
function hasDailyLimit(quota: WorkspaceQuota | null): quota is WorkspaceQuota {
  return quota !== null && (quota.tokensPerDay !== undefined || quota.costUsdPerDay !== undefined);
}

/** `{}` and null both mean no quota. */
function normalize(quota: WorkspaceQuota | null | undefined): WorkspaceQuota | null {
  if (!quota) return null;
  const entries = Object.entries(quota).filter(([, value]) => typeof value === 'number');
  return entries.length === 0 ? null : (Object.fromEntries(entries) as WorkspaceQuota);
}
