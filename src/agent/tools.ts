import { tool } from 'ai';
import type { Tool, ToolSet } from 'ai';
import { z } from 'zod';
import { calculate } from './calculator.ts';

/** The tools an agent run may call, by name. Names are unique; registering one twice is a bug. */
export class ToolRegistry {
  private readonly tools = new Map<string, Tool>();

  /** Adds a tool under `name`. Throws when the name is taken or is not a valid tool name. */
  register(name: string, tool: Tool): this {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
      throw new Error(`Invalid tool name "${name}": use 1-64 letters, digits, "_" or "-".`);
    }
    if (this.tools.has(name)) throw new Error(`A tool named "${name}" is already registered.`);
    this.tools.set(name, tool);
    return this;
  }

  has(name: string): boolean {
    return this.tools.has(name);
  }

  /** The registered names, in registration order. */
  names(): string[] {
    return [...this.tools.keys()];
  }

  /** The tools as the `tools` option of `streamText`. A new object each call, so callers may narrow it. */
  toolSet(): ToolSet {
    return Object.fromEntries(this.tools);
  }
}

/** `echo`: returns its input unchanged. The scripted model calls it between steps. */
export const echoTool = tool({
  description: 'Returns its input unchanged. Useful for testing tool calls.',
  inputSchema: z.record(z.string(), z.unknown()),
  execute: async (input) => input,
});

/** What `current_time` returns. */
export type CurrentTimeResult =
  { iso: string; timeZone: string; localTime: string } | { error: string; timeZone: string };

/** Reads the clock; `timeZone` is an IANA zone name (default UTC). An unknown zone is a readable error. */
export function currentTime(options: { timeZone?: string; now?: Date } = {}): CurrentTimeResult {
  const timeZone = options.timeZone ?? 'UTC';
  const now = options.now ?? new Date();
  let localTime: string;
  try {
    localTime = new Intl.DateTimeFormat('en-US', {
      timeZone,
      dateStyle: 'medium',
      timeStyle: 'short',
    }).format(now);
  } catch {
    return { error: `Unknown time zone "${timeZone}". Use an IANA name such as "Europe/Paris".`, timeZone };
  }
  return { iso: now.toISOString(), timeZone, localTime };
}

/** `current_time`: the current time, in UTC or the given IANA time zone. */
export const currentTimeTool = tool({
  description: 'Returns the current date and time, in UTC or in the given IANA time zone.',
  inputSchema: z.object({
    timeZone: z.string().max(64).optional().describe('IANA time zone such as "Europe/Paris"; default UTC.'),
  }),
  execute: async ({ timeZone }) => currentTime({ timeZone }),
});

/** `calculator`: safe arithmetic (no eval); a bad expression returns `{ error }` for the model to read. */
export const calculatorTool = tool({
  description:
    'Evaluates an arithmetic expression: numbers, + - * / % ^, parentheses, and sqrt, abs, min, max, round, floor, ceil.',
  inputSchema: z.object({
    expression: z.string().describe('For example "2 * (3 + 4) ^ 2".'),
  }),
  execute: async ({ expression }) => calculate(expression),
});

/** A registry with the safe built-ins: `echo`, `current_time` and `calculator`. */
export function createDefaultToolRegistry(): ToolRegistry {
  return new ToolRegistry()
    .register('echo', echoTool)
    .register('current_time', currentTimeTool)
    .register('calculator', calculatorTool);
}
