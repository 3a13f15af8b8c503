import { createHash } from 'node:crypto';
import { createMCPClient, type MCPClient } from '@ai-sdk/mcp';
import { dynamicTool, jsonSchema, type Tool, type ToolSet } from 'ai';
import type { Logger } from 'pino';
import { assertOutboundUrl } from '../net/outbound-url.ts';
import { publicOnlyFetch } from '../net/public-fetch.ts';
import type { McpServer } from '../protocol/agent.ts';

/** Allowlist names of MCP tools start with this: `mcp:<server>/<tool>`. */
export const MCP_TOOL_PREFIX = 'mcp:';

/** How long connecting to an MCP server and listing its tools may take. */
export const DEFAULT_MCP_CONNECT_TIMEOUT_MS = 10_000;

/**
 * How long one MCP tool call may wait for its answer (the official MCP SDK's default request timeout). The
 * AI SDK's client has none, so only the HTTP client's own timeouts (5 minutes) bounded a call, and nothing
 * bounded one whose server kept its event stream alive.
 */
export const DEFAULT_MCP_CALL_TIMEOUT_MS = 60_000;

/**
 * How long a client no run has used stays open. A client holds a connection to its server (and its event
 * stream, where the server offers one) and the server holds its session: without this, every server URL and
 * headers a run ever used stayed connected for the life of the process.
 */
export const DEFAULT_MCP_IDLE_MS = 5 * 60_000;

/** The server and tool of an `mcp:<server>/<tool>` name, or null for any other name. */
export function parseMcpToolName(name: string): { server: string; tool: string } | null {
  const match = /^mcp:([^/]+)\/(.+)$/.exec(name);
  return match ? { server: match[1]!, tool: match[2]! } : null;
}

/** Providers accept tool names of 1–64 letters, digits, `_` and `-`. */
const PROVIDER_TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The name a tool is offered to the model under. Registry names are already valid and stay as they are;
 * `mcp:<server>/<tool>` becomes `mcp_<server>_<tool>`, with other characters replaced by `_`, and a hash
 * suffix when that is too long or had to change a character, so distinct names stay distinct in practice.
 * The stream's tool chunks carry this name as `toolName` and the `mcp:` name as `title`.
 */
