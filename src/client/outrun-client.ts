import { isAbortError, OutrunApiError } from './errors.ts';
import { followRunStream, type FollowRunOptions } from './follow-run.ts';
import type { AgentObject } from '../protocol/agent.ts';
import type {
  ApiKeyObject,
  CreatedApiKey,
  CreateTokenOptions,
  ScopedToken,
} from '../protocol/credentials.ts';
import type {
  Chat,
  LatestRun,
  Me,
  Message,
  Page,
  PageOptions,
  RunObject,
  RunStep,
  RunStreamEvent,
  StartRunOptions,
  StopResult,
} from '../protocol/index.ts';
import type {
  ApprovalAnswer,
  ContinueRunOptions,
  CreateScheduleOptions,
  ScheduleObject,
} from '../protocol/schedule.ts';
import type {
  CreatedWebhook,
  CreateWebhookOptions,
  RotatedWebhookSecret,
  UpdateWebhookOptions,
  WebhookDeliveryObject,
  WebhookObject,
} from '../protocol/webhook.ts';
import type { QuotaReport, WorkspaceQuota } from '../protocol/workspace.ts';

/** The fields of an agent a create or an update sends (DESIGN §4 "Agents"). */
export type AgentInput = Partial<Omit<AgentObject, 'id' | 'createdAt' | 'updatedAt'>> & { name?: string };

/** An agent write's answer: the agent, and warnings (such as an MCP server that could not be reached). */
export interface AgentWriteResult {
  agent: AgentObject;
  warnings: string[];
}

export interface OutrunClientOptions {
  /** The server's base URL, such as `http://localhost:3000`. @default '' (same origin, in a browser) */
  baseUrl?: string;
  /**
   * The API key, or a function that returns the current one. Sent as `Authorization: Bearer <key>`. Give
   * this or `auth`.
   */
  apiKey?: string | (() => string | Promise<string>);
  /**
   * The credential, for browsers: a scoped token (`POST /v1/tokens`) or `getToken`, called for the first
   * request and again whenever the server answers 401 (the token expired), after which the request is retried
   * once. `{apiKey}` is the same as the `apiKey` option.
   */
  auth?: OutrunAuth;
  /** The fetch to use. @default globalThis.fetch */
  fetch?: typeof fetch;
}

/** How the client authenticates: an API key, a scoped token, or a callback that fetches a fresh token. */
export type OutrunAuth =
  { apiKey: string } | { token: string } | { getToken: () => string | Promise<string> };

export interface RequestOptions {
  signal?: AbortSignal;
}

/** A typed client for the Outrun HTTP API (DESIGN §4). Every failure is an `OutrunApiError`. */
export interface OutrunClient {
  readonly baseUrl: string;
  me(options?: RequestOptions): Promise<Me>;

  listChats(options?: PageOptions & RequestOptions): Promise<Page<Chat>>;
  /** A new chat; with `agentId`, its runs use that agent (else the workspace default agent). */
  createChat(options?: { title?: string; agentId?: string } & RequestOptions): Promise<Chat>;
  getChat(chatId: string, options?: RequestOptions): Promise<Chat>;
  renameChat(chatId: string, title: string, options?: RequestOptions): Promise<Chat>;
  /** Deletes a chat (stopping its active run first). */
  deleteChat(chatId: string, options?: RequestOptions): Promise<void>;
  /** One page of a chat's messages, oldest first. */
  listMessages(chatId: string, options?: PageOptions & RequestOptions): Promise<Page<Message>>;
  /** All of a chat's messages, oldest first (follows the pages). */
  allMessages(chatId: string, options?: RequestOptions): Promise<Message[]>;

