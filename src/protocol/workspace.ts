/** A workspace's quota and what it used (DESIGN §3, §4), shared by the server and its clients. */

/** A workspace's limits; a field left out is no limit. */
export interface WorkspaceQuota {
  /** Input plus output tokens of the workspace's steps finished in one UTC day. */
  tokensPerDay?: number;
  /** Cost in US dollars of the workspace's steps finished in one UTC day. */
  costUsdPerDay?: number;
  /** Runs the workspace may create in any 60 seconds. */
  runsPerMinute?: number;
}

/** What a workspace used against its quota: today (UTC) and in the last minute. */
export interface QuotaUsage {
  /**
   * Input plus output tokens spent since midnight UTC: finished steps, steps cut short (by their estimate)
   * and context summaries.
   */
  tokens: number;
  /** Cost in US dollars of the same. */
  costUsd: number;
  /** Runs created in the last 60 seconds. */
  runsLastMinute: number;
}

/** What is left of the daily quotas; null where the workspace has no such limit. */
export interface QuotaRemaining {
  tokens: number | null;
  costUsd: number | null;
}

/** `GET` and `PATCH /v1/workspaces/current/quota`: the quota, today's usage, what is left, when it resets. */
export interface QuotaReport {
  /** Null: the workspace has no limits. */
  quota: WorkspaceQuota | null;
  usage: QuotaUsage;
  remaining: QuotaRemaining;
  /** Seconds until the daily quotas reset (midnight UTC). */
  resetsInSeconds: number;
}
