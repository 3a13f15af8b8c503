/**
 * The agent as the wire shows it (DESIGN §4 "Agents") and the run configuration resolved from it.
 * Shared by the server, the typed client and the web app; imports nothing from the server.
 */

/** What to do when a chat already has an active run (DESIGN §4 "Runs"). */
export const Multitask = {
  /** Answer `409 run_already_active`. The default. */
  reject: 'reject',
  /** Stop the active run, wait for it to settle, then start this one. */
  interrupt: 'interrupt',
  /** Create this run `queued`; it starts when the active run settles. */
  enqueue: 'enqueue',
} as const;
export type Multitask = (typeof Multitask)[keyof typeof Multitask];

/** A JSON value, as provider options carry them. */
export type JsonValue = null | string | number | boolean | JsonValue[] | { [key: string]: JsonValue };

/** Options passed to the model on every call; spreads into `streamText` as they are. */
export interface ModelOptions {
  /** 0–2. */
  temperature?: number;
  /** 0–1. */
  topP?: number;
  maxOutputTokens?: number;
  /** Provider-specific options, keyed by provider (`{"openai": {...}}`). */
  providerOptions?: Record<string, Record<string, JsonValue>>;
}

/** One entry of an agent's tool allowlist: a registry tool name or `mcp:<server>/<tool>`. */
export interface AgentTool {
  name: string;
  /** The run waits for a person to approve each call. @default false */
  needsApproval?: boolean;
}

/** An MCP server reached over Streamable HTTP. */
export interface McpServer {
  /** Letters, digits, `_` and `-`; tools are named `mcp:<name>/<tool>`. */
  name: string;
  url: string;
  /** Sent with every request. Responses show each value as `REDACTED_HEADER_VALUE`. */
  headers?: Record<string, string>;
}

/** What a run may spend (DESIGN §4 "Runs"). */
export interface Budget {
  maxSteps?: number;
  maxTokens?: number;
  maxCostUsd?: number;
  maxDurationMs?: number;
  /** @default "pause" */
  onExceeded?: 'pause' | 'abort' | 'continue';
}

/** How history is fitted into the model's context (DESIGN §6, compaction). */
export interface ContextSettings {
  maxTokens?: number;
  keepLastTurns?: number;
  summarize?: boolean;
}

/** The value shown in place of each MCP header value; sending it back in a PATCH keeps the stored value. */
export const REDACTED_HEADER_VALUE = '[redacted]';

/** An agent as `/v1/agents` returns it. */
export interface AgentObject {
  id: string;
  name: string;
  /** The system prompt; null for none. */
  instructions: string | null;
  /** Null: the server's default model (`OUTRUN_MODEL`) when a run starts. */
  model: string | null;
  modelOptions: ModelOptions;
  tools: AgentTool[];
  mcpServers: McpServer[];
  budget: Budget;
  multitask: Multitask;
  context: ContextSettings;
  /** With it, a chat created with this agent starts its first run at once with `text` as the user message. */
  autostart: { text: string } | null;
  /** How many follow-up runs (`trigger: "continue"`) one chain may start. */
  continuation: { maxRuns: number } | null;
  createdAt: string;
  updatedAt: string;
}

/** A tool as a run offers it: the allowlist entry with its approval flag resolved. */
export interface RunTool {
  name: string;
  needsApproval: boolean;
}

/**
 * The configuration a run executes with, resolved once at run start from the chat's agent (or the
 * workspace default) and the run request's overrides. JSON-serializable: stored in `runs.config`, so a
 * later edit of the agent never changes a run already begun.
 */
export interface RunConfig {
  /** Null: the workspace default agent. */
  agentId: string | null;
  instructions: string | null;
  model: string;
  modelOptions: ModelOptions;
  tools: RunTool[];
  mcpServers: McpServer[];
  budget: Budget;
  multitask: Multitask;
  context: ContextSettings;
  continuation: { maxRuns: number } | null;
}
