import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { isStreamRoute } from '../auth/token-scope.ts';
import { CreateAgentBody, UpdateAgentBody } from '../agents/agent-schema.ts';
import { CreateUserBody, CreateWorkspaceBody, UpdateWorkspaceBody } from './routes/admin-routes.ts';
import { ApiKeyListQuery, CreateApiKeyBody } from './routes/api-key-routes.ts';
import { UpdateQuotaBody } from './routes/quota-routes.ts';
import { CreateScheduleBody, UpdateScheduleBody } from './routes/schedule-routes.ts';
import { CreateTokenBody } from './routes/token-routes.ts';
import { AgentListQuery } from './routes/agent-routes.ts';
import { UseChatBody } from './routes/ai-sdk-routes.ts';
import { ChatListQuery, CreateChatBody, MessageListQuery, UpdateChatBody } from './routes/chat-routes.ts';
import {
  ApprovalBody,
  ContinueBody,
  RunListQuery,
  StartRunBody,
  StopChatBody,
  StreamQuery,
} from './routes/run-routes.ts';
import {
  CreateWebhookBody,
  DeliveryListQuery,
  UpdateWebhookBody,
  WebhookListQuery,
} from './routes/webhook-routes.ts';
import * as wire from './wire-schemas.ts';

/** The HTTP methods the API uses. */
type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

/** An answer of a route: its description and, for a JSON body, the wire schema it has. */
interface ResponseDoc {
  description: string;
  schema?: z.ZodType;
  /** @default 'application/json' (when `schema` is set) */
  contentType?: 'application/json' | 'text/event-stream' | 'text/plain';
}

/** One route of the API as the OpenAPI document describes it. */
export interface RouteDoc {
  method: Method;
  /** The path as Fastify registers it (`/v1/chats/:chatId`). */
  path: string;
  summary: string;
  tags: string[];
  /** Whether the route needs `Authorization: Bearer …`. @default true for `/v1` routes */
  auth?: boolean;
  /** The zod schema the route validates its JSON body with. */
  body?: z.ZodType;
  /** The zod object the route validates its query string with. */
  query?: z.ZodObject;
  /** The route takes an `Idempotency-Key` header. */
  idempotent?: boolean;
  responses: Record<number, ResponseDoc>;
  /** Error statuses the route can answer with, besides the ones derived from the rest (400, 401, 404, …). */
  errors?: number[];
}

const json = (description: string, schema: z.ZodType): ResponseDoc => ({ description, schema });
const noContent: ResponseDoc = { description: 'Done; no body.' };
const eventStream = (description: string): ResponseDoc => ({ description, contentType: 'text/event-stream' });

