import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import type { LanguageModelV3 } from '@ai-sdk/provider';
import type { LanguageModel } from 'ai';
import { ModelUnavailableError } from '../errors.ts';
import { createScriptedModel } from './scripted-model.ts';

/** The model id of the built-in scripted model, the default when no provider is configured. */
export const SCRIPTED_MODEL_ID = 'scripted';

/** Model id prefixes (`<prefix>:<model>`) and the environment variables each one needs. */
const PROVIDERS = {
  openai: { required: 'OPENAI_API_KEY', example: 'openai:gpt-4.1-mini' },
  anthropic: { required: 'ANTHROPIC_API_KEY', example: 'anthropic:claude-sonnet-4-5' },
  compatible: { required: 'OUTRUN_COMPATIBLE_BASE_URL', example: 'compatible:llama3.2' },
} as const;

type ProviderPrefix = keyof typeof PROVIDERS;

function isProviderPrefix(value: string): value is ProviderPrefix {
  return Object.hasOwn(PROVIDERS, value);
}

/** An environment value, with empty strings treated as unset. */
function read(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

/**
 * Maps a model id to a model: `scripted`, `openai:<model>`, `anthropic:<model>` or `compatible:<model>`
 * (any OpenAI-compatible endpoint such as Ollama or vLLM). Only constructs the model; no network call.
 * Throws `ModelUnavailableError` naming the variable to set when a provider is not configured.
 */
export function resolveModel(options: {
  modelId: string;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** The model served as `scripted`. @default createScriptedModel() */
  scripted?: LanguageModelV3;
}): LanguageModel {
  const { modelId } = options;
  const env = options.env ?? process.env;
  if (modelId === SCRIPTED_MODEL_ID) return options.scripted ?? createScriptedModel();

  const separator = modelId.indexOf(':');
  const prefix = separator === -1 ? modelId : modelId.slice(0, separator);
  const model = separator === -1 ? '' : modelId.slice(separator + 1).trim();
  if (!isProviderPrefix(prefix)) {
    throw new ModelUnavailableError(
      `Unknown model "${modelId}". Use "${SCRIPTED_MODEL_ID}" or "<provider>:<model>" with provider ` +
        `${Object.keys(PROVIDERS).join(', ')} (for example "${PROVIDERS.openai.example}").`,
      { modelId },
    );
  }
  if (model === '') {
    throw new ModelUnavailableError(
      `Model id "${modelId}" names no model; write it as "${PROVIDERS[prefix].example}".`,
      { modelId },
    );
  }
  const required = read(env, PROVIDERS[prefix].required);
  if (required === undefined) {
    throw new ModelUnavailableError(
      `Model "${modelId}" is not available: set ${PROVIDERS[prefix].required} on the server to use ${prefix} models.`,
      { modelId, envVariable: PROVIDERS[prefix].required },
    );
  }

  switch (prefix) {
    case 'openai':
      return createOpenAI({ apiKey: required, baseURL: read(env, 'OPENAI_BASE_URL') })(model);
    case 'anthropic':
      return createAnthropic({ apiKey: required, baseURL: read(env, 'ANTHROPIC_BASE_URL') })(model);
    case 'compatible':
      return createOpenAICompatible({
        name: 'compatible',
        baseURL: required,
        apiKey: read(env, 'OUTRUN_COMPATIBLE_API_KEY'),
        // Asks for each answer's token counts (`stream_options.include_usage`): without it an OpenAI-compatible
        // server reports none, and budgets and quotas could only count the run by its estimate.
        includeUsage: true,
      })(model);
  }
}

/**
 * The model id prefixes this server can serve with `env`: always `scripted`, then each configured
 * provider (`openai`, `anthropic`, `compatible`), used as `<prefix>:<model>`.
 */
export function availableModels(env: NodeJS.ProcessEnv = process.env): string[] {
  const prefixes = Object.entries(PROVIDERS)
    .filter(([, provider]) => read(env, provider.required) !== undefined)
    .map(([prefix]) => prefix);
  return [SCRIPTED_MODEL_ID, ...prefixes];
}
