import { describe, expect, it } from 'vitest';
import { tool } from 'ai';
import type { ToolExecutionOptions } from 'ai';
import { z } from 'zod';
import { createDefaultToolRegistry, currentTime, ToolRegistry } from './tools.ts';

const executionOptions: ToolExecutionOptions = { toolCallId: 'call-1', messages: [] };

async function execute(name: string, input: unknown): Promise<unknown> {
  const registered = createDefaultToolRegistry().toolSet()[name];
  if (registered?.execute === undefined) throw new Error(`no tool ${name}`);
  return await registered.execute(input as never, executionOptions);
}

describe('ToolRegistry', () => {
  it('lists the built-ins of the default registry', () => {
    const registry = createDefaultToolRegistry();
    expect(registry.names()).toEqual(['echo', 'current_time', 'calculator']);
    expect(registry.has('echo')).toBe(true);
    expect(registry.has('eval')).toBe(false);
    expect(Object.keys(registry.toolSet())).toEqual(registry.names());
  });

  it('throws when a name is registered twice', () => {
    const extra = tool({ description: 'x', inputSchema: z.object({}), execute: async () => 'x' });
    const registry = new ToolRegistry().register('extra', extra);
    expect(() => registry.register('extra', extra)).toThrow('A tool named "extra" is already registered.');
  });

  it('rejects names a provider would not accept', () => {
    const extra = tool({ description: 'x', inputSchema: z.object({}), execute: async () => 'x' });
    expect(() => new ToolRegistry().register('has space', extra)).toThrow('Invalid tool name');
  });

  it('returns a fresh tool set each time', () => {
    const registry = createDefaultToolRegistry();
    const set = registry.toolSet();
    delete set.echo;
    expect(registry.toolSet().echo).toBeDefined();
  });
});

describe('built-in tools', () => {
  it('echo returns its input unchanged', async () => {
    const input = { step: 3, nested: { list: [1, 'two', null] } };
    expect(await execute('echo', input)).toBe(input);
  });

  it('current_time returns ISO time in UTC by default', async () => {
    const result = (await execute('current_time', {})) as { iso: string; timeZone: string };
    expect(result.timeZone).toBe('UTC');
    expect(new Date(result.iso).toISOString()).toBe(result.iso);
  });

  it('current_time formats the time in the given zone', () => {
    const now = new Date('2025-01-15T12:00:00Z');
    expect(currentTime({ timeZone: 'Asia/Tokyo', now })).toEqual({
      iso: '2025-01-15T12:00:00.000Z',
      timeZone: 'Asia/Tokyo',
      localTime: 'Jan 15, 2025, 9:00 PM',
    });
  });

  it('current_time answers an unknown zone with an error message instead of throwing', async () => {
    expect(await execute('current_time', { timeZone: 'Mars/Olympus' })).toEqual({
      error: 'Unknown time zone "Mars/Olympus". Use an IANA name such as "Europe/Paris".',
      timeZone: 'Mars/Olympus',
    });
  });

  it('calculator evaluates and reports errors as { error }', async () => {
    expect(await execute('calculator', { expression: '2 * (3 + 4)' })).toEqual({
      expression: '2 * (3 + 4)',
      result: 14,
    });
    expect(await execute('calculator', { expression: '1/0' })).toEqual({ error: 'Division by zero.' });
  });
});
