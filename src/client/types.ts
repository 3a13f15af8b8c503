import type { UIMessage, UIMessageChunk } from 'ai';
import type { UserObject, WorkspaceObject } from '../auth/auth-service.ts';
import type { RunObject, RunUsage } from '../runs/run-object.ts';
import type { RunError, RunErrorCode, RunStatus, RunTrigger } from '../runs/run-status.ts';

export type {
  UserObject,
  WorkspaceObject,
  RunError,
  RunErrorCode,
  RunObject,
  RunStatus,
  RunTrigger,
  RunUsage,
};

/** A part of a message, in the AI SDK `UIMessage` part shapes (text, tool parts, step boundaries, …). */
export type MessagePart = UIMessage['parts'][number];

/** A chat as the API shows it. */
export interface Chat {
  id: string;
  /** The chat's agent; null: the workspace default agent. */
  agentId: string | null;
  title: string;
  createdAt: string;
  updatedAt: string;
}

/** A message as the API shows it (DESIGN §4). */
export interface Message {
  id: string;
  role: 'user' | 'assistant' | 'system';
  parts: MessagePart[];
  status: 'completed' | 'streaming' | 'error' | 'aborted';
  runId: string | null;
  createdAt: string;
  /**
   * For a message still streaming: the run's stream sequence number its parts are complete through.
   * Follow the run with `after: streamSeq` to continue exactly where this snapshot ends. Null once final.
   */
  streamSeq?: number | null;
}

/** One finished step of a run, as recorded when it finished. */
export interface RunStep {
  /** 1-based step number. */
  step: number;
  parts: MessagePart[];
  usage: RunUsage | null;
  /** Sequence number of the step's `finish-step` event. */
  lastSeq: number;
  startedAt: string;
  finishedAt: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PageOptions {
  limit?: number;
  cursor?: string;
}

/** The run lifecycle chunk (`data-run`) carried by the stream whenever the run's status changes. */
export interface RunStatusChunk {
  type: 'data-run';
  data: RunObject;
}

/** A chunk of a run's stream: an AI SDK UI message chunk or a run lifecycle chunk. */
export type RunChunk = UIMessageChunk | RunStatusChunk;

/** One event of a run's stream: its dense sequence number and its chunk. */
export interface RunStreamEvent {
  seq: number;
  chunk: RunChunk;
}

/** What to start a run with: plain text, or message parts (text and files). */
export type RunInput =
  | { text: string }
  | {
      parts: Array<
        { type: 'text'; text: string } | { type: 'file'; mediaType: string; url: string; filename?: string }
      >;
    };

export interface StartRunOptions {
  input: RunInput;
  /** Model id; the server's default when absent. */
  model?: string;
  /** When the chat already has an active run: refuse with 409 (`reject`), or stop it first (`interrupt`). @default 'reject' */
  multitask?: 'reject' | 'interrupt';
  budget?: { maxSteps?: number; maxOutputTokens?: number };
  /** What started the run. @default 'api' */
  trigger?: RunTrigger;
}

export interface StopResult {
  stopped: boolean;
  run: RunObject | null;
}

export interface LatestRun {
  run: RunObject | null;
  message: Message | null;
}

/** The caller: the user behind the API key and their workspace. */
export interface Me {
  user: UserObject;
  workspace: WorkspaceObject;
}

/** Whether a run status is one of the active ones (`pending`, `running`). */
export function isActiveStatus(status: RunStatus): boolean {
  return status === 'pending' || status === 'running';
}

/** Whether a stream chunk is the run lifecycle chunk. */
export function isRunStatusChunk(chunk: RunChunk): chunk is RunStatusChunk {
  return chunk.type === 'data-run';
}
