import type { Tool, ToolSet } from 'ai';
import type { McpServer, RunConfig } from '../protocol/agent.ts';
import {
  MCP_TOOL_PREFIX,
  McpServerUnreachableError,
  modelToolName,
  parseMcpToolName,
  unavailableTool,
} from './mcp-tools.ts';
import type { McpClientPool } from './mcp-tools.ts';
import type { ToolRegistry } from './tools.ts';

/**
 * The `tools` of a run's `streamText`: the run's allowlist, each tool under its model name
 * (`modelToolName`: registry names unchanged, `mcp:<server>/<tool>` as `mcp_<server>_<tool>`), with
 * `needsApproval: true` on the tools the agent marked. MCP tools come from `mcp`; a server that does not
 * answer, or no longer has the tool, gives a stand-in whose every call fails with a clear message, so the
 * step records a tool error and the process goes on. A name in neither place (a tool removed from the
 * registry since the agent was saved) is left out.
 */
export async function buildToolSet(options: {
  config: Pick<RunConfig, 'tools' | 'mcpServers'>;
  registry: ToolRegistry;
  /** Required when the allowlist names MCP tools; without it they are offered as unavailable. */
  mcp?: McpClientPool;
}): Promise<ToolSet> {
  const { config, registry, mcp } = options;
  const registryTools = registry.toolSet();
  const serversUsed = new Set(
    config.tools.flatMap((entry) => {
      const parsed = parseMcpToolName(entry.name);
      return parsed ? [parsed.server] : [];
    }),
  );
  const serverTools = new Map<string, ToolSet | Error>();
  await Promise.all(
    config.mcpServers
      .filter((server) => serversUsed.has(server.name))
      .map(async (server: McpServer) => {
        if (!mcp) {
          serverTools.set(
            server.name,
            new McpServerUnreachableError(server.name, 'no MCP client pool on this worker'),
          );
          return;
        }
        try {
          serverTools.set(server.name, await mcp.tools(server));
        } catch (error) {
          serverTools.set(server.name, error instanceof Error ? error : new Error(String(error)));
        }
      }),
  );

  const toolSet: ToolSet = {};
  for (const entry of config.tools) {
    let definition: Tool | undefined;
    const parsed = parseMcpToolName(entry.name);
    if (parsed) {
      const listed = serverTools.get(parsed.server);
      const title = `${MCP_TOOL_PREFIX}${parsed.server}/${parsed.tool}`;
      if (listed === undefined) {
        definition = unavailableTool({
          title,
          message: `MCP server "${parsed.server}" is not configured on this agent.`,
        });
      } else if (listed instanceof Error) {
        definition = unavailableTool({ title, message: listed.message });
      } else {
        definition =
          listed[parsed.tool] ??
          unavailableTool({ title, message: `MCP server "${parsed.server}" has no tool "${parsed.tool}".` });
      }
    } else {
      definition = registryTools[entry.name];
    }
    if (!definition) continue;
    toolSet[modelToolName(entry.name)] = {
      ...definition,
      needsApproval: entry.needsApproval === true,
    } as Tool;
  }
  return toolSet;
}
