import type { UIMessage } from 'ai';
import type { RunObject, RunTrigger, RunUsage } from './run.ts';
import type { WorkspaceQuota } from './workspace.ts';

/**
 * The HTTP API's JSON shapes (DESIGN §4) besides the run itself: chats, messages, steps, pages, errors,
 * the caller, and what a run starts with. Types only; shared by the server, the client and the web app.
 */

/** A part of a message, in the AI SDK `UIMessage` part shapes (text, tool parts, step boundaries, …). */
export type MessagePart = UIMessage['parts'][number];

/** A chat as the API shows it. */
export interface Chat {
  /** The chat's agent; null: the workspace default agent. */
  agentId: string | null;
  id: string;
  title: string;
  createdAt: string;
  updatedAt: string;
}

/** The statuses of a stored message. */
export type MessageStatus = 'completed' | 'streaming' | 'queued' | 'error' | 'aborted';

/** A message as the API shows it (DESIGN §4). */
export interface Message {
  id: string;
  role: 'user' | 'assistant' | 'system';
  parts: MessagePart[];
  status: MessageStatus;
  runId: string | null;
  createdAt: string;
  /**
   * For a message still streaming: the run's stream sequence number its parts are complete through.
   * Follow the run with `after: streamSeq` to continue exactly where this snapshot ends. Null once final.
   */
  streamSeq: number | null;
}

/** One finished step of a run, as recorded when it finished. */
export interface RunStep {
  /** 1-based step number. */
  step: number;
  parts: MessagePart[];
  usage: RunUsage | null;
  /** What the step cost in US dollars; null when its model has no price. */
  costUsd: number | null;
  /** Sequence number of the step's `finish-step` event. */
  lastSeq: number;
  startedAt: string;
  finishedAt: string;
}

/** One page of a list; pass `nextCursor` as `cursor` for the next one (null: this was the last). */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PageOptions {
  /** How many items per page; the server caps it. */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

/** The body of every error answer: `{"error": {"code", "message", …details}}` (DESIGN §4). */
export interface ErrorBody {
  error: { code: string; message: string; [detail: string]: unknown };
}

/** What to start a run with: plain text, or message parts (text and files). */
export type RunInput =
  | { text: string }
  | {
      parts: Array<
        { type: 'text'; text: string } | { type: 'file'; mediaType: string; url: string; filename?: string }
      >;
    };

/** What a start does when the chat already has an active run (DESIGN §4). */
export type MultitaskStrategy = 'reject' | 'interrupt' | 'enqueue';

/** Model call settings of an agent or a run (DESIGN §4). */
export interface ModelOptions {
  temperature?: number;
  topP?: number;
  maxOutputTokens?: number;
  /** Passed to the provider as is, keyed by provider name. */
  providerOptions?: Record<string, Record<string, unknown>>;
}

/** A run's limits; the run's override the agent's, which override the workspace defaults (DESIGN §4). */
export interface RunBudget {
  maxSteps?: number;
  maxTokens?: number;
  maxCostUsd?: number;
  maxDurationMs?: number;
  /**
   * What happens when the budget runs out: wait for more (`pause`), settle `aborted`/`budget_exceeded`
   * (`abort`), or settle `succeeded` and continue in a follow-up run (`continue`, steps only).
   * @default 'pause'
   */
  onExceeded?: 'pause' | 'abort' | 'continue';
}

/** The body of `POST /v1/chats/:chatId/runs`. */
export interface StartRunOptions {
  input: RunInput;
  /** Model id; the agent's (or the server's default) when absent. */
  model?: string;
  modelOptions?: ModelOptions;
  budget?: RunBudget;
  /**
   * When the chat already has an active run: refuse with 409 `run_already_active` (`reject`), stop it
   * first (`interrupt`), or queue this run behind it (`enqueue`).
   * @default 'reject'
   */
  multitask?: MultitaskStrategy;
  /** Free-form data kept on the run and shown on the run object. */
  metadata?: Record<string, unknown>;
  /** What started the run. @default 'api' */
  trigger?: RunTrigger;
}

/** The answer of a stop, by run or by chat. */
export interface StopResult {
  stopped: boolean;
  run: RunObject | null;
}

/** A chat's latest run and the assistant message it projects (the reconnect target). */
export interface LatestRun {
  run: RunObject | null;
  message: Message | null;
}

/** The roles of a user (DESIGN §4 "Identity and keys"). */
export type UserRole = 'owner' | 'admin' | 'member';

/** A user as the API shows it. */
export interface UserObject {
  id: string;
  workspaceId: string;
  email: string;
  role: UserRole;
  createdAt: string;
}

/** A workspace as the API shows it. */
export interface WorkspaceObject {
  id: string;
  name: string;
  /** Limits per day or minute (DESIGN §3); null: unlimited. */
  quota?: WorkspaceQuota | null;
  createdAt: string;
}

/** The caller (`GET /v1/me`): the user behind the API key and their workspace. */
export interface Me {
  user: UserObject;
  workspace: WorkspaceObject;
}