/** Every route of the server, with the zod schemas that validate its input and describe its answers. */
export const ROUTES: RouteDoc[] = [
  {
    method: 'PATCH',
    path: '/v1/admin/workspaces/:workspaceId',
    summary: 'Rename a workspace or set its quota (instance owner).',
    tags: ['admin'],
    body: UpdateWorkspaceBody,
    responses: { 200: json('The workspace.', wire.WorkspaceResponse) },
    errors: [403],
  },
  {
    method: 'DELETE',
    path: '/v1/admin/users/:userId',
    summary: 'Remove a user of your workspace; their keys are revoked and their streams closed.',
    tags: ['admin'],
    responses: { 204: noContent },
    errors: [403],
  },
  {
    method: 'GET',
    path: '/v1/api-keys',
    summary: 'List your API keys (an admin: `?userId=` of their workspace); never the secrets.',
    tags: ['keys'],
    query: ApiKeyListQuery,
    responses: { 200: json('The keys.', wire.JsonObject) },
  },
  {
    method: 'POST',
    path: '/v1/api-keys',
    summary: 'Create a named API key; the key is shown once.',
    tags: ['keys'],
    body: CreateApiKeyBody,
    responses: { 201: json('The key and its secret.', wire.JsonObject) },
  },
  {
    method: 'DELETE',
    path: '/v1/api-keys/:keyId',
    summary: 'Revoke a key at once on every instance, closing its open streams.',
    tags: ['keys'],
    responses: { 200: json('The revoked key.', wire.JsonObject) },
  },
  {
    method: 'POST',
    path: '/v1/tokens',
    summary: 'A short-lived token for one chat (`read` or `write`), for browsers.',
    tags: ['keys'],
    body: CreateTokenBody,
    responses: { 201: json('The token and when it expires.', wire.JsonObject) },
    errors: [403],
  },
  {
    method: 'GET',
    path: '/v1/workspaces/current/quota',
    summary: 'The workspace’s quota with today’s usage.',
    tags: ['admin'],
    responses: { 200: json('The quota and usage.', wire.JsonObject) },
  },
  {
    method: 'PATCH',
    path: '/v1/workspaces/current/quota',
    summary: 'Set or remove the workspace’s quota (workspace admin).',
    tags: ['admin'],
    body: UpdateQuotaBody,
    responses: { 200: json('The quota and usage.', wire.JsonObject) },
    errors: [403],
  },
  {
    method: 'POST',
    path: '/v1/chats/:chatId/schedules',
    summary: 'Schedule runs of a chat: a cron with time zone, or a one-shot `at`.',
    tags: ['schedules'],
    body: CreateScheduleBody,
    responses: { 201: json('The schedule.', wire.JsonObject) },
  },
  {
    method: 'GET',
    path: '/v1/chats/:chatId/schedules',
    summary: 'List a chat’s schedules.',
    tags: ['schedules'],
    responses: { 200: json('The schedules.', wire.JsonObject) },
  },
  {
    method: 'GET',
    path: '/v1/schedules/:scheduleId',
    summary: 'Get a schedule.',
    tags: ['schedules'],
    responses: { 200: json('The schedule.', wire.JsonObject) },
  },
  {
    method: 'PATCH',
    path: '/v1/schedules/:scheduleId',
    summary: 'Change a schedule: timing, input, multitask, enabled.',
    tags: ['schedules'],
    body: UpdateScheduleBody,
    responses: { 200: json('The schedule.', wire.JsonObject) },
  },
  {
    method: 'DELETE',
    path: '/v1/schedules/:scheduleId',
    summary: 'Delete a schedule.',
    tags: ['schedules'],
    responses: { 204: noContent },
  },
  {
    method: 'GET',
    path: '/healthz',
    summary: 'Liveness: the process answers.',
    tags: ['operations'],
    auth: false,
    responses: { 200: json('Alive.', wire.HealthResponse) },
  },
  {
    method: 'GET',
    path: '/readyz',
    summary: 'Readiness: the database answers and the server is not shutting down.',
    tags: ['operations'],
    auth: false,
    responses: { 200: json('Ready for traffic.', wire.ReadyResponse) },
    errors: [503],
  },
  {
    method: 'GET',
    path: '/metrics',
    summary: 'Prometheus metrics of this instance.',
    tags: ['operations'],
    auth: false,
    responses: { 200: { description: 'Prometheus text exposition format.', contentType: 'text/plain' } },
  },
  {
    method: 'GET',
    path: '/openapi.json',
    summary: 'This OpenAPI 3.1 description.',
    tags: ['operations'],
    auth: false,
    responses: { 200: json('The OpenAPI document.', wire.JsonObject) },
  },
  {
    method: 'GET',
    path: '/v1/me',
    summary: 'The caller: the user behind the key and their workspace.',
    tags: ['identity'],
    responses: { 200: json('The caller.', wire.MeResponse) },
  },
  {
    method: 'POST',
    path: '/v1/admin/workspaces',
    summary: 'Create a workspace.',
    tags: ['identity'],
    body: CreateWorkspaceBody,
    responses: { 201: json('The new workspace.', wire.WorkspaceResponse) },
    errors: [403],
  },
  {
    method: 'POST',
    path: '/v1/admin/users',
    summary: 'Create a user with an API key (shown once).',
    tags: ['identity'],
    body: CreateUserBody,
    responses: { 201: json('The new user and their key.', wire.UserCreated) },
    errors: [403, 404],
  },
  {
    method: 'POST',
    path: '/v1/agents',
    summary: 'Create an agent (workspace admins).',
    tags: ['agents'],
    body: CreateAgentBody,
    responses: { 201: json('The new agent.', wire.AgentWriteResponse) },
    errors: [403],
  },
  {
    method: 'GET',
    path: '/v1/agents',
    summary: 'List the workspace’s agents.',
    tags: ['agents'],
    query: AgentListQuery,
    responses: { 200: json('A page of agents.', wire.AgentPage) },
  },
  {
    method: 'GET',
    path: '/v1/agents/:agentId',
    summary: 'Get an agent.',
    tags: ['agents'],
    responses: { 200: json('The agent.', wire.AgentResponse) },
  },
  {
    method: 'PATCH',
    path: '/v1/agents/:agentId',
    summary: 'Change an agent; each given field replaces the stored one (workspace admins).',
    tags: ['agents'],
    body: UpdateAgentBody,
    responses: { 200: json('The changed agent.', wire.AgentWriteResponse) },
    errors: [403],
  },
  {
    method: 'DELETE',
    path: '/v1/agents/:agentId',
    summary: 'Archive an agent (workspace admins).',
    tags: ['agents'],
    responses: { 204: noContent },
    errors: [403],
  },
  {
    method: 'POST',
    path: '/v1/chats',
    summary: 'Create a chat (with an `autostart` agent, its first run starts at once).',
    tags: ['chats'],
    body: CreateChatBody,
    idempotent: true,
    responses: { 201: json('The new chat.', wire.ChatResponse) },
    errors: [404],
  },
  {
    method: 'GET',
    path: '/v1/chats',
    summary: 'List the caller’s chats, newest first.',
    tags: ['chats'],
    query: ChatListQuery,
    responses: { 200: json('A page of chats.', wire.ChatPage) },
  },
  {
    method: 'GET',
    path: '/v1/chats/:chatId',
    summary: 'Get a chat.',
    tags: ['chats'],
    responses: { 200: json('The chat.', wire.ChatResponse) },
  },
  {
    method: 'PATCH',
    path: '/v1/chats/:chatId',
    summary: 'Rename a chat.',
    tags: ['chats'],
    body: UpdateChatBody,
    responses: { 200: json('The renamed chat.', wire.ChatResponse) },
  },
  {
    method: 'DELETE',
    path: '/v1/chats/:chatId',
    summary: 'Delete a chat; its active run is stopped.',
    tags: ['chats'],
    responses: { 204: noContent },
  },
  {
    method: 'GET',
    path: '/v1/chats/:chatId/messages',
    summary: 'List a chat’s messages, oldest first.',
    tags: ['chats'],
    query: MessageListQuery,
    responses: { 200: json('A page of messages.', wire.MessagePage) },
  },
  {
    method: 'POST',
    path: '/v1/chats/:chatId/runs',
    summary: 'Start a run; with `Accept: text/event-stream` the answer is its stream from event 1.',
    tags: ['runs'],
    body: StartRunBody,
    idempotent: true,
    responses: {
      200: eventStream('With `Accept: text/event-stream`: the new run’s stream from event 1.'),
      201: json('The new run.', wire.RunResponse),
    },
    errors: [409],
  },
  {
    method: 'GET',
    path: '/v1/chats/:chatId/runs',
    summary: 'List a chat’s runs, newest first.',
    tags: ['runs'],
    query: RunListQuery,
    responses: { 200: json('A page of runs.', wire.RunPage) },
  },
  {
    method: 'GET',
    path: '/v1/chats/:chatId/runs/latest',
    summary: 'The chat’s latest run and its assistant message (the reconnect target).',
    tags: ['runs'],
    responses: { 200: json('The latest run, or nulls.', wire.LatestRunResponse) },
  },
  {
    method: 'POST',
    path: '/v1/chats/:chatId/stop',
    summary: 'Stop the chat’s active run (and, with `includeQueued`, its queued runs).',
    tags: ['runs'],
    body: StopChatBody,
    responses: { 200: json('What was stopped.', wire.StopResponse) },
  },
  {
    method: 'GET',
    path: '/v1/runs/:runId',
    summary: 'Get a run.',
    tags: ['runs'],
    responses: { 200: json('The run.', wire.RunResponse) },
  },
  {
    method: 'POST',
    path: '/v1/runs/:runId/stop',
    summary: 'Stop a run, from any instance.',
    tags: ['runs'],
    responses: { 200: json('Whether it was stopped, and the run.', wire.StopResponse) },
  },
  {
    method: 'POST',
    path: '/v1/runs/:runId/approvals',
    summary: 'Answer one pending tool approval of a waiting run; once all are answered the run resumes.',
    tags: ['runs'],
    body: ApprovalBody,
    responses: { 200: json('The run.', wire.RunResponse) },
    errors: [409],
  },
  {
    method: 'POST',
    path: '/v1/runs/:runId/continue',
    summary: 'Raise the budget of a run its budget paused, and resume it.',
    tags: ['runs'],
    body: ContinueBody,
    responses: { 200: json('The run.', wire.RunResponse) },
    errors: [409],
  },
  {
    method: 'GET',
    path: '/v1/runs/:runId/stream',
    summary:
      'Follow a run (Server-Sent Events): `id: <seq>` and `data: <chunk>`; resume with `Last-Event-ID` or `?after=`.',
    tags: ['runs'],
    query: StreamQuery,
    responses: { 200: eventStream('The run’s events from the one after the cursor, then `[DONE]`.') },
    errors: [410],
  },
  {
    method: 'GET',
    path: '/v1/runs/:runId/steps',
    summary: 'A run’s finished steps.',
    tags: ['runs'],
    responses: { 200: json('The steps, in order.', wire.StepList) },
  },
  {
    method: 'POST',
    path: '/v1/ui/chats',
    summary:
      'AI SDK `useChat` (`DefaultChatTransport`): start a run for the last user message and stream it.',
    tags: ['ai-sdk'],
    body: UseChatBody,
    idempotent: true,
    responses: {
      200: eventStream('The run as an AI SDK UI message stream (`data-run` chunks are transient).'),
      201: json('A replayed idempotent request: the run it started.', wire.RunResponse),
    },
    errors: [409],
  },
  {
    method: 'GET',
    path: '/v1/ui/chats/:chatId/stream',
    summary: 'AI SDK `useChat` resume: the active run’s stream, or 204 when none is active.',
    tags: ['ai-sdk'],
    responses: {
      200: eventStream('The active run’s stream from its first event.'),
      204: { description: 'The chat has no active run.' },
    },
  },
  {
    method: 'POST',
    path: '/v1/webhooks',
    summary: 'Register a webhook (workspace admins); the signing secret is shown once.',
    tags: ['webhooks'],
    body: CreateWebhookBody,
    responses: { 201: json('The webhook and its secret.', wire.WebhookCreated) },
    errors: [403],
  },
  {
    method: 'GET',
    path: '/v1/webhooks',
    summary: 'List the workspace’s webhooks (workspace admins).',
    tags: ['webhooks'],
    query: WebhookListQuery,
    responses: { 200: json('A page of webhooks.', wire.WebhookPage) },
    errors: [403],
  },
  {
    method: 'GET',
    path: '/v1/webhooks/:webhookId',
    summary: 'Get a webhook (workspace admins).',
    tags: ['webhooks'],
    responses: { 200: json('The webhook.', wire.WebhookResponse) },
    errors: [403],
  },
  {
    method: 'PATCH',
    path: '/v1/webhooks/:webhookId',
    summary:
      'Change a webhook’s `url`, `events` or `enabled` (workspace admins); disabling it ends its pending ' +
      'deliveries `failed`.',
    tags: ['webhooks'],
    body: UpdateWebhookBody,
    responses: { 200: json('The webhook.', wire.WebhookResponse) },
    errors: [403],
  },
  {
    method: 'POST',
    path: '/v1/webhooks/:webhookId/rotate-secret',
    summary:
      'A new signing secret, shown once (workspace admins); the one it replaces signs beside it for 24 h.',
    tags: ['webhooks'],
    responses: { 200: json('The webhook and its new secret.', wire.WebhookSecretRotated) },
    errors: [403],
  },
  {
    method: 'POST',
    path: '/v1/webhooks/:webhookId/deliveries/:deliveryId/retry',
    summary:
      'Send a delivered or failed delivery again, now, with the same id and a fresh retry schedule ' +
      '(workspace admins); `409 delivery_pending` while it is pending, `409 webhook_disabled` for a disabled webhook.',
    tags: ['webhooks'],
    responses: { 200: json('The delivery, pending.', wire.DeliveryResponse) },
    errors: [403, 409],
  },
  {
    method: 'DELETE',
    path: '/v1/webhooks/:webhookId',
    summary: 'Delete a webhook (workspace admins).',
    tags: ['webhooks'],
    responses: { 204: noContent },
    errors: [403],
  },
  {
    method: 'GET',
    path: '/v1/webhooks/:webhookId/deliveries',
    summary:
      'A webhook’s deliveries, newest first: every pending one, and the finished ones of the last ' +
      '`OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS` (30) days.',
    tags: ['webhooks'],
    query: DeliveryListQuery,
    responses: { 200: json('A page of deliveries.', wire.DeliveryPage) },
    errors: [403],
  },
];

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400:
    'Invalid input (`invalid_request`, `invalid_json`, `invalid_id`, `invalid_cursor`, `model_unavailable`); ' +
    'on every `/v1` route, a query parameter the route does not take.',
  401: 'No, unknown or revoked API key (`unauthorized`).',
  403: 'The key’s role may not do this (`forbidden`).',
  404: 'Not found, or not the caller’s (`not_found`).',
  409:
    'Conflict: the chat already has an active run (`run_already_active`, with `runId`), or the resource is not ' +
    'in a state that allows this (`run_not_waiting`, `delivery_pending`, `webhook_disabled`, …).',
  410: 'The run’s events were deleted past `OUTRUN_EVENT_RETENTION_DAYS` (`events_expired`, with `deletedAt`).',
  413: 'The body is larger than the limit (`body_too_large`).',
  414: 'A path segment over 100 characters (`uri_too_long`).',
  415: 'The body is not JSON (`unsupported_media_type`).',
  422: 'The `Idempotency-Key` was used with a different request (`idempotency_key_reused`).',
  429: 'Rate limit or quota reached (`rate_limited`, `quota_exceeded`); see `Retry-After`.',
  503: 'The database (or Redis) is unavailable, or the server is shutting down; see `Retry-After`.',
};

