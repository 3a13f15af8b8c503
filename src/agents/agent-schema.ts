import { z } from 'zod';
import { urlHasCredentials } from '../net/outbound-url.ts';
import { Multitask } from '../protocol/agent.ts';

/** Upper bounds of an agent definition, so one agent cannot make every run start slow or huge. */
export const AGENT_LIMITS = {
  nameChars: 200,
  instructionsChars: 100_000,
  tools: 128,
  mcpServers: 16,
  headers: 32,
  autostartChars: 100_000,
  continuationRuns: 1000,
} as const;

const positiveInt = z.int().positive();

export const ModelOptionsSchema = z
  .object({
    temperature: z.number().min(0).max(2).optional(),
    topP: z.number().min(0).max(1).optional(),
    maxOutputTokens: positiveInt.optional(),
    providerOptions: z.record(z.string(), z.record(z.string(), z.json())).optional(),
  })
  .strict();

export const AgentToolSchema = z
  .object({
    name: z.string().min(1).max(300),
    needsApproval: z.boolean().optional(),
  })
  .strict();

/** A server name is part of tool names (`mcp:<server>/<tool>`), so it keeps to identifier characters. */
export const MCP_SERVER_NAME = /^[A-Za-z0-9_-]{1,32}$/;

export const McpServerSchema = z
  .object({
    name: z.string().regex(MCP_SERVER_NAME, 'use 1-32 letters, digits, "_" or "-"'),
    url: z
      .string()
      .min(1)
      .max(2000)
      // Headers are kept secret (shown redacted); a URL is shown as it is, so it must not carry a secret.
      .refine((url) => !urlHasCredentials(url), {
        message: 'put credentials in headers (they are kept secret), not in the URL',
      }),
    headers: z
      .record(
        z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/, 'not a valid HTTP header name'),
        z.string().max(8000),
      )
      .refine((headers) => Object.keys(headers).length <= AGENT_LIMITS.headers, {
        message: `at most ${AGENT_LIMITS.headers} headers`,
      })
      .optional(),
  })
  .strict();

export const BudgetSchema = z
  .object({
    maxSteps: positiveInt.optional(),
    maxTokens: positiveInt.optional(),
    maxCostUsd: z.number().positive().optional(),
    maxDurationMs: positiveInt.optional(),
    onExceeded: z.enum(['pause', 'abort', 'continue']).optional(),
  })
  .strict();

export const MultitaskSchema = z.enum([Multitask.reject, Multitask.interrupt, Multitask.enqueue]);

export const ContextSchema = z
  .object({
    maxTokens: positiveInt.optional(),
    keepLastTurns: z.int().min(0).optional(),
    summarize: z.boolean().optional(),
  })
  .strict();

export const AutostartSchema = z
  .object({ text: z.string().min(1).max(AGENT_LIMITS.autostartChars) })
  .strict();
export const ContinuationSchema = z
  .object({ maxRuns: z.int().min(0).max(AGENT_LIMITS.continuationRuns) })
  .strict();

const agentFields = {
  name: z.string().trim().min(1).max(AGENT_LIMITS.nameChars),
  instructions: z.string().max(AGENT_LIMITS.instructionsChars).nullable().optional(),
  model: z.string().trim().min(1).max(200).nullable().optional(),
  modelOptions: ModelOptionsSchema.optional(),
  tools: z.array(AgentToolSchema).max(AGENT_LIMITS.tools).optional(),
  mcpServers: z.array(McpServerSchema).max(AGENT_LIMITS.mcpServers).optional(),
  budget: BudgetSchema.optional(),
  multitask: MultitaskSchema.optional(),
  context: ContextSchema.optional(),
  autostart: AutostartSchema.nullable().optional(),
  continuation: ContinuationSchema.nullable().optional(),
};

/** `POST /v1/agents`. Unknown fields are rejected. */
export const CreateAgentBody = z.object(agentFields).strict();
export type CreateAgentInput = z.infer<typeof CreateAgentBody>;

/** `PATCH /v1/agents/:agentId`: any subset of the fields; a given field replaces the stored one whole. */
export const UpdateAgentBody = z.object(agentFields).partial().strict();
export type UpdateAgentInput = z.infer<typeof UpdateAgentBody>;

/** The per-run overrides of `POST /v1/chats/:chatId/runs`. */
export const RunOverridesSchema = z
  .object({
    model: z.string().trim().min(1).max(200).optional(),
    modelOptions: ModelOptionsSchema.optional(),
    budget: BudgetSchema.optional(),
    multitask: MultitaskSchema.optional(),
  })
  .strict();
export type RunOverrides = z.infer<typeof RunOverridesSchema>;
