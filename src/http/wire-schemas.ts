import { z } from 'zod';
import { Multitask } from '../protocol/agent.ts';
import { RunErrorCode, RunStatus, RunTrigger } from '../protocol/run.ts';
import { DeliveryStatus, WEBHOOK_EVENTS } from '../protocol/webhook.ts';

/**
 * The JSON objects the API answers with (DESIGN §4), as zod schemas mirroring the types of `src/protocol`.
 * They exist for the OpenAPI description: each is registered under a component name in `wireSchemas`, and
 * `test/openapi.test.ts` validates real responses against the document generated from them, so a drift
 * between these and what the server sends fails a test.
 */
export const wireSchemas = z.registry<{ id: string; description?: string }>();

function named<T extends z.ZodType>(id: string, schema: T, description?: string): T {
  wireSchemas.add(schema, { id, description });
  return schema;
}

const timestamp = z.string().describe('An ISO 8601 timestamp.');
const nullableTimestamp = timestamp.nullable();
const values = <T extends Record<string, string>>(table: T) =>
  Object.values(table) as [T[keyof T], ...T[keyof T][]];

export const ErrorObject = named(
  'Error',
  z.object({
    error: z.looseObject({
      code: z.string().describe('A stable snake_case code, e.g. `invalid_request`, `not_found`.'),
      message: z.string(),
    }),
  }),
  'Every error answer: `{"error": {"code", "message", …details}}`.',
);

export const Usage = named(
  'Usage',
  z.object({
    inputTokens: z.number().optional(),
    outputTokens: z.number().optional(),
    totalTokens: z.number().optional(),
    reasoningTokens: z.number().optional(),
    cachedInputTokens: z.number().optional(),
  }),
);

const PendingApproval = z.object({
  approvalId: z.string(),
  toolCallId: z.string(),
  toolName: z.string(),
  title: z.string().optional(),
  input: z.unknown(),
  approved: z.boolean().optional(),
  reason: z.string().optional(),
});

export const RunWaiting = named(
  'RunWaiting',
  z.discriminatedUnion('reason', [
    z.object({ reason: z.literal('approval'), approvals: z.array(PendingApproval), expiresAt: timestamp }),
    z.object({
      reason: z.literal('budget'),
      exceeded: z.enum(['steps', 'tokens', 'cost', 'duration']),
      usage: Usage,
      budget: z.record(z.string(), z.unknown()),
      expiresAt: timestamp,
    }),
  ]),
);

export const Run = named(
  'Run',
  z.object({
    id: z.string(),
    chatId: z.string(),
    agentId: z.string().nullable(),
    status: z.enum(values(RunStatus)),
    trigger: z.enum(values(RunTrigger)),
    parentRunId: z.string().nullable(),
    scheduleId: z.string().nullable(),
    model: z.string(),
    error: z.object({ code: z.enum(values(RunErrorCode)), message: z.string() }).nullable(),
    waiting: RunWaiting.nullable(),
    stepCount: z.int(),
    usage: Usage.nullable(),
    costUsd: z.number().nullable(),
    attempt: z.int(),
    assistantMessageId: z.string().nullable(),
    stopRequestedAt: nullableTimestamp,
    queuedAt: nullableTimestamp,
    startedAt: nullableTimestamp,
    finishedAt: nullableTimestamp,
    createdAt: timestamp,
    updatedAt: timestamp,
    metadata: z.record(z.string(), z.unknown()).nullable(),
  }),
  'A run: one durable, server-side agent turn (DESIGN §4).',
);

export const Chat = named(
  'Chat',
  z.object({
    id: z.string(),
    agentId: z.string().nullable(),
    title: z.string(),
    createdAt: timestamp,
    updatedAt: timestamp,
  }),
);

/** A part in the AI SDK `UIMessage` part shapes; `type` says which (`text`, `tool-<name>`, `step-start`, …). */
export const MessagePart = named('MessagePart', z.looseObject({ type: z.string() }));

export const Message = named(
  'Message',
  z.object({
    id: z.string(),
    role: z.enum(['user', 'assistant', 'system']),
    parts: z.array(MessagePart),
    status: z.enum(['completed', 'streaming', 'queued', 'error', 'aborted']),
    runId: z.string().nullable(),
    createdAt: timestamp,
    streamSeq: z.int().nullable(),
  }),
);

export const Step = named(
  'Step',
  z.object({
    step: z.int().min(1),
    parts: z.array(MessagePart),
    usage: Usage.nullable(),
    costUsd: z.number().nullable().describe('What the step cost in US dollars; null without a price.'),
    lastSeq: z.int(),
    startedAt: timestamp,
    finishedAt: timestamp,
  }),
);

const JsonRecord = z.record(z.string(), z.unknown());
/** A JSON object whose fields are described in docs/api.md rather than here. */
export const JsonObject = named('JsonObject', JsonRecord);