  /** Starts a run; a chat with an active run answers `OutrunApiError` 409 `run_already_active` with `runId`. */
  startRun(chatId: string, options: StartRunOptions & RequestOptions): Promise<RunObject>;
  /** The chat's latest run and the assistant message it projects (the reconnect target). */
  latestRun(chatId: string, options?: RequestOptions): Promise<LatestRun>;
  /** A chat's runs, newest first. */
  listRuns(chatId: string, options?: PageOptions & RequestOptions): Promise<Page<RunObject>>;
  getRun(runId: string, options?: RequestOptions): Promise<RunObject>;
  /** A run's finished steps with their parts, usage and timings, in order. */
  listRunSteps(runId: string, options?: RequestOptions): Promise<RunStep[]>;
  stopRun(runId: string, options?: RequestOptions): Promise<StopResult>;
  /** Stops the chat's active run; with `includeQueued`, its queued runs are cancelled too. */
  stopChat(chatId: string, options?: { includeQueued?: boolean } & RequestOptions): Promise<StopResult>;
  /** Answers one pending tool approval of a `waiting` run; once all are answered, it resumes. */
  answerApproval(runId: string, answer: ApprovalAnswer & RequestOptions): Promise<RunObject>;
  /** Raises a budget-paused run's budget and resumes it. */
  continueRun(runId: string, options: ContinueRunOptions & RequestOptions): Promise<RunObject>;

  /** The workspace's agents. */
  listAgents(options?: PageOptions & RequestOptions): Promise<Page<AgentObject>>;
  getAgent(agentId: string, options?: RequestOptions): Promise<AgentObject>;
  /** Creates an agent (workspace admins only). */
  createAgent(agent: AgentInput & { name: string }, options?: RequestOptions): Promise<AgentWriteResult>;
  /** Replaces the given fields of an agent (workspace admins only). */
  updateAgent(agentId: string, patch: AgentInput, options?: RequestOptions): Promise<AgentWriteResult>;
  /** Archives an agent (workspace admins only): new chats cannot take it; chats that have it keep it. */
  deleteAgent(agentId: string, options?: RequestOptions): Promise<void>;

  /** A chat's schedules. */
  listSchedules(chatId: string, options?: RequestOptions): Promise<ScheduleObject[]>;
  /** A schedule, with when it fires next and what its last fire did. */
  getSchedule(scheduleId: string, options?: RequestOptions): Promise<ScheduleObject>;
  createSchedule(
    chatId: string,
    schedule: CreateScheduleOptions,
    options?: RequestOptions,
  ): Promise<ScheduleObject>;
  /** Changes a schedule: pause or resume it with `enabled`, or change when it fires. */
  updateSchedule(
    scheduleId: string,
    patch: Partial<CreateScheduleOptions>,
    options?: RequestOptions,
  ): Promise<ScheduleObject>;
  deleteSchedule(scheduleId: string, options?: RequestOptions): Promise<void>;

  /**
   * Mints a short-lived token for one of the caller's chats: your backend calls this with its API key and
   * hands the token to a browser, whose client uses `auth: {token}` and reaches only that chat's routes.
   */
  createToken(options: CreateTokenOptions & RequestOptions): Promise<ScopedToken>;

  /** Registers a webhook (workspace admins only); its signing `secret` is returned this once. */
  createWebhook(webhook: CreateWebhookOptions, options?: RequestOptions): Promise<CreatedWebhook>;
  /** The workspace's webhooks, newest first, without their secrets. */
  listWebhooks(options?: PageOptions & RequestOptions): Promise<Page<WebhookObject>>;
  /** A webhook of the workspace, without its secret. */
  getWebhook(webhookId: string, options?: RequestOptions): Promise<WebhookObject>;
  /**
   * Changes a webhook's `url`, `events` or `enabled` (workspace admins only). Disabling it ends its pending
   * deliveries `failed`; `retryDelivery` sends one again once it is enabled.
   */
  updateWebhook(
    webhookId: string,
    patch: UpdateWebhookOptions,
    options?: RequestOptions,
  ): Promise<WebhookObject>;
  /**
   * Gives a webhook a new signing `secret`, returned this once (workspace admins only); the one it replaces
   * signs beside it until `webhook.previousSecretExpiresAt` (24 h).
   */
  rotateWebhookSecret(webhookId: string, options?: RequestOptions): Promise<RotatedWebhookSecret>;
  /**
   * Sends a `delivered` or `failed` delivery again, now, with the same id (workspace admins only); answers the
   * delivery, `pending`. A pending one is a 409 `delivery_pending`, one of a disabled webhook `webhook_disabled`.
   */
  retryDelivery(
    webhookId: string,
    deliveryId: string,
    options?: RequestOptions,
  ): Promise<WebhookDeliveryObject>;
  /** Deletes a webhook (workspace admins only); its pending deliveries end `failed`. */
  deleteWebhook(webhookId: string, options?: RequestOptions): Promise<void>;
  /** A webhook's deliveries, newest first, with their attempts and payloads. */
  listWebhookDeliveries(
    webhookId: string,
    options?: PageOptions & RequestOptions,
  ): Promise<Page<WebhookDeliveryObject>>;