const ID_KINDS: Record<string, string> = {
  chatId: 'chat',
  runId: 'run',
  agentId: 'agent',
  webhookId: 'webhook',
  deliveryId: 'webhook delivery',
  userId: 'user',
  scheduleId: 'schedule',
  keyId: 'API key',
  id: 'object',
};

const COMPONENT_PREFIX = '#/components/schemas/';
type JsonSchema = Record<string, unknown>;

/** The JSON Schema (2020-12, as OpenAPI 3.1 uses) of a request schema: what a client may send. */
function inputSchema(schema: z.ZodType): JsonSchema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, {
    target: 'draft-2020-12',
    io: 'input',
    unrepresentable: 'any',
  }) as JsonSchema;
  return rest;
}

/** The `$ref` to a registered wire schema. */
function wireRef(schema: z.ZodType): JsonSchema {
  const meta = wire.wireSchemas.get(schema);
  if (!meta) throw new Error('A response schema must be registered in wireSchemas.');
  return { $ref: `${COMPONENT_PREFIX}${meta.id}` };
}

function components(): Record<string, JsonSchema> {
  const generated = z.toJSONSchema(wire.wireSchemas, {
    target: 'draft-2020-12',
    uri: (id) => `${COMPONENT_PREFIX}${id}`,
    unrepresentable: 'any',
  }) as { schemas: Record<string, JsonSchema> };
  return Object.fromEntries(
    Object.entries(generated.schemas).map(([id, { $schema: _dialect, $id: _id, ...rest }]) => [id, rest]),
  );
}

