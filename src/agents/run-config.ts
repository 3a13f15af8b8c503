import type {
  AgentTool,
  Budget,
  ContextSettings,
  McpServer,
  ModelOptions,
  Multitask,
  RunConfig,
} from '../protocol/agent.ts';
import type { RunOverrides } from './agent-schema.ts';

export type { RunConfig, RunTool } from '../protocol/agent.ts';

/** An agent as a run needs it: the stored definition, MCP headers included. */
export interface AgentDefinition {
  id: string;
  instructions: string | null;
  /** Null: `defaults.model`. */
  model: string | null;
  modelOptions: ModelOptions;
  tools: AgentTool[];
  mcpServers: McpServer[];
  budget: Budget;
  multitask: Multitask;
  context: ContextSettings;
  continuation: { maxRuns: number } | null;
}

/** The workspace default agent: what a chat without an agent runs with. */
export interface AgentDefaults {
  /** The server's default model (`OUTRUN_MODEL`). */
  model: string;
  /** The tools the default agent offers: the registry's built-ins. */
  tools: string[];
  /** The workspace's default budget, under the agent's and the run's. @default {} */
  budget?: Budget;
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as T;
}

function mergeModelOptions(base: ModelOptions, override: ModelOptions | undefined): ModelOptions {
  if (!override) return withoutUndefined({ ...base });
  const providerOptions =
    base.providerOptions || override.providerOptions
      ? Object.fromEntries(
          [
            ...new Set([
              ...Object.keys(base.providerOptions ?? {}),
              ...Object.keys(override.providerOptions ?? {}),
            ]),
          ].map((provider) => [
            provider,
            { ...base.providerOptions?.[provider], ...override.providerOptions?.[provider] },
          ]),
        )
      : undefined;
  return withoutUndefined({ ...base, ...override, providerOptions });
}

/**
 * The configuration a run executes with: the chat's agent (or, with `agent: null`, the workspace default
 * agent: no instructions, the default model, the built-in tools) under the run request's overrides.
 * Budgets layer run over agent over workspace, field by field; model options likewise, and provider
 * options per provider. Pure: validation of the overrides (a model the server can serve) is the caller's.
 */
export function resolveRunConfig(options: {
  agent: AgentDefinition | null;
  defaults: AgentDefaults;
  /** The run request's `{model?, modelOptions?, budget?, multitask?}`. @default {} */
  overrides?: RunOverrides;
}): RunConfig {
  const { agent, defaults } = options;
  const overrides = options.overrides ?? {};
  const tools = agent
    ? agent.tools.map((tool) => ({ name: tool.name, needsApproval: tool.needsApproval === true }))
    : defaults.tools.map((name) => ({ name, needsApproval: false }));
  return {
    agentId: agent?.id ?? null,
    instructions: agent?.instructions ?? null,
    model: overrides.model ?? agent?.model ?? defaults.model,
    modelOptions: mergeModelOptions(agent?.modelOptions ?? {}, overrides.modelOptions),
    tools,
    mcpServers: (agent?.mcpServers ?? []).map((server) => ({
      ...server,
      ...(server.headers ? { headers: { ...server.headers } } : {}),
    })),
    budget: withoutUndefined({ ...defaults.budget, ...agent?.budget, ...overrides.budget }),
    multitask: overrides.multitask ?? agent?.multitask ?? 'reject',
    context: withoutUndefined({ ...agent?.context }),
    continuation: agent?.continuation ? { ...agent.continuation } : null,
  };
}
