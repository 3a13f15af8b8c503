import type { ColumnType, Insertable, Selectable, Updateable } from 'kysely';
import type { WorkspaceQuota } from '../protocol/workspace.ts';

/** Timestamps come back as `Date`; inserts may pass a `Date` or leave the column to its default. */
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
/** jsonb columns are written as JSON text and read back as parsed values. */
type Json<T> = ColumnType<T, string, string>;
type NullableJson<T> = ColumnType<T | null, string | null | undefined, string | null>;

export interface WorkspacesTable {
  id: string;
  name: string;
  /** Null: no quota. */
  quota: NullableJson<WorkspaceQuota>;
  created_at: Timestamp;
}

export interface UsersTable {
  id: string;
  workspace_id: string;
  email: string;
  role: 'owner' | 'admin' | 'member';
  created_at: Timestamp;
  deleted_at: NullableTimestamp;
}

export interface ApiKeysTable {
  id: string;
  user_id: string;
  hash: string;
  prefix: string;
  name: ColumnType<string, string | undefined, string>;
  /** Registered from `OUTRUN_ADMIN_KEY` (or generated at first start); revoked when the variable changes. */
  seeded: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: Timestamp;
  last_used_at: NullableTimestamp;
  revoked_at: NullableTimestamp;
}

/** Server-wide secrets shared by every instance on the database (the scoped-token signing key). */
export interface ServerSecretsTable {
  name: string;
  value: string;
  created_at: Timestamp;
}

export interface ChatsTable {
  id: string;
  workspace_id: string;
  owner_id: string;
  agent_id: ColumnType<string | null, string | null | undefined, string | null>;
  title: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  deleted_at: NullableTimestamp;
}

export interface AgentsTable {
  id: string;
  workspace_id: string;
  name: string;
  instructions: string | null;
  /** Null: the server's default model when a run starts. */
  model: string | null;
  model_options: Json<Record<string, unknown>>;
  tools: Json<{ name: string; needsApproval?: boolean }[]>;
  mcp_servers: Json<{ name: string; url: string; headers?: Record<string, string> }[]>;
  budget: Json<Record<string, unknown>>;
  multitask: ColumnType<string, string | undefined, string>;
  context: Json<Record<string, unknown>>;
  autostart: NullableJson<{ text: string }>;
  continuation: NullableJson<{ maxRuns: number }>;
  created_at: Timestamp;
  updated_at: Timestamp;
  archived_at: NullableTimestamp;
}