  /** The workspace's quota with today's usage, what is left of it and when the day resets. */
  getQuota(options?: RequestOptions): Promise<QuotaReport>;
  /** Replaces the workspace's quota whole (workspace admins only); null removes every limit. */
  setQuota(quota: WorkspaceQuota | null, options?: RequestOptions): Promise<QuotaReport>;

  /** The caller's API keys, or (workspace admins) those of `userId`; never the keys themselves. */
  listApiKeys(options?: { userId?: string } & RequestOptions): Promise<ApiKeyObject[]>;
  /** A new API key of the caller; `key` is returned this once. */
  createApiKey(options: { name: string } & RequestOptions): Promise<CreatedApiKey>;
  /** Revokes an API key at once on every instance, closing its open streams; answers the revoked key. */
  revokeApiKey(keyId: string, options?: RequestOptions): Promise<ApiKeyObject>;

  /**
   * Follows a run's stream from the event after `after`: yields each event once, reconnects by itself,
   * and ends after the run's last event.
   */
  followRun(runId: string, options?: FollowRunOptions): AsyncGenerator<RunStreamEvent, void, undefined>;
}

/** Creates a client. Works in Node 20+ and in browsers (it only needs `fetch` and streams). */
export function createOutrunClient(options: OutrunClientOptions): OutrunClient {
  const baseUrl = (options.baseUrl ?? '').replace(/\/+$/, '');
  const baseFetch: typeof fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const url = (path: string) => baseUrl + path;
  const auth = options.auth;
  let currentToken: string | undefined;
  const credential = async (refresh = false): Promise<string> => {
    if (auth && 'getToken' in auth) {
      if (refresh || currentToken === undefined) currentToken = await auth.getToken();
      return currentToken;
    }
    if (auth) return 'token' in auth ? auth.token : auth.apiKey;
    if (options.apiKey === undefined) throw new TypeError('createOutrunClient needs `apiKey` or `auth`.');
    return typeof options.apiKey === 'function' ? await options.apiKey() : options.apiKey;
  };
  const headers = async (): Promise<Record<string, string>> => ({
    authorization: `Bearer ${await credential()}`,
  });
  // With `getToken`, a 401 means the token expired: fetch a fresh one and retry once.
  const fetchImpl: typeof fetch =
    auth && 'getToken' in auth
      ? async (input, init = {}) => {
          const response = await baseFetch(input, init);
          if (response.status !== 401) return response;
          await response.body?.cancel().catch(() => undefined);
          const retried = new Headers(init.headers);
          retried.set('authorization', `Bearer ${await credential(true)}`);
          return baseFetch(input, { ...init, headers: retried });
        }
      : baseFetch;

  async function request<T>(
    method: string,
    path: string,
    init: { body?: unknown; query?: Record<string, string | number | undefined>; signal?: AbortSignal } = {},
  ): Promise<T> {
    const requestHeaders = await headers();
    if (init.body !== undefined) requestHeaders['content-type'] = 'application/json';
    let target = url(path);
    const query = Object.entries(init.query ?? {}).filter(([, value]) => value !== undefined);
    if (query.length > 0)
      target += `?${new URLSearchParams(query.map(([k, v]) => [k, String(v)])).toString()}`;
    let response: Response;
    try {
      response = await fetchImpl(target, {
        method,
        headers: requestHeaders,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: init.signal,
      });
    } catch (error) {
      if (isAbortError(error)) throw error;
      throw OutrunApiError.network(error);
    }
    if (!response.ok) throw await OutrunApiError.fromResponse(response);
    if (response.status === 204) return undefined as T;
    try {
      return (await response.json()) as T;
    } catch (error) {
      if (isAbortError(error)) throw error;
      throw new OutrunApiError({
        status: response.status,
        code: 'invalid_response',
        message: 'The server answered with something that is not JSON.',
        cause: error,
      });
    }
  }

  const id = (value: string) => encodeURIComponent(value);
  const page = (options: PageOptions = {}) => ({ limit: options.limit, cursor: options.cursor });

  const client: OutrunClient = {
    baseUrl,
    me: (options = {}) => request<Me>('GET', '/v1/me', options),

    listChats: (options = {}) =>
      request<Page<Chat>>('GET', '/v1/chats', { query: page(options), signal: options.signal }),
    createChat: async (options = {}) =>
      (
        await request<{ chat: Chat }>('POST', '/v1/chats', {
          body: {
            ...(options.title === undefined ? {} : { title: options.title }),
            ...(options.agentId === undefined ? {} : { agentId: options.agentId }),
          },
          signal: options.signal,
        })
      ).chat,
    getChat: async (chatId, options = {}) =>
      (await request<{ chat: Chat }>('GET', `/v1/chats/${id(chatId)}`, options)).chat,
    renameChat: async (chatId, title, options = {}) =>
      (
        await request<{ chat: Chat }>('PATCH', `/v1/chats/${id(chatId)}`, {
          body: { title },
          signal: options.signal,
        })
      ).chat,
    deleteChat: (chatId, options = {}) => request<void>('DELETE', `/v1/chats/${id(chatId)}`, options),
    listMessages: (chatId, options = {}) =>
      request<Page<Message>>('GET', `/v1/chats/${id(chatId)}/messages`, {
        query: page(options),
        signal: options.signal,
      }),
    async allMessages(chatId, options = {}) {
      const messages: Message[] = [];
      let cursor: string | undefined;
      do {
        const result = await client.listMessages(chatId, { limit: 500, cursor, signal: options.signal });
        messages.push(...result.items);
        cursor = result.nextCursor ?? undefined;
      } while (cursor);
      return messages;
    },

    startRun: async (chatId, { signal, ...body }) =>
      (await request<{ run: RunObject }>('POST', `/v1/chats/${id(chatId)}/runs`, { body, signal })).run,
    latestRun: (chatId, options = {}) =>
      request<LatestRun>('GET', `/v1/chats/${id(chatId)}/runs/latest`, options),
    listRuns: (chatId, options = {}) =>
      request<Page<RunObject>>('GET', `/v1/chats/${id(chatId)}/runs`, {
        query: page(options),
        signal: options.signal,
      }),
    getRun: async (runId, options = {}) =>
      (await request<{ run: RunObject }>('GET', `/v1/runs/${id(runId)}`, options)).run,
    listRunSteps: async (runId, options = {}) =>
      (await request<{ items: RunStep[] }>('GET', `/v1/runs/${id(runId)}/steps`, options)).items,
    stopRun: (runId, options = {}) => request<StopResult>('POST', `/v1/runs/${id(runId)}/stop`, options),
    stopChat: (chatId, { signal, includeQueued } = {}) =>
      request<StopResult>('POST', `/v1/chats/${id(chatId)}/stop`, {
        body: includeQueued ? { includeQueued } : undefined,
        signal,
      }),
    answerApproval: async (runId, { signal, ...body }) =>
      (await request<{ run: RunObject }>('POST', `/v1/runs/${id(runId)}/approvals`, { body, signal })).run,
    continueRun: async (runId, { signal, ...body }) =>
      (await request<{ run: RunObject }>('POST', `/v1/runs/${id(runId)}/continue`, { body, signal })).run,

    listAgents: (options = {}) =>
      request<Page<AgentObject>>('GET', '/v1/agents', { query: page(options), signal: options.signal }),
    getAgent: async (agentId, options = {}) =>
      (await request<{ agent: AgentObject }>('GET', `/v1/agents/${id(agentId)}`, options)).agent,
    createAgent: (agent, options = {}) =>
      request<AgentWriteResult>('POST', '/v1/agents', { body: agent, signal: options.signal }),
    updateAgent: (agentId, patch, options = {}) =>
      request<AgentWriteResult>('PATCH', `/v1/agents/${id(agentId)}`, {
        body: patch,
        signal: options.signal,
      }),
    deleteAgent: (agentId, options = {}) => request<void>('DELETE', `/v1/agents/${id(agentId)}`, options),

    listSchedules: async (chatId, options = {}) =>
      (await request<{ items: ScheduleObject[] }>('GET', `/v1/chats/${id(chatId)}/schedules`, options)).items,
    getSchedule: async (scheduleId, options = {}) =>
      (await request<{ schedule: ScheduleObject }>('GET', `/v1/schedules/${id(scheduleId)}`, options))
        .schedule,
    createSchedule: async (chatId, schedule, options = {}) =>
      (
        await request<{ schedule: ScheduleObject }>('POST', `/v1/chats/${id(chatId)}/schedules`, {
          body: schedule,
          signal: options.signal,
        })
      ).schedule,
    updateSchedule: async (scheduleId, patch, options = {}) =>
      (
        await request<{ schedule: ScheduleObject }>('PATCH', `/v1/schedules/${id(scheduleId)}`, {
          body: patch,
          signal: options.signal,
        })
      ).schedule,
    deleteSchedule: (scheduleId, options = {}) =>
      request<void>('DELETE', `/v1/schedules/${id(scheduleId)}`, options),

    createToken: ({ signal, ...body }) => request<ScopedToken>('POST', '/v1/tokens', { body, signal }),

    createWebhook: (webhook, options = {}) =>
      request<CreatedWebhook>('POST', '/v1/webhooks', { body: webhook, signal: options.signal }),
    listWebhooks: (options = {}) =>
      request<Page<WebhookObject>>('GET', '/v1/webhooks', { query: page(options), signal: options.signal }),
    getWebhook: async (webhookId, options = {}) =>
      (await request<{ webhook: WebhookObject }>('GET', `/v1/webhooks/${id(webhookId)}`, options)).webhook,
    updateWebhook: async (webhookId, patch, options = {}) =>
      (
        await request<{ webhook: WebhookObject }>('PATCH', `/v1/webhooks/${id(webhookId)}`, {
          body: patch,
          signal: options.signal,
        })
      ).webhook,
    rotateWebhookSecret: (webhookId, options = {}) =>
      request<RotatedWebhookSecret>('POST', `/v1/webhooks/${id(webhookId)}/rotate-secret`, options),
    retryDelivery: async (webhookId, deliveryId, options = {}) =>
      (
        await request<{ delivery: WebhookDeliveryObject }>(
          'POST',
          `/v1/webhooks/${id(webhookId)}/deliveries/${id(deliveryId)}/retry`,
          options,
        )
      ).delivery,
    deleteWebhook: (webhookId, options = {}) =>
      request<void>('DELETE', `/v1/webhooks/${id(webhookId)}`, options),
    listWebhookDeliveries: (webhookId, options = {}) =>
      request<Page<WebhookDeliveryObject>>('GET', `/v1/webhooks/${id(webhookId)}/deliveries`, {
        query: page(options),
        signal: options.signal,
      }),

    getQuota: (options = {}) => request<QuotaReport>('GET', '/v1/workspaces/current/quota', options),
    setQuota: (quota, options = {}) =>
      request<QuotaReport>('PATCH', '/v1/workspaces/current/quota', {
        body: { quota },
        signal: options.signal,
      }),

    listApiKeys: async ({ signal, userId } = {}) =>
      (await request<{ items: ApiKeyObject[] }>('GET', '/v1/api-keys', { query: { userId }, signal })).items,
    createApiKey: ({ signal, ...body }) => request<CreatedApiKey>('POST', '/v1/api-keys', { body, signal }),
    revokeApiKey: async (keyId, options = {}) =>
      (await request<{ apiKey: ApiKeyObject }>('DELETE', `/v1/api-keys/${id(keyId)}`, options)).apiKey,

    followRun: (runId, followOptions) =>
      followRunStream({ url, headers, fetch: fetchImpl }, runId, followOptions),
  };
  return client;
}
