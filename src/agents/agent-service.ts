import type { LanguageModel } from 'ai';
import { sql } from 'kysely';
import {
  McpServerUnreachableError,
  modelToolName,
  parseMcpToolName,
  type McpClientPool,
} from '../agent/mcp-tools.ts';
import { overContextBudget, toolsTokens } from '../agent/compaction.ts';
import { buildToolSet } from '../agent/tool-set.ts';
import type { ToolRegistry } from '../agent/tools.ts';
import type { Caller } from '../auth/auth-service.ts';
import type { Page } from '../chats/chat-service.ts';
import { ForbiddenError, InvalidRequestError, ModelUnavailableError, NotFoundError } from '../errors.ts';
import { newId } from '../ids.ts';
import { assertOutboundUrl, OutboundUrlError } from '../net/outbound-url.ts';
import {
  REDACTED_HEADER_VALUE,
  type AgentObject,
  type AgentTool,
  type McpServer,
  type Multitask,
  type RunConfig,
} from '../protocol/agent.ts';
import type { Db } from '../store/database.ts';
import type { AgentRow } from '../store/schema.ts';
import type { CreateAgentInput, RunOverrides, UpdateAgentInput } from './agent-schema.ts';
import { resolveRunConfig, type AgentDefaults, type AgentDefinition } from './run-config.ts';

export { resolveRunConfig, type AgentDefaults, type AgentDefinition, type RunConfig } from './run-config.ts';
export { buildToolSet } from '../agent/tool-set.ts';

/** An agent write's answer: the agent, and what could not be checked (an MCP server that did not answer). */
export interface AgentWriteResult {
  agent: AgentObject;
  warnings: string[];
}

export interface AgentServiceOptions {
  db: Db;
  /** The tools agents may allow, by name; the default agent offers all of them. */
  tools: ToolRegistry;
  /** Resolves a model id; throws `ModelUnavailableError` for one the server cannot serve. */
  resolveModel: (modelId: string) => LanguageModel;
  /** Checks MCP servers at create and update. */
  mcp: McpClientPool;
  /** The default agent's model (`OUTRUN_MODEL`). */
  defaultModel: string;
  /** Allow MCP servers on private and loopback addresses (`OUTRUN_ALLOW_PRIVATE_URLS`). @default false */
  allowPrivateUrls?: boolean;
}

/** The fields of an agent before it is stored: a create body, or a stored agent with a patch applied. */
type AgentFields = Omit<AgentObject, 'id' | 'createdAt' | 'updatedAt'>;

const isAdmin = (caller: Caller) =>
  (caller.role as string) === 'admin' || (caller.role as string) === 'owner';

function invalid(field: string, message: string): InvalidRequestError {
  return new InvalidRequestError(`${field}: ${message}`, { field });
}

function toDefinition(row: AgentRow): AgentDefinition {
  return {
    id: row.id,
    instructions: row.instructions,
    model: row.model,
    modelOptions: row.model_options,
    tools: row.tools,
    mcpServers: row.mcp_servers,
    budget: row.budget,
    multitask: row.multitask as Multitask,
    context: row.context,
    continuation: row.continuation,
  };
}

