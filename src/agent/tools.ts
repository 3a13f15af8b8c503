import { tool, zodSchema } from 'ai';
import type { Tool, ToolSet } from 'ai';
import { z } from 'zod';
import { calculate } from './calculator.ts';
import { runToolContext } from './tool-context.ts';

/** The tools an agent run may call, by name. Names are unique; registering one twice is a bug. */
export class ToolRegistry {
  private readonly tools = new Map<string, Tool>();
  private readonly optIn = new Set<string>();

  /**
   * Adds a tool under `name`. Throws when the name is taken or is not a valid tool name. With
   * `offeredByDefault: false` the workspace default agent leaves it out; agents may still allow it by name.
   */
  register(name: string, tool: Tool, options: { offeredByDefault?: boolean } = {}): this {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
      throw new Error(`Invalid tool name "${name}": use 1-64 letters, digits, "_" or "-".`);
    }
    if (this.tools.has(name)) throw new Error(`A tool named "${name}" is already registered.`);
    this.tools.set(name, tool);
    if (options.offeredByDefault === false) this.optIn.add(name);
    return this;
  }

  /** The names the workspace default agent offers: all but the opt-in tools, in registration order. */
  defaultNames(): string[] {
    return this.names().filter((name) => !this.optIn.has(name));
  }

  has(name: string): boolean {
    return this.tools.has(name);
  }

  /** How many tools are registered (tools are only ever added). */
  get size(): number {
    return this.tools.size;
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
  inputSchema: zodSchema(z.record(z.string(), z.unknown())),
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
  inputSchema: zodSchema(
    z.object({
      timeZone: z.string().max(64).optional().describe('IANA time zone such as "Europe/Paris"; default UTC.'),
    }),
  ),
  execute: async ({ timeZone }) => currentTime({ timeZone }),
});

/** `calculator`: safe arithmetic (no eval); a bad expression returns `{ error }` for the model to read. */
export const calculatorTool = tool({
  description:
    'Evaluates an arithmetic expression: numbers, + - * / % ^, parentheses, and sqrt, abs, min, max, round, floor, ceil.',
  inputSchema: zodSchema(
    z.object({
      expression: z.string().describe('For example "2 * (3 + 4) ^ 2".'),
    }),
  ),
  execute: async ({ expression }) => calculate(expression),
});

/** Where `schedule_followup` records the one-shot schedule it creates. */
export interface FollowupScheduler {
  createFollowup(options: {
    workspaceId: string;
    chatId: string;
    userId: string;
    parentRunId: string;
    inSeconds: number;
    note: string;
  }): Promise<{ id: string; at: string | null }>;
}

/** `schedule_followup`'s bounds: one second to thirty days. */
export const FOLLOWUP_SECONDS = { min: 1, max: 30 * 24 * 60 * 60 } as const;

/**
 * `schedule_followup`: the calling run's agent wakes its own chat later. It creates a one-shot schedule
 * `inSeconds` from now whose run has trigger `continue`, the calling run as its parent and `note` as its
 * user message.
 */
export function createScheduleFollowupTool(scheduler: FollowupScheduler): Tool {
  return tool({
    description:
      'Schedules a follow-up of this conversation: after inSeconds, you are woken with note as the user message. ' +
      'Use it to check back on something later instead of waiting.',
    inputSchema: zodSchema(
      z.object({
        inSeconds: z
          .int()
          .min(FOLLOWUP_SECONDS.min)
          .max(FOLLOWUP_SECONDS.max)
          .describe('Seconds from now, 1 to 2592000 (30 days).'),
        note: z
          .string()
          .min(1)
          .max(4_000)
          .describe('What to do when woken: the follow-up run reads it as its task.'),
      }),
    ),
    execute: async ({ inSeconds, note }, options) => {
      const run = runToolContext(options);
      const schedule = await scheduler.createFollowup({
        workspaceId: run.workspaceId,
        chatId: run.chatId,
        userId: run.userId,
        parentRunId: run.runId,
        inSeconds,
        note,
      });
      return { scheduleId: schedule.id, at: schedule.at };
    },
  });
}

/**
 * A registry with the safe built-ins: `echo`, `current_time` and `calculator`; with `followups`, also
 * `schedule_followup`, which agents must allow by name (the default agent leaves it out: a chat should not
 * wake itself unless its agent was built to).
 */
export function createDefaultToolRegistry(options: { followups?: FollowupScheduler } = {}): ToolRegistry {
  const registry = new ToolRegistry()
    .register('echo', echoTool)
    .register('current_time', currentTimeTool)
    .register('calculator', calculatorTool);
  if (options.followups) {
    registry.register('schedule_followup', createScheduleFollowupTool(options.followups), {
      offeredByDefault: false,
    });
  }
  return registry;
}