/** `/v1/chats/:chatId` → `/v1/chats/{chatId}`. */
export function toOpenApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function operation(route: RouteDoc): JsonSchema {
  const auth = route.auth ?? route.path.startsWith('/v1/');
  const pathParams = [...route.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => match[1]!);
  const parameters: JsonSchema[] = pathParams.map((name) => ({
    name,
    in: 'path',
    required: true,
    description: `The ${ID_KINDS[name] ?? name} id.`,
    schema: { type: 'string' },
  }));
  for (const [name, field] of Object.entries(route.query?.shape ?? {})) {
    parameters.push({
      name,
      in: 'query',
      required: !(field as z.ZodType).safeParse(undefined).success,
      schema: inputSchema(field as z.ZodType),
    });
  }
  if (isStreamRoute(route.method, route.path)) {
    parameters.push({
      name: 'access_token',
      in: 'query',
      required: false,
      description:
        'A scoped token, for `EventSource`, which cannot send `Authorization` (stream routes only).',
      schema: { type: 'string' },
    });
  }
  if (route.idempotent) {
    parameters.push({
      name: 'Idempotency-Key',
      in: 'header',
      required: false,
      description: 'A retried request with the same key answers with the first one’s result.',
      schema: { type: 'string', maxLength: 255 },
    });
  }
  if (route.path.endsWith('/stream')) {
    parameters.push({
      name: 'Last-Event-ID',
      in: 'header',
      required: false,
      description: 'Resume after this event sequence number (wins over `?after=`).',
      schema: { type: 'string', pattern: '^\\d+$' },
    });
  }

  const responses: Record<string, JsonSchema> = {};
  for (const [status, response] of Object.entries(route.responses)) {
    const contentType = response.contentType ?? (response.schema ? 'application/json' : undefined);
    const content: JsonSchema = {};
    if (contentType === 'application/json') content[contentType] = { schema: wireRef(response.schema!) };
    else if (contentType) content[contentType] = { schema: { type: 'string' } };
    responses[status] = {
      description: response.description,
      ...(Object.keys(content).length ? { content } : {}),
    };
  }
  const errors = new Set(route.errors ?? []);
  // Every `/v1` route refuses unknown query parameters and counts toward the caller's rate limit.
  if (auth) [400, 401, 429, 503].forEach((status) => errors.add(status));
  if (pathParams.length || route.query || route.body) errors.add(400);
  if (pathParams.length) [404, 414].forEach((status) => errors.add(status));
  if (route.body) [400, 413, 415].forEach((status) => errors.add(status));
  if (route.idempotent) errors.add(422);
  for (const status of [...errors].sort()) {
    responses[String(status)] = {
      description: ERROR_DESCRIPTIONS[status] ?? 'An error.',
      content: { 'application/json': { schema: wireRef(wire.ErrorObject) } },
    };
  }

  const result: JsonSchema = {
    operationId: operationId(route),
    summary: route.summary,
    tags: route.tags,
    parameters,
    responses,
  };
  if (!auth) result.security = [];
  if (route.body) {
    result.requestBody = {
      required: !route.body.safeParse(undefined).success,
      content: { 'application/json': { schema: inputSchema(route.body) } },
    };
  }
  return result;
}