/** An agent as the API shows it: MCP header values are secrets and come back redacted. */
export function toAgentObject(row: AgentRow): AgentObject {
  return {
    id: row.id,
    name: row.name,
    instructions: row.instructions,
    model: row.model,
    modelOptions: row.model_options,
    tools: row.tools,
    mcpServers: row.mcp_servers.map((server) => ({
      ...server,
      ...(server.headers
        ? {
            headers: Object.fromEntries(
              Object.keys(server.headers).map((name) => [name, REDACTED_HEADER_VALUE]),
            ),
          }
        : {}),
    })),
    budget: row.budget,
    multitask: row.multitask as Multitask,
    context: row.context,
    autostart: row.autostart,
    continuation: row.continuation,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** How many lists of tool names `builtInToolsTokens` keeps the tokens of. */
const TOOLS_TOKENS_KEPT = 1_000;

/**
 * Agents (DESIGN §4): workspace-wide definitions of instructions, model, tools and limits. Reads are open to
 * the workspace, writes need a workspace admin; another workspace's agent is a 404. A write is validated
 * whole before anything is stored: an unknown tool or model, or a bad option, is a 400 naming the field.
 */
export class AgentService {
  private readonly db: Db;
  private readonly registry: ToolRegistry;
  private readonly resolveModel: (modelId: string) => LanguageModel;
  private readonly mcp: McpClientPool;
  private readonly defaultModel: string;
  private readonly allowPrivateUrls: boolean;
  private readonly toolsTokensByNames = new Map<string, number>();

  constructor(options: AgentServiceOptions) {
    this.db = options.db;
    this.registry = options.tools;
    this.resolveModel = options.resolveModel;
    this.mcp = options.mcp;
    this.defaultModel = options.defaultModel;
    this.allowPrivateUrls = options.allowPrivateUrls ?? false;
  }

  /**
   * The tokens of the definitions of the built-in tools `config` offers (`toolsTokens`), sent with every call
   * and never cut: what a start can count of a run's tools, and an agent's write of its own. An MCP server's
   * tools are listed, and counted, when the run executes. Kept per list of names and registry size (tools are
   * only ever added), so a start measures none (about 10 µs for the default agent's three).
   */
  async builtInToolsTokens(config: { tools: readonly { name: string }[] }): Promise<number> {
    const names = config.tools.map((entry) => entry.name).filter((name) => !parseMcpToolName(name));
    if (names.length === 0) return 0;
    const key = `${this.registry.size}\n${names.join('\n')}`;
    const known = this.toolsTokensByNames.get(key);
    if (known !== undefined) return known;
    // Whether a call needs approval is not in its definition.
    const tools = names.map((name) => ({ name, needsApproval: false }));
    const tokens = await toolsTokens(
      await buildToolSet({ config: { tools, mcpServers: [] }, registry: this.registry }),
    );
    // As many lists as agents with different tools: bounded anyway.
    if (this.toolsTokensByNames.size >= TOOLS_TOKENS_KEPT) this.toolsTokensByNames.clear();
    this.toolsTokensByNames.set(key, tokens);
    return tokens;
  }

  /** The workspace default agent: no instructions, the server's default model, the registry's tools. */
  defaults(): AgentDefaults {
    return { model: this.defaultModel, tools: this.registry.defaultNames() };
  }

  async create(caller: Caller, input: CreateAgentInput): Promise<AgentWriteResult> {
    this.requireAdmin(caller);
    const fields: AgentFields = {
      name: input.name,
      instructions: input.instructions ?? null,
      model: input.model ?? null,
      modelOptions: input.modelOptions ?? {},
      tools: input.tools ?? [],
      mcpServers: input.mcpServers ?? [],
      budget: input.budget ?? {},
      multitask: input.multitask ?? 'reject',
      context: input.context ?? {},
      autostart: input.autostart ?? null,
      continuation: input.continuation ?? null,
    };
    this.restoreRedactedHeaders(fields.mcpServers, []);
    const warnings = await this.validate(fields);
    const row = await this.db
      .insertInto('agents')
      .values({ id: newId('agent'), workspace_id: caller.workspaceId, ...toColumns(fields) })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { agent: toAgentObject(row), warnings };
  }

  async list(caller: Caller, options: { limit: number; cursor?: string }): Promise<Page<AgentObject>> {
    let query = this.db
      .selectFrom('agents')
      .selectAll()
      .where('workspace_id', '=', caller.workspaceId)
      .where('archived_at', 'is', null);
    if (options.cursor) query = query.where('id', '<', options.cursor);
    const rows = await query
      .orderBy('id', 'desc')
      .limit(options.limit + 1)
      .execute();
    const items = rows.slice(0, options.limit).map(toAgentObject);
    return { items, nextCursor: rows.length > options.limit ? items[items.length - 1]!.id : null };
  }

  async get(caller: Caller, agentId: string): Promise<AgentObject> {
    return toAgentObject(await this.getRow(caller.workspaceId, agentId));
  }

  /** Replaces the given fields; the result is validated whole. Runs already begun keep their configuration. */
  async update(caller: Caller, agentId: string, patch: UpdateAgentInput): Promise<AgentWriteResult> {
    this.requireAdmin(caller);
    const row = await this.getRow(caller.workspaceId, agentId);
    const current = toDefinition(row);
    const fields: AgentFields = {
      name: patch.name ?? row.name,
      instructions: patch.instructions !== undefined ? patch.instructions : current.instructions,
      model: patch.model !== undefined ? patch.model : current.model,
      modelOptions: patch.modelOptions ?? current.modelOptions,
      tools: patch.tools ?? current.tools,
      mcpServers: patch.mcpServers ?? current.mcpServers,
      budget: patch.budget ?? current.budget,
      multitask: patch.multitask ?? current.multitask,
      context: patch.context ?? current.context,
      autostart: patch.autostart !== undefined ? patch.autostart : row.autostart,
      continuation: patch.continuation !== undefined ? patch.continuation : current.continuation,
    };
    if (patch.mcpServers) this.restoreRedactedHeaders(fields.mcpServers, current.mcpServers);
    const warnings = await this.validate(fields, {
      probe: patch.mcpServers !== undefined || patch.tools !== undefined,
    });
    const updated = await this.db
      .updateTable('agents')
      .set({ ...toColumns(fields), updated_at: sql<Date>`now()` })
      .where('id', '=', agentId)
      .where('workspace_id', '=', caller.workspaceId)
      .where('archived_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    // Archived since it was read.
    if (!updated) throw new NotFoundError('agent', agentId);
    return { agent: toAgentObject(updated), warnings };
  }

  /** Archives an agent: it leaves every agent route and cannot be given to new chats; chats that have it keep it. */
  async archive(caller: Caller, agentId: string): Promise<void> {
    this.requireAdmin(caller);
    await this.getRow(caller.workspaceId, agentId);
    await this.db
      .updateTable('agents')
      .set({ archived_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
      .where('id', '=', agentId)
      .where('archived_at', 'is', null)
      .execute();
  }

  /**
   * The agent a run of a chat executes with, archived or not (a chat keeps its agent), or null for a chat
   * without one or an agent of another workspace.
   */
  async definition(workspaceId: string, agentId: string | null): Promise<AgentDefinition | null> {
    if (agentId === null) return null;
    const row = await this.db
      .selectFrom('agents')
      .selectAll()
      .where('id', '=', agentId)
      .where('workspace_id', '=', workspaceId)
      .executeTakeFirst();
    return row ? toDefinition(row) : null;
  }

  /** `resolveRunConfig` for a chat's agent (null: the workspace default) and a run request's overrides. */
  async runConfig(options: {
    workspaceId: string;
    agentId: string | null;
    overrides?: RunOverrides;
  }): Promise<RunConfig> {
    const agent = await this.definition(options.workspaceId, options.agentId);
    return resolveRunConfig({ agent, defaults: this.defaults(), overrides: options.overrides });
  }

  private requireAdmin(caller: Caller): void {
    if (!isAdmin(caller))
      throw new ForbiddenError('Creating, changing and archiving agents needs a workspace admin key.');
  }

  private async getRow(workspaceId: string, agentId: string): Promise<AgentRow> {
    const row = await this.db
      .selectFrom('agents')
      .selectAll()
      .where('id', '=', agentId)
      .where('workspace_id', '=', workspaceId)
      .where('archived_at', 'is', null)
      .executeTakeFirst();
    if (!row) throw new NotFoundError('agent', agentId);
    return row;
  }

  /**
   * A header value sent back redacted keeps the stored value of the same server and header, while the
   * server's URL keeps its origin: a secret is never sent to a host it was not given for (a redacted value
   * with a new origin is refused, so whoever changes the URL must know the secret).
   */
  private restoreRedactedHeaders(servers: McpServer[], stored: McpServer[]): void {
    servers.forEach((server, index) => {
      for (const [name, value] of Object.entries(server.headers ?? {})) {
        if (value !== REDACTED_HEADER_VALUE) continue;
        const before = stored.find((candidate) => candidate.name === server.name);
        const previous = before?.headers?.[name];
        if (previous === undefined) {
          throw invalid(
            `mcpServers.${index}.headers.${name}`,
            `send the header's value, not ${REDACTED_HEADER_VALUE}.`,
          );
        }
        if (originOf(before!.url) !== originOf(server.url)) {
          throw invalid(
            `mcpServers.${index}.headers.${name}`,
            `the server's URL moved to another origin: send the header's value, not ${REDACTED_HEADER_VALUE}.`,
          );
        }
        server.headers![name] = previous;
      }
    });
  }

  /** Checks what the schema cannot; returns warnings for what could not be checked now. Writes nothing. */
  private async validate(fields: AgentFields, options: { probe?: boolean } = {}): Promise<string[]> {
    const warnings: string[] = [];
    if (fields.model !== null) {
      try {
        this.resolveModel(fields.model);
      } catch (error) {
        if (error instanceof ModelUnavailableError) {
          throw new ModelUnavailableError(`model: ${error.message}`, { ...error.details, field: 'model' });
        }
        throw error;
      }
    }

    // The instructions go with every call and are never compacted: over the context budget, every run of the
    // agent would fail; with the first message of every chat the agent starts, that chat's start would be
    // refused (the start's own check, `400 invalid_request` on `input`).
    const budget = {
      instructions: fields.instructions,
      maxTokens: fields.context.maxTokens,
      modelId: fields.model ?? this.defaultModel,
    };
    const overBudget = (field: string, over: { tokens: number; maxTokens: number }, what: string) =>
      new InvalidRequestError(
        `${field}: about ${over.tokens} tokens${what}, more than the agent's context budget of ` +
          `${over.maxTokens} (context.maxTokens, or the model's default): it could never be sent to the model ` +
          'whole.',
        { field, ...over },
      );
    const instructions = overContextBudget(budget);
    if (instructions) throw overBudget('instructions', instructions, '');
    // So do the built-in tools' definitions (an MCP server's are counted when a run lists them).
    const withTools = { ...budget, toolsTokens: await this.builtInToolsTokens(fields) };
    const tools = overContextBudget(withTools);
    if (tools) throw overBudget('tools', tools, ' of tool definitions with the instructions');
    const autostart =
      fields.autostart &&
      overContextBudget({ ...withTools, parts: [{ type: 'text', text: fields.autostart.text }] });
    if (autostart)
      throw overBudget('autostart.text', autostart, " with the instructions and the tools' definitions");

    const serverNames = new Set<string>();
    const reachable: { server: McpServer; index: number }[] = [];
    for (const [index, server] of fields.mcpServers.entries()) {
      if (serverNames.has(server.name))
        throw invalid(`mcpServers.${index}.name`, `"${server.name}" is listed twice.`);
      serverNames.add(server.name);
      try {
        await assertOutboundUrl(server.url, { allowPrivate: this.allowPrivateUrls });
        reachable.push({ server, index });
      } catch (error) {
        if (!(error instanceof OutboundUrlError)) throw error;
        if (error.problem !== 'unresolvable') throw invalid(`mcpServers.${index}.url`, error.message);
        warnings.push(`MCP server "${server.name}" did not answer: ${error.message}`);
      }
    }

    const modelNames = new Map<string, string>();
    const mcpToolsByServer = new Map<string, { tool: string; index: number }[]>();
    fields.tools.forEach((entry: AgentTool, index) => {
      const field = `tools.${index}.name`;
      const mcp = parseMcpToolName(entry.name);
      if (mcp) {
        if (!serverNames.has(mcp.server)) {
          throw invalid(
            field,
            `"${entry.name}" names MCP server "${mcp.server}", which is not in mcpServers.`,
          );
        }
        mcpToolsByServer.set(mcp.server, [
          ...(mcpToolsByServer.get(mcp.server) ?? []),
          { tool: mcp.tool, index },
        ]);
      } else if (!this.registry.has(entry.name)) {
        throw invalid(
          field,
          `unknown tool "${entry.name}"; use one of ${this.registry.names().join(', ')} or "mcp:<server>/<tool>" of a listed MCP server.`,
        );
      }
      const modelName = modelToolName(entry.name);
      const clash = modelNames.get(modelName);
      if (clash !== undefined) {
        throw invalid(
          field,
          `"${entry.name}" is offered to the model as "${modelName}", like "${clash}"; list each tool once.`,
        );
      }
      modelNames.set(modelName, entry.name);
    });

    if (options.probe !== false) {
      const probes = await Promise.all(
        reachable.map(async ({ server }) => {
          try {
            return { server, names: await this.mcp.probe(server) };
          } catch (error) {
            return {
              server,
              error: error instanceof McpServerUnreachableError ? error.message : String(error),
            };
          }
        }),
      );
      for (const probe of probes) {
        if ('error' in probe) {
          warnings.push(probe.error ?? `MCP server "${probe.server.name}" did not answer.`);
          continue;
        }
        for (const { tool } of mcpToolsByServer.get(probe.server.name) ?? []) {
          if (!probe.names.includes(tool)) {
            warnings.push(`MCP server "${probe.server.name}" has no tool "${tool}" right now.`);
          }
        }
      }
    }
    return warnings;
  }
}

function toColumns(fields: AgentFields) {
  return {
    name: fields.name,
    instructions: fields.instructions,
    model: fields.model,
    model_options: JSON.stringify(fields.modelOptions),
    tools: JSON.stringify(fields.tools),
    mcp_servers: JSON.stringify(fields.mcpServers),
    budget: JSON.stringify(fields.budget),
    multitask: fields.multitask,
    context: JSON.stringify(fields.context),
    autostart: fields.autostart === null ? null : JSON.stringify(fields.autostart),
    continuation: fields.continuation === null ? null : JSON.stringify(fields.continuation),
  };
}

/** A URL's origin (scheme, host and port), or the text itself when it is not a URL. */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}