export function modelToolName(name: string): string {
  const mcp = parseMcpToolName(name);
  if (!mcp) return name;
  const plain = `mcp_${mcp.server}_${mcp.tool}`;
  if (PROVIDER_TOOL_NAME.test(plain)) return plain;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${plain.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 55)}_${hash}`;
}

/** An MCP server that could not be reached, or failed while being called. */
export class McpServerUnreachableError extends Error {
  constructor(serverName: string, cause: unknown) {
    super(`MCP server "${serverName}" is unreachable: ${describeError(cause)}`, { cause });
    this.name = 'McpServerUnreachableError';
  }
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? error.cause : null;
  const code = (cause as { code?: unknown } | null)?.code ?? (error as { code?: unknown }).code;
  const detail = cause && cause.message !== error.message ? ` (${cause.message})` : '';
  return `${error.message}${detail}${typeof code === 'string' && /^E[A-Z_]+$/.test(code) && !detail.includes(code) ? ` [${code}]` : ''}`;
}

/**
 * A tool whose every call fails with `message`: stands in for a tool whose server cannot be reached. Dynamic,
 * as the tools an MCP server lists are, so its calls are `dynamic-tool` parts whether the server answers or not.
 */
export function unavailableTool(options: { title: string; message: string }): Tool {
  return dynamicTool({
    title: options.title,
    description: `Unavailable: ${options.message}`,
    inputSchema: jsonSchema<Record<string, unknown>>({ type: 'object', additionalProperties: true }),
    execute: async (): Promise<unknown> => {
      throw new Error(options.message);
    },
  });
}

export interface McpClientPoolOptions {
  /** Allow MCP servers on private and loopback addresses (`OUTRUN_ALLOW_PRIVATE_URLS`). @default false */
  allowPrivateUrls?: boolean;
  /**
   * How the check before connecting resolves a server's host (a test stands in a DNS that answers the check
   * one address and the connection another). @default `dns.lookup`
   */
  resolve?: (hostname: string) => Promise<string[]>;
  /** @default DEFAULT_MCP_CONNECT_TIMEOUT_MS */
  connectTimeoutMs?: number;
  /** @default DEFAULT_MCP_CALL_TIMEOUT_MS */
  callTimeoutMs?: number;
  /** @default DEFAULT_MCP_IDLE_MS */
  idleMs?: number;
  logger?: Logger;
}

/** One open (or opening) client of the pool. */
interface PoolEntry {
  client: Promise<MCPClient>;
  /** When a run last listed or called its tools. */
  lastUsedAt: number;
  /** Listings and calls under way: a busy client is never closed for being idle. */
  busy: number;
  /**
   * Aborted when the client reports its connection failed (the server went away mid-call): the calls under
   * way fail then, not at their timeout, since their answers can no longer come.
   */
  broken: AbortController;
}

/**
 * The MCP clients of one worker: one Streamable HTTP client per server URL and headers, opened on first
 * use and reused by every run, closed by `close()` or once no run has used it for `idleMs`. A server that
 * cannot be reached is not cached, so the next run tries again; a client whose calls fail at the transport
 * is dropped the same way. A tool whose client was closed meanwhile connects again when it is called.
 */
export class McpClientPool {
  private readonly clients = new Map<string, PoolEntry>();
  private readonly allowPrivateUrls: boolean;
  private readonly resolve: ((hostname: string) => Promise<string[]>) | undefined;
  private readonly connectTimeoutMs: number;
  private readonly callTimeoutMs: number;
  private readonly idleMs: number;
  private readonly logger: Logger | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: McpClientPoolOptions = {}) {
    this.allowPrivateUrls = options.allowPrivateUrls ?? false;
    this.resolve = options.resolve;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_MCP_CONNECT_TIMEOUT_MS;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_MCP_CALL_TIMEOUT_MS;
    this.idleMs = options.idleMs ?? DEFAULT_MCP_IDLE_MS;
    this.logger = options.logger;
  }

  /**
   * The server's tools keyed by their MCP names, each call wrapped so a transport failure reads
   * `MCP server "<name>" is unreachable: …`. Throws `McpServerUnreachableError` when the server does not answer.
   */
  async tools(server: McpServer): Promise<ToolSet> {
    const { entry, listed } = await this.list(server);
    return Object.fromEntries(
      Object.entries(listed).map(([name, mcpTool]) => [name, this.wrap(server, entry, name, mcpTool)]),
    );
  }

  /** Connects once, lists the server's tool names and disconnects: the check at agent creation. */
  async probe(server: McpServer): Promise<string[]> {
    let client: MCPClient | undefined;
    try {
      client = await this.connect(server);
      const listed = await withTimeout(client.listTools(), this.connectTimeoutMs, 'listing tools');
      return listed.tools.map((entry) => entry.name);
    } catch (error) {
      throw error instanceof McpServerUnreachableError
        ? error
        : new McpServerUnreachableError(server.name, error);
    } finally {
      await client?.close().catch(() => {});
    }
  }

  /** Closes every client. Later calls of `tools` fail as unreachable. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
    const entries = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(entries.map((entry) => closeClient(entry.client)));
  }

  /** The number of open or opening clients (for tests and metrics). */
  get size(): number {
    return this.clients.size;
  }

  /** The server's client (connecting it if there is none) and its tools as the client made them. */
  private async list(server: McpServer): Promise<{ entry: PoolEntry; listed: ToolSet }> {
    if (this.closed)
      throw new McpServerUnreachableError(server.name, new Error('the MCP client pool is closed'));
    const key = poolKey(server);
    let entry = this.clients.get(key);
    // A client whose connection failed is not reused: a new one connects.
    if (entry?.broken.signal.aborted) {
      await this.evict(key, entry);
      entry = undefined;
    }
    if (!entry) {
      const broken = new AbortController();
      const connecting = this.connect(server, (error) => broken.abort(error));
      const created: PoolEntry = { client: connecting, lastUsedAt: Date.now(), busy: 0, broken };
      this.clients.set(key, created);
      connecting.catch(() => this.evict(key, created));
      this.watchIdle();
      entry = created;
    }
    entry.busy += 1;
    try {
      const client = await entry.client;
      // @ai-sdk/mcp types its tools against its own copy of provider-utils; they are AI SDK tools.
      const listed = (await withTimeout(
        client.tools(),
        this.connectTimeoutMs,
        'listing tools',
      )) as unknown as ToolSet;
      return { entry, listed };
    } catch (error) {
      await this.evict(key, entry);
      throw error instanceof McpServerUnreachableError
        ? error
        : new McpServerUnreachableError(server.name, error);
    } finally {
      entry.busy -= 1;
      entry.lastUsedAt = Date.now();
    }
  }

  /** A client of `server`; `onError` hears of failures outside any request's own answer (a dropped connection). */
  private async connect(server: McpServer, onError?: (error: unknown) => void): Promise<MCPClient> {
    await assertOutboundUrl(server.url, { allowPrivate: this.allowPrivateUrls, resolve: this.resolve });
    return createMCPClient({
      transport: {
        type: 'http',
        url: server.url,
        headers: server.headers,
        redirect: 'error',
        // Checked again on the address each connection dials: the name may resolve elsewhere by then.
        ...(this.allowPrivateUrls ? {} : { fetch: publicOnlyFetch() }),
      },
      clientName: 'outrun',
      initializationOptions: { timeout: this.connectTimeoutMs },
      onUncaughtError: (error) => {
        this.logger?.warn({ err: error, mcpServer: server.name }, 'MCP client error');
        onError?.(error);
      },
    });
  }

  /** Drops `key`'s client, if it is still `only`. */
  private async evict(key: string, only: PoolEntry): Promise<void> {
    if (this.clients.get(key) !== only) return;
    this.clients.delete(key);
    if (this.clients.size === 0) {
      clearInterval(this.idleTimer);
      this.idleTimer = undefined;
    }
    await closeClient(only.client);
  }

  /** Checks for idle clients while any is open, a few times per `idleMs`. */
  private watchIdle(): void {
    if (this.idleTimer) return;
    this.idleTimer = setInterval(
      () => {
        const now = Date.now();
        for (const [key, entry] of this.clients) {
          if (entry.busy === 0 && now - entry.lastUsedAt >= this.idleMs) void this.evict(key, entry);
        }
      },
      Math.max(10, Math.floor(this.idleMs / 4)),
    );
    this.idleTimer.unref();
  }

  private wrap(server: McpServer, listedBy: PoolEntry, name: string, mcpTool: Tool): Tool {
    if (!mcpTool.execute) return mcpTool;
    const key = poolKey(server);
    return {
      ...mcpTool,
      title: `${MCP_TOOL_PREFIX}${server.name}/${name}`,
      execute: async (input, options) => {
        // The client that listed this tool, or, if it was closed since (idle, or a failed call), a new one.
        let entry = listedBy;
        let execute = mcpTool.execute!;
        if (this.clients.get(key) !== listedBy) {
          const current = await this.list(server);
          const tool = current.listed[name];
          if (!tool?.execute) {
            throw new McpServerUnreachableError(server.name, new Error(`the server no longer has ${name}`));
          }
          entry = current.entry;
          execute = tool.execute;
        }
        const timeout = AbortSignal.timeout(this.callTimeoutMs);
        const abortSignal = AbortSignal.any(
          options.abortSignal
            ? [options.abortSignal, timeout, entry.broken.signal]
            : [timeout, entry.broken.signal],
        );
        entry.busy += 1;
        try {
          return await execute(input, { ...options, abortSignal });
        } catch (error) {
          if (options.abortSignal?.aborted) throw error;
          // A slow server, not a broken connection: the client stays for the next call.
          if (timeout.aborted && !entry.broken.signal.aborted) {
            throw new McpServerUnreachableError(
              server.name,
              new Error(`the call to ${name} had no answer within ${this.callTimeoutMs} ms`),
            );
          }
          // A transport failure drops the client, so the next call reconnects.
          void this.evict(key, entry);
          throw new McpServerUnreachableError(
            server.name,
            entry.broken.signal.aborted ? entry.broken.signal.reason : error,
          );
        } finally {
          entry.busy -= 1;
          entry.lastUsedAt = Date.now();
        }
      },
    } as Tool;
  }
}

async function closeClient(client: Promise<MCPClient>): Promise<void> {
  try {
    await (await client).close();
  } catch {
    // A client that never connected has nothing to close.
  }
}

function poolKey(server: McpServer): string {
  const headers = Object.entries(server.headers ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([server.url, headers]);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
