import { describe, expect, it } from 'vitest';
import { resolveRunConfig, type AgentDefinition } from './run-config.ts';

const defaults = {
  model: 'scripted',
  tools: ['echo', 'current_time', 'calculator'],
  budget: { maxSteps: 20, maxTokens: 1000 },
};

const agent: AgentDefinition = {
  id: 'agt_1',
  instructions: 'Be brief.',
  model: 'openai:gpt-4.1-mini',
  modelOptions: { temperature: 0.3, providerOptions: { openai: { user: 'a', store: false } } },
  tools: [{ name: 'calculator', needsApproval: true }, { name: 'mcp:math/add' }],
  mcpServers: [{ name: 'math', url: 'https://mcp.example.com/mcp', headers: { authorization: 'Bearer x' } }],
  budget: { maxSteps: 5, onExceeded: 'abort' },
  multitask: 'enqueue',
  context: { keepLastTurns: 3 },
  continuation: { maxRuns: 2 },
};

describe('resolveRunConfig', () => {
  it('resolves the workspace default agent: no instructions, the default model, the built-in tools', () => {
    expect(resolveRunConfig({ agent: null, defaults })).toEqual({
      agentId: null,
      instructions: null,
      model: 'scripted',
      modelOptions: {},
      tools: [
        { name: 'echo', needsApproval: false },
        { name: 'current_time', needsApproval: false },
        { name: 'calculator', needsApproval: false },
      ],
      mcpServers: [],
      budget: { maxSteps: 20, maxTokens: 1000 },
      multitask: 'reject',
      context: {},
      continuation: null,
    });
  });

  it('takes the agent’s definition, with needsApproval resolved to a boolean', () => {
    const config = resolveRunConfig({ agent, defaults });
    expect(config).toMatchObject({
      agentId: 'agt_1',
      instructions: 'Be brief.',
      model: 'openai:gpt-4.1-mini',
      tools: [
        { name: 'calculator', needsApproval: true },
        { name: 'mcp:math/add', needsApproval: false },
      ],
      mcpServers: agent.mcpServers,
      budget: { maxSteps: 5, maxTokens: 1000, onExceeded: 'abort' },
      multitask: 'enqueue',
      context: { keepLastTurns: 3 },
      continuation: { maxRuns: 2 },
    });
    // The run keeps its own copy: a later edit of the agent object does not reach it.
    agent.mcpServers[0]!.headers!.authorization = 'changed';
    expect(config.mcpServers[0]!.headers!.authorization).toBe('Bearer x');
    agent.mcpServers[0]!.headers!.authorization = 'Bearer x';
  });

  it('layers run overrides over the agent, field by field, provider options per provider', () => {
    const config = resolveRunConfig({
      agent,
      defaults,
      overrides: {
        model: 'scripted',
        modelOptions: { topP: 0.5, providerOptions: { openai: { user: 'b' }, anthropic: { x: 1 } } },
        budget: { maxCostUsd: 0.1 },
        multitask: 'interrupt',
      },
    });
    expect(config.model).toBe('scripted');
    expect(config.modelOptions).toEqual({
      temperature: 0.3,
      topP: 0.5,
      providerOptions: { openai: { user: 'b', store: false }, anthropic: { x: 1 } },
    });
    expect(config.budget).toEqual({ maxSteps: 5, maxTokens: 1000, maxCostUsd: 0.1, onExceeded: 'abort' });
    expect(config.multitask).toBe('interrupt');
  });

  it('uses the default model for an agent without one, and is JSON-serializable', () => {
    const config = resolveRunConfig({ agent: { ...agent, model: null }, defaults });
    expect(config.model).toBe('scripted');
    expect(JSON.parse(JSON.stringify(config))).toEqual(config);
  });
});