export const Agent = named(
  'Agent',
  z.object({
    id: z.string(),
    name: z.string(),
    instructions: z.string().nullable(),
    model: z.string().nullable(),
    modelOptions: z.object({
      temperature: z.number().optional(),
      topP: z.number().optional(),
      maxOutputTokens: z.int().optional(),
      providerOptions: z.record(z.string(), JsonRecord).optional(),
    }),
    tools: z.array(z.object({ name: z.string(), needsApproval: z.boolean().optional() })),
    mcpServers: z.array(
      z.object({
        name: z.string(),
        url: z.string(),
        headers: z.record(z.string(), z.string()).optional(),
      }),
    ),
    budget: z.object({
      maxSteps: z.int().optional(),
      maxTokens: z.int().optional(),
      maxCostUsd: z.number().optional(),
      maxDurationMs: z.int().optional(),
      onExceeded: z.enum(['pause', 'abort', 'continue']).optional(),
    }),
    multitask: z.enum(values(Multitask)),
    context: z.object({
      maxTokens: z.int().optional(),
      keepLastTurns: z.int().optional(),
      summarize: z.boolean().optional(),
    }),
    autostart: z.object({ text: z.string() }).nullable(),
    continuation: z.object({ maxRuns: z.int() }).nullable(),
    createdAt: timestamp,
    updatedAt: timestamp,
  }),
);

export const Webhook = named(
  'Webhook',
  z.object({
    id: z.string(),
    url: z.string(),
    events: z.array(z.enum(WEBHOOK_EVENTS)),
    enabled: z.boolean(),
    previousSecretExpiresAt: nullableTimestamp.describe(
      'Until when the secret the last rotation replaced still signs beside the current one; null when none does.',
    ),
    createdAt: timestamp,
  }),
);

export const WebhookDelivery = named(
  'WebhookDelivery',
  z.object({
    id: z.string(),
    webhookId: z.string(),
    runId: z.string().nullable(),
    event: z.string(),
    status: z.enum(values(DeliveryStatus)),
    attempts: z.int(),
    nextAttemptAt: nullableTimestamp,
    lastStatusCode: z.int().nullable(),
    lastError: z.string().nullable(),
    createdAt: timestamp,
    deliveredAt: nullableTimestamp,
    payload: z.unknown(),
  }),
);

export const User = named(
  'User',
  z.object({
    id: z.string(),
    workspaceId: z.string(),
    email: z.string(),
    role: z.enum(['owner', 'admin', 'member']),
    createdAt: timestamp,
  }),
);

export const Workspace = named(
  'Workspace',
  z.object({
    id: z.string(),
    name: z.string(),
    quota: z
      .object({
        tokensPerDay: z.number().optional(),
        costUsdPerDay: z.number().optional(),
        runsPerMinute: z.number().optional(),
      })
      .nullable()
      .optional(),
    createdAt: timestamp,
  }),
);

/** A page of a list: pass `nextCursor` as `cursor` for the next one (null: the last page). */
const page = <T extends z.ZodType>(id: string, item: T) =>
  named(id, z.object({ items: z.array(item), nextCursor: z.string().nullable() }));

export const RunResponse = named('RunResponse', z.object({ run: Run }));
export const RunPage = page('RunPage', Run);
export const LatestRunResponse = named(
  'LatestRunResponse',
  z.object({ run: Run.nullable(), message: Message.nullable() }),
);
export const StopResponse = named(
  'StopResponse',
  z.object({ stopped: z.boolean(), run: Run.nullable(), queuedCancelled: z.int().optional() }),
);
export const StepList = named('StepList', z.object({ items: z.array(Step) }));
export const ChatResponse = named('ChatResponse', z.object({ chat: Chat }));
export const ChatPage = page('ChatPage', Chat);
export const MessagePage = page('MessagePage', Message);
export const AgentResponse = named('AgentResponse', z.object({ agent: Agent }));
export const AgentWriteResponse = named(
  'AgentWriteResponse',
  z.object({ agent: Agent, warnings: z.array(z.string()) }),
  'The agent and warnings about it (a tool that needs a provider key, an unreachable MCP server, …).',
);
export const AgentPage = page('AgentPage', Agent);
export const WebhookResponse = named('WebhookResponse', z.object({ webhook: Webhook }));
export const WebhookCreated = named(
  'WebhookCreated',
  z.object({ webhook: Webhook, secret: z.string().describe('The signing secret, shown only this once.') }),
);
export const WebhookSecretRotated = named(
  'WebhookSecretRotated',
  z.object({
    webhook: Webhook,
    secret: z.string().describe('The new signing secret, shown only this once.'),
  }),
);
export const WebhookPage = page('WebhookPage', Webhook);
export const DeliveryResponse = named('DeliveryResponse', z.object({ delivery: WebhookDelivery }));
export const DeliveryPage = page('DeliveryPage', WebhookDelivery);
export const MeResponse = named('MeResponse', z.object({ user: User, workspace: Workspace }));
export const WorkspaceResponse = named('WorkspaceResponse', z.object({ workspace: Workspace }));
export const UserCreated = named(
  'UserCreated',
  z.object({ user: User, apiKey: z.string().describe('The new user’s API key, shown only this once.') }),
);
export const HealthResponse = named('HealthResponse', z.object({ status: z.literal('ok') }));
export const ReadyResponse = named('ReadyResponse', z.object({ status: z.literal('ready') }));