function operationId(route: RouteDoc): string {
  const words = route.path
    .replace(/^\/v1\//, '/')
    .split(/[/.-]/)
    .filter(Boolean)
    .map((segment) => (segment.startsWith(':') ? `by ${segment.slice(1)}` : segment))
    .join(' ')
    .split(' ');
  const camel = words.map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join('');
  return `${route.method.toLowerCase()}${camel}`;
}

/** The OpenAPI 3.1 document of the API, generated from the route table and the zod schemas. */
export function buildOpenApiDocument(options: { version?: string } = {}): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of ROUTES) {
    const path = toOpenApiPath(route.path);
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = operation(route);
  }
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'Outrun API',
      version: options.version ?? '1',
      description:
        'Durable, server-side AI agent runs. Every `/v1` route needs `Authorization: Bearer <API key>`. ' +
        'Errors are `{"error": {"code", "message", …details}}`.',
    },
    security: [{ bearer: [] }],
    tags: ['operations', 'identity', 'agents', 'chats', 'runs', 'ai-sdk', 'webhooks'].map((name) => ({
      name,
    })),
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An Outrun API key.' } },
      schemas: components(),
    },
  };
}

/** The query parameters of each `/v1` route, by `METHOD /pattern`: its query schema's, and `access_token`. */
const QUERY_PARAMETERS = new Map(
  ROUTES.filter((route) => route.path.startsWith('/v1/')).map((route) => [
    `${route.method} ${route.path}`,
    new Set([
      ...Object.keys(route.query?.shape ?? {}),
      ...(isStreamRoute(route.method, route.path) ? ['access_token'] : []),
    ]),
  ]),
);

