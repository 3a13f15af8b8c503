import { describe, expect, it } from 'vitest';
import { ModelUnavailableError } from '../errors.ts';
import { availableModels, resolveModel } from './providers.ts';
import { createScriptedModel } from './scripted-model.ts';

function modelOf(modelId: string, env: NodeJS.ProcessEnv) {
  const model = resolveModel({ modelId, env });
  if (typeof model === 'string') throw new Error('expected a model object');
  return model;
}

function unavailable(modelId: string, env: NodeJS.ProcessEnv = {}): ModelUnavailableError {
  try {
    resolveModel({ modelId, env });
  } catch (error) {
    if (error instanceof ModelUnavailableError) return error;
    throw error;
  }
  throw new Error(`resolveModel("${modelId}") did not throw`);
}

describe('resolveModel', () => {
  it('serves scripted without any configuration', () => {
    expect(modelOf('scripted', {})).toMatchObject({ provider: 'outrun', modelId: 'scripted' });
  });

  it('serves the given scripted model instance', () => {
    const scripted = createScriptedModel({ modelId: 'scripted' });
    expect(resolveModel({ modelId: 'scripted', env: {}, scripted })).toBe(scripted);
  });

  it('builds an OpenAI model from OPENAI_API_KEY', () => {
    const model = modelOf('openai:gpt-4.1-mini', { OPENAI_API_KEY: 'sk-test' });
    expect(model).toMatchObject({ specificationVersion: 'v3', modelId: 'gpt-4.1-mini' });
    expect(model.provider).toMatch(/^openai/);
  });

  it('builds an Anthropic model from ANTHROPIC_API_KEY', () => {
    const model = modelOf('anthropic:claude-sonnet-4-5', { ANTHROPIC_API_KEY: 'sk-ant-test' });
    expect(model).toMatchObject({ specificationVersion: 'v3', modelId: 'claude-sonnet-4-5' });
    expect(model.provider).toMatch(/^anthropic/);
  });

  it('builds an OpenAI-compatible model from its base URL, with or without a key', () => {
    const env = { OUTRUN_COMPATIBLE_BASE_URL: 'http://127.0.0.1:11434/v1' };
    const model = modelOf('compatible:llama3.2', env);
    expect(model).toMatchObject({ specificationVersion: 'v3', modelId: 'llama3.2' });
    expect(model.provider).toMatch(/^compatible/);
    expect(modelOf('compatible:qwen', { ...env, OUTRUN_COMPATIBLE_API_KEY: 'key' }).modelId).toBe('qwen');
  });

  it('keeps everything after the first colon as the model name', () => {
    const env = { OUTRUN_COMPATIBLE_BASE_URL: 'http://127.0.0.1:11434/v1' };
    expect(modelOf('compatible:llama3.2:8b', env).modelId).toBe('llama3.2:8b');
  });

  it.each([
    ['openai:gpt-4.1-mini', 'OPENAI_API_KEY'],
    ['anthropic:claude-sonnet-4-5', 'ANTHROPIC_API_KEY'],
    ['compatible:llama3.2', 'OUTRUN_COMPATIBLE_BASE_URL'],
  ])('refuses %s without %s and names the variable', (modelId, variable) => {
    const error = unavailable(modelId, { [variable]: '  ' });
    expect(error.code).toBe('model_unavailable');
    expect(error.status).toBe(400);
    expect(error.message).toContain(variable);
    expect(error.details).toEqual({ modelId, envVariable: variable });
  });

  it.each(['gpt-4', 'mistral:large', 'openai', 'openai:', ''])(
    'refuses the unknown model id %j',
    (modelId) => {
      expect(unavailable(modelId, { OPENAI_API_KEY: 'sk-test' }).code).toBe('model_unavailable');
    },
  );
});

describe('availableModels', () => {
  it('lists only scripted when nothing is configured', () => {
    expect(availableModels({})).toEqual(['scripted']);
  });

  it('lists each configured provider prefix', () => {
    expect(
      availableModels({
        OPENAI_API_KEY: 'sk-test',
        ANTHROPIC_API_KEY: '',
        OUTRUN_COMPATIBLE_BASE_URL: 'http://localhost:8000/v1',
      }),
    ).toEqual(['scripted', 'openai', 'compatible']);
  });
});
