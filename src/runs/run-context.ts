import type { LanguageModel, ModelMessage, ToolSet } from 'ai';
import {
  compactHistory,
  contextBudget,
  ContextBudgetError,
  createModelSummarizer,
  estimateTokens,
  SUMMARY_MAX_OUTPUT_TOKENS,
  instructionsTokens,
  overContextBudget,
  toolsTokens,
  type CompactionReport,
} from '../agent/compaction.ts';
import { InvalidRequestError } from '../errors.ts';
import { previousSummaryOf, uptoMessageIdOf, type CompactionStore } from '../agent/compaction-store.ts';
import type { RunConfig } from '../protocol/agent.ts';
import type { MessageRow, RunRow } from '../store/schema.ts';
import { toRunUsage } from './agent-loop.ts';
import type { RunUsage } from './run-object.ts';

/**
 * What every call of a run sends beside its messages, and compaction cannot cut, in tokens: the agent's
 * instructions and the run's tool definitions. Measured once per execution (`fixedTokens` of the fits below).
 */
export async function fixedPromptTokens(config: RunConfig, tools: ToolSet): Promise<number> {
  return instructionsTokens(config.instructions) + (await toolsTokens(tools));
}

/**
 * Fits a run's history into its model's context (invariant 15): measured against `context.maxTokens`,
 * compacted when over it (old tool outputs shortened, old turns collapsed, or — with `summarize` — replaced
 * by a summary made with the run's model, stored and reused by later runs of the chat). Stored messages are
 * never changed. Returns the messages to send and the compaction to report as a `data-compaction` event.
 */
export async function fitContext(options: {
  run: RunRow;
  config: RunConfig;
  model: LanguageModel;
  messages: ModelMessage[];
  /** The instructions and tool definitions, sent with the messages (`fixedPromptTokens`). */
  fixedTokens: number;
  storedMessages: readonly MessageRow[];
  store: CompactionStore;
  signal: AbortSignal;
  /** Half the usual budget: the provider said the context was too long. */
  overflow?: boolean;
  /** Whether the run can afford a summary's model call that may use `tokens` (its budget and quota). */
  mayCall?: (tokens: { inputTokens: number; outputTokens: number }) => boolean;
  /** A summary's model call answering nothing for this long is ended (`OUTRUN_MODEL_IDLE_TIMEOUT_MS`; 0: never). */
  summaryTimeoutMs?: number;
}): Promise<{
  messages: ModelMessage[];
  compaction: CompactionReport | null;
  /** What a summary's model call used, when one was made: the run spent it, outside its steps. */
  summaryUsage: RunUsage | null;
  /** Not fitted: what `messages`, the instructions and the tools come to, over `maxTokens`; else null. */
  over: { tokens: number; maxTokens: number } | null;
}> {
  const { run, config, messages, fixedTokens, storedMessages, store } = options;
  const maxTokens = options.overflow
    ? budgetAfterOverflow(config, messages, fixedTokens)
    : contextBudget(config.context.maxTokens, config.model);
  // A summary takes at most a quarter of what the instructions and tools leave: it fits beside the turns kept.
  const summaryTokens = Math.min(SUMMARY_MAX_OUTPUT_TOKENS, Math.floor((maxTokens - fixedTokens) / 4));
  let summaryUsage: RunUsage | null = null;
  const record = config.context.summarize ? await store.latest(run.chat_id) : null;
  const previousSummary = record
    ? previousSummaryOf({ record, storedMessages, modelMessages: messages })
    : null;
  const result = await compactHistory({
    messages,
    maxTokens,
    fixedTokens,
    keepLastTurns: config.context.keepLastTurns,
    summarize:
      config.context.summarize && summaryTokens > 0
        ? createModelSummarizer({
            model: options.model,
            maxInputTokens: maxTokens,
            maxOutputTokens: summaryTokens,
            timeoutMs: options.summaryTimeoutMs,
            abortSignal: options.signal,
            mayCall: options.mayCall,
            onUsage: (usage) => (summaryUsage = toRunUsage(usage)),
          })
        : undefined,
    previousSummary: previousSummary ?? undefined,
    trigger: options.overflow ? 'context_overflow' : 'threshold',
  });
  if (result.summary && result.compaction) {
    const uptoMessageId = uptoMessageIdOf({
      storedMessages,
      modelMessages: messages,
      uptoIndex: result.summary.uptoIndex,
    });
    if (uptoMessageId) {
      await store.save({
        chatId: run.chat_id,
        runId: run.id,
        uptoMessageId,
        summary: result.summary.summary,
        tokensBefore: result.compaction.tokensBefore,
        tokensAfter: result.compaction.tokensAfter,
      });
    }
  }
  const over = result.tokens > maxTokens ? { tokens: result.tokens, maxTokens } : null;
  return { messages: result.messages, compaction: result.compaction, summaryUsage, over };
}