export interface MessagesTable {
  id: string;
  chat_id: string;
  workspace_id: string;
  role: 'user' | 'assistant' | 'system';
  parts: Json<unknown[]>;
  status: 'completed' | 'streaming' | 'queued' | 'error' | 'aborted';
  run_id: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface RunsTable {
  id: string;
  chat_id: string;
  workspace_id: string;
  created_by: string;
  trigger: string;
  status: string;
  error: NullableJson<{ code: string; message: string }>;
  step_count: ColumnType<number, number | undefined, number>;
  usage: NullableJson<Record<string, number>>;
  model: string;
  options: Json<Record<string, unknown>>;
  assistant_message_id: string | null;
  /** Executions so far: each claim by a worker adds one. */
  attempt: ColumnType<number, number | undefined, number>;
  /** Executions lost to a dead process (their lease ran out); `OUTRUN_MAX_ATTEMPTS` bounds these. */
  lost_executions: ColumnType<number, number | undefined, number>;
  /** The fencing token: bumped by every status change, so a writer holding an older epoch is fenced out. */
  epoch: ColumnType<number, number | undefined, number>;
  agent_id: string | null;
  parent_run_id: string | null;
  schedule_id: string | null;
  waiting: NullableJson<Record<string, unknown>>;
  cost_usd: number | null;
  /** The resolved configuration the run executes with (agent, model, tools, budget). */
  config: NullableJson<Record<string, unknown>>;
  metadata: NullableJson<Record<string, unknown>>;
  queued_at: NullableTimestamp;
  lease_owner: string | null;
  lease_expires_at: NullableTimestamp;
  stop_requested_at: NullableTimestamp;
  started_at: NullableTimestamp;
  finished_at: NullableTimestamp;
  /** When the run's events were compacted into `run_event_pages`; null while they are rows of `run_events`. */
  events_compacted_at: NullableTimestamp;
  /** When `OUTRUN_EVENT_RETENTION_DAYS` deleted the run's events (its stream then answers 410). */
  events_deleted_at: NullableTimestamp;
  /**
   * When the run's ending made a follow-up owed (`onExceeded: "continue"`); null once it began or was refused.
   * The sweeper starts a follow-up a dead process owed (migration 0019).
   */
  continuation_owed_at: NullableTimestamp;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** One row per finished step: the durable, append-only form of the assistant message while it streams. */
export interface RunStepsTable {
  run_id: string;
  step: number;
  parts: Json<unknown[]>;
  usage: NullableJson<Record<string, number>>;
  /** What the step cost in US dollars; null when the model has no price. */
  cost_usd: ColumnType<number | null, number | null | undefined, number | null>;
  /** Sequence number of the step's `finish-step` event: the projection is complete through it. */
  last_seq: number;
  started_at: Timestamp;
  finished_at: Timestamp;
}

export interface RunEventsTable {
  run_id: string;
  seq: number;
  chunk: Json<unknown>;
}

/** Consecutive events of a finished run, compressed (a format byte, then brotli; src/stream/event-pages.ts). */
export interface RunEventPagesTable {
  run_id: string;
  first_seq: number;
  last_seq: number;
  events: Buffer;
}

export interface WebhooksTable {
  id: string;
  workspace_id: string;
  url: string;
  /** The Standard Webhooks signing secret, `whsec_<base64>`. */
  secret: string;
  /** The secret the last rotation replaced: it signs beside `secret` until `previous_secret_expires_at`. */
  previous_secret: ColumnType<string | null, string | null | undefined, string | null>;
  previous_secret_expires_at: NullableTimestamp;
  events: Json<string[]>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: Timestamp;
}

/** What an execution spent outside its finished steps: a step it did not finish, its context summaries. */
export interface SpendOutsideStepsTable {
  run_id: string;
  workspace_id: string;
  /** Input plus output tokens (a cut step's as estimated while it streamed). */
  tokens: number;
  /** Null when the model has no price. */
  cost_usd: ColumnType<number | null, number | null | undefined, number | null>;
  recorded_at: Timestamp;
}

/** The outbox: one row per event to deliver to one webhook, written in the transaction of the change it reports. */
export interface WebhookDeliveriesTable {
  id: string;
  webhook_id: string;
  workspace_id: string;
  run_id: string | null;
  event: string;
  /** The exact JSON text that is signed and sent. */
  payload: ColumnType<unknown, string, string>;
  status: 'pending' | 'delivered' | 'failed';
  attempts: ColumnType<number, number | undefined, number>;
  next_attempt_at: Timestamp;
  last_status_code: number | null;
  last_error: string | null;
  created_at: Timestamp;
  delivered_at: NullableTimestamp;
}

export interface IdempotencyKeysTable {
  workspace_id: string;
  /** The caller the key belongs to: keys are per user, within the workspace. */
  user_id: string;
  key: string;
  request_hash: string;
  /** Null while the first request holds the key; its answer once it has one. */
  response: NullableJson<{ status: number; body: unknown }>;
  created_at: Timestamp;
}

/** A summary of a chat's older messages, made by context compaction and reused by later runs of the chat. */
export interface CompactionsTable {
  id: string;
  chat_id: string;
  run_id: string | null;
  /** The last message the summary covers. */
  upto_message_id: string;
  summary: string;
  tokens_before: number;
  tokens_after: number;
  created_at: Timestamp;
}

/** A cron or one-shot start of a chat's run (DESIGN §3); `next_run_at` is the due time a runner claims. */
export interface SchedulesTable {
  id: string;
  workspace_id: string;
  chat_id: string;
  created_by: string;
  cron: string | null;
  timezone: ColumnType<string, string | undefined, string>;
  at: NullableTimestamp;
  input: Json<{ parts: unknown[] }>;
  multitask: ColumnType<'skip' | 'enqueue' | 'interrupt', string | undefined, string>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  next_run_at: NullableTimestamp;
  last_fired_at: NullableTimestamp;
  last_run_id: ColumnType<string | null, string | null | undefined, string | null>;
  last_result: ColumnType<string | null, string | null | undefined, string | null>;
  trigger: ColumnType<'schedule' | 'continue', string | undefined, string>;
  parent_run_id: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: Timestamp;
}

export interface Database {
  workspaces: WorkspacesTable;
  users: UsersTable;
  api_keys: ApiKeysTable;
  agents: AgentsTable;
  chats: ChatsTable;
  messages: MessagesTable;
  runs: RunsTable;
  run_steps: RunStepsTable;
  run_events: RunEventsTable;
  run_event_pages: RunEventPagesTable;
  webhooks: WebhooksTable;
  webhook_deliveries: WebhookDeliveriesTable;
  spend_outside_steps: SpendOutsideStepsTable;
  idempotency_keys: IdempotencyKeysTable;
  server_secrets: ServerSecretsTable;
  compactions: CompactionsTable;
  schedules: SchedulesTable;
}

export type RunRow = Selectable<RunsTable>;
export type NewRun = Insertable<RunsTable>;
export type RunUpdate = Updateable<RunsTable>;
export type ChatRow = Selectable<ChatsTable>;
export type AgentRow = Selectable<AgentsTable>;
export type MessageRow = Selectable<MessagesTable>;
export type UserRow = Selectable<UsersTable>;
export type WorkspaceRow = Selectable<WorkspacesTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;
export type WebhookRow = Selectable<WebhooksTable>;
export type WebhookDeliveryRow = Selectable<WebhookDeliveriesTable>;
export type CompactionRow = Selectable<CompactionsTable>;
export type ScheduleRow = Selectable<SchedulesTable>;
