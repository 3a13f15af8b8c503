/**
 * What a tool's `execute` learns about the run calling it, through the AI SDK's `experimental_context`
 * (`execute(input, { experimental_context })`). Built-in tools that act on the chat (`schedule_followup`)
 * read it; others ignore it.
 */
export interface RunToolContext {
  runId: string;
  chatId: string;
  workspaceId: string;
  /** The user the run acts for (its creator). */
  userId: string;
  agentId: string | null;
}

/** The run context of a tool call, or throws when a tool that needs one is called outside a run. */
export function runToolContext(options: { experimental_context?: unknown }): RunToolContext {
  const context = options.experimental_context as Partial<RunToolContext> | undefined;
  if (!context?.runId || !context.chatId) throw new Error('This tool can only be called by a run.');
  return context as RunToolContext;
}