/**
 * The query parameters a `/v1` route takes (`HEAD` as its `GET`), or `undefined` for a route outside the API
 * (the web app, the operations endpoints), whose query strings are not checked.
 */
export function queryParametersOf(method: string, url: string | undefined): ReadonlySet<string> | undefined {
  return QUERY_PARAMETERS.get(`${method === 'HEAD' ? 'GET' : method} ${url ?? ''}`);
}

/** The `/v1` routes that take no JSON body, by `METHOD /pattern`. */
const ROUTES_WITHOUT_BODY = new Set(
  ROUTES.filter((route) => route.path.startsWith('/v1/') && !route.body).map(
    (route) => `${route.method} ${route.path}`,
  ),
);

/**
 * Whether a `/v1` route takes no JSON body: such a route refuses a body with fields, as a route with a body
 * schema refuses a field it does not know. False for a route outside the API.
 */
export function takesNoBody(method: string, url: string | undefined): boolean {
  return ROUTES_WITHOUT_BODY.has(`${method} ${url ?? ''}`);
}

/** A route as Fastify registered it. */
export interface RegisteredRoute {
  method: string;
  path: string;
}

const registered = new WeakMap<FastifyInstance, RegisteredRoute[]>();

/**
 * Records every route registered on `app` from now on (call it before registering routes), so a test can
 * compare the server's routes with the document's.
 */
export function trackRoutes(app: FastifyInstance): void {
  const routes: RegisteredRoute[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, path: route.url });
  });
}

/** The routes `trackRoutes` saw on `app`. */
export function registeredRoutes(app: FastifyInstance): RegisteredRoute[] {
  return [...(registered.get(app) ?? [])];
}

/** Serves the document at `GET /openapi.json`, without auth; built once, on the first request. */
export function registerOpenApiRoute(app: FastifyInstance): void {
  let document: JsonSchema | undefined;
  app.get('/openapi.json', async () => (document ??= buildOpenApiDocument()));
}