/**
 * Fits a step's prompt into the model's context (invariant 15): the history fitted before the loop, and what
 * this execution's steps added to it (their tool calls and outputs), with the agent's instructions and the
 * tools' definitions, measured against `context.maxTokens`. Over it, compacted as a history is, without a
 * summary (a model call in the middle of a step would need the budget's say): old tool outputs shortened, this
 * run's own too, the turns kept before the last collapsed and left out, then this run's tool outputs left out.
 * Null when the prompt fits. Throws `ContextBudgetError` when it cannot be fitted: the step is never sent.
 */
export async function fitStepContext(options: {
  config: RunConfig;
  messages: ModelMessage[];
  /** The instructions and tool definitions, sent with the messages (`fixedPromptTokens`). */
  fixedTokens: number;
  /** The provider said the step's prompt was too long (`budgetAfterOverflow`). */
  overflow?: boolean;
}): Promise<{ messages: ModelMessage[]; compaction: CompactionReport } | null> {
  const { config, messages, fixedTokens } = options;
  const maxTokens = options.overflow
    ? budgetAfterOverflow(config, messages, fixedTokens)
    : contextBudget(config.context.maxTokens, config.model);
  const result = await compactHistory({
    messages,
    maxTokens,
    fixedTokens,
    keepLastTurns: config.context.keepLastTurns,
    trigger: options.overflow ? 'context_overflow' : 'threshold',
  });
  if (result.tokens > maxTokens) {
    throw new ContextBudgetError(result.tokens, maxTokens, options.overflow ?? false);
  }
  return result.compaction ? { messages: result.messages, compaction: result.compaction } : null;
}

/**
 * After a provider said a prompt was too long: half of what was sent (instructions and tools included), or of
 * the configured budget if smaller.
 */
function budgetAfterOverflow(config: RunConfig, messages: ModelMessage[], fixedTokens: number): number {
  const sent = fixedTokens + estimateTokens(messages);
  return Math.floor(Math.min(contextBudget(config.context.maxTokens, config.model), sent) / 2);
}

/**
 * Refuses a message that, with the agent's instructions and its built-in tools' definitions (`toolsTokens`,
 * from `RunConfigResolver.builtInToolsTokens`), is over the run's context budget (`context.maxTokens`, or the
 * model's default), before anything is written: compaction cuts none of them, so the run could only fail at
 * its first step (invariant 15). Counted as compaction counts them (`overContextBudget`). An MCP server's
 * tools are listed, and counted, only when the run executes.
 */
export function assertFitsContext(config: RunConfig, parts: unknown[], toolsTokens: number): void {
  const over = overContextBudget({
    instructions: config.instructions,
    maxTokens: config.context.maxTokens,
    modelId: config.model,
    toolsTokens,
    parts,
  });
  if (!over) return;
  const { tokens, maxTokens } = over;
  const counted = ['the message'];
  if (config.instructions) counted.push("the agent's instructions");
  if (toolsTokens > 0) counted.push("the agent's tool definitions");
  const what =
    counted.length === 1 ? 'the message is' : `${counted.slice(0, -1).join(', ')} and ${counted.at(-1)} are`;
  throw new InvalidRequestError(
    `input: ${what} about ${tokens} tokens, more than this run's context budget of ${maxTokens} ` +
      `(the agent's context.maxTokens, or the model's default): it could never be sent to the model whole.`,
    { field: 'input', tokens, maxTokens },
  );
}
