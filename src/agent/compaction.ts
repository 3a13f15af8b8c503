import {
  asSchema,
  generateText,
  type LanguageModel,
  type LanguageModelUsage,
  type ModelMessage,
  type ToolResultPart,
  type ToolSet,
} from 'ai';
import type { CompactionChunk } from '../protocol/chunks.ts';

/**
 * Context compaction (DESIGN invariant 15): fits a run's history into the model's context budget before a
 * model call. Works on a copy; the stored messages are never changed.
 */

/** What a compaction did, as the `data-compaction` event reports it. */
export type CompactionReport = CompactionChunk['data'];

/** Why a compaction ran: the history was over budget, or the provider said the context was too long. */
export type CompactionTrigger = 'threshold' | 'context_overflow';

/** The history budget when the model's context window is unknown. */
export const DEFAULT_CONTEXT_MAX_TOKENS = 100_000;
/** The share of a known context window the history may fill; the rest is for the answer. */
export const CONTEXT_WINDOW_SHARE = 0.7;
/** User turns kept whole by default. */
export const DEFAULT_KEEP_LAST_TURNS = 4;
/** A tool output longer than this (characters) is shortened to its head and tail. */
export const DEFAULT_TOOL_OUTPUT_MAX_CHARS = 2_000;
/** Characters per token of the estimate (a typical tokenizer on English text and JSON). */
const CHARS_PER_TOKEN = 4;

/**
 * Context windows (tokens) of common models, by the model part of the id (`openai:gpt-4o` → `gpt-4o`).
 * The longest matching prefix wins.
 */
const CONTEXT_WINDOWS: Record<string, number> = {
  'gpt-4o': 128_000,
  'gpt-4o-mini': 128_000,
  'gpt-4-turbo': 128_000,
  'gpt-4.1': 1_047_576,
  'gpt-5': 400_000,
  o1: 200_000,
  o3: 200_000,
  'o4-mini': 200_000,
  'claude-3': 200_000,
  'claude-3-5': 200_000,
  'claude-3-7': 200_000,
  'claude-sonnet-4': 200_000,
  'claude-opus-4': 200_000,
  'claude-haiku-4': 200_000,
};

/** `context.maxTokens` when an agent leaves it out: 0.7 × the model's context window, or 100k when unknown. */
export function defaultContextMaxTokens(modelId: string | undefined): number {
  if (!modelId) return DEFAULT_CONTEXT_MAX_TOKENS;
  const name = modelId.slice(modelId.indexOf(':') + 1);
  let best: string | undefined;
  for (const prefix of Object.keys(CONTEXT_WINDOWS)) {
    if (name.startsWith(prefix) && (best === undefined || prefix.length > best.length)) best = prefix;
  }
  return best === undefined
    ? DEFAULT_CONTEXT_MAX_TOKENS
    : Math.floor(CONTEXT_WINDOWS[best]! * CONTEXT_WINDOW_SHARE);
}

/** The context budget a run is held to (invariant 15): the agent's `context.maxTokens`, or the model's default. */
export function contextBudget(maxTokens: number | undefined, modelId: string | undefined): number {
  return maxTokens ?? defaultContextMaxTokens(modelId);
}

/**
 * The token estimate every budget and compaction decision uses: one token per four characters of the
 * value's JSON form (binary data counted as its base64 length).
 */
export function estimateTokens(value: string | ModelMessage | readonly ModelMessage[]): number {
  let chars: number;
  if (typeof value === 'string') chars = value.length;
  else if (Array.isArray(value)) {
    chars = 2;
    for (const message of value as readonly ModelMessage[]) chars += messageLength(message) + 1;
  } else chars = messageLength(value as ModelMessage);
  return Math.ceil(chars / CHARS_PER_TOKEN);
}

/**
 * Each message's JSON length, once: compaction measures the whole prompt after every message it changes, and
 * a step's prompt holds the same message objects as the last one's (messages are never changed in place;
 * compaction makes new ones), so a long history's strings are scanned for escapes once, not at every look.
 */
const messageLengths = new WeakMap<ModelMessage, number>();

function messageLength(message: ModelMessage): number {
  let length = messageLengths.get(message);
  if (length === undefined) {
    length = jsonLength(message);
    messageLengths.set(message, length);
  }
  return length;
}

/**
 * The tokens an agent's instructions count for in the context budget: they are sent with every call, as the
 * prompt's system message, and compaction cannot cut them.
 */
export function instructionsTokens(instructions: string | null | undefined): number {
  return instructions ? estimateTokens({ role: 'system', content: instructions }) : 0;
}

/**
 * Each input schema's JSON Schema length, once: a run's tools are new objects (`buildToolSet`), their schemas
 * the registry's and the MCP pool's, converted (a Zod schema walked) once, not at every run.
 */
const schemaLengths = new WeakMap<object, number>();

async function schemaLength(inputSchema: unknown): Promise<number> {
  const key = typeof inputSchema === 'object' && inputSchema !== null ? inputSchema : null;
  const known = key && schemaLengths.get(key);
  if (known) return known;
  const length = jsonLength(await asSchema(inputSchema as Parameters<typeof asSchema>[0]).jsonSchema);
  if (key) schemaLengths.set(key, length);
  return length;
}

/**
 * The tokens a run's tool definitions count for in the context budget: they are sent with every call, each as
 * the provider gets it (its name, description and input schema as JSON Schema, as the AI SDK prepares them),
 * and compaction cannot cut them.
 */
export async function toolsTokens(tools: ToolSet): Promise<number> {
  let chars = 2;
  for (const [name, tool] of Object.entries(tools)) {
    const definition =
      tool.type === 'provider'
        ? { type: 'provider', name, id: tool.id, args: tool.args }
        : { type: 'function', name, description: tool.description, strict: tool.strict };
    chars += jsonLength(definition) + 1;
    // `"inputSchema":` and the schema, beside the fields above.
    if (tool.type !== 'provider') chars += 15 + (await schemaLength(tool.inputSchema));
  }
  return chars === 2 ? 0 : Math.ceil(chars / CHARS_PER_TOKEN);
}

/**
 * What compaction never cuts, measured against the context budget (`contextBudget`): the agent's instructions,
 * the tool definitions' `toolsTokens` if given, and, given its `parts`, the user message being answered,
 * estimated as the message the model gets (its text, a `data:` file's bytes as base64; a file fetched from a
 * URL only by its URL). Null when they fit; else their tokens and the budget.
 */
export function overContextBudget(options: {
  instructions: string | null | undefined;
  maxTokens: number | undefined;
  modelId: string | undefined;
  toolsTokens?: number;
  parts?: readonly unknown[];
}): { tokens: number; maxTokens: number } | null {
  const maxTokens = contextBudget(options.maxTokens, options.modelId);
  const message = options.parts && ({ role: 'user', content: options.parts } as ModelMessage);
  const tokens =
    instructionsTokens(options.instructions) +
    (options.toolsTokens ?? 0) +
    (message ? estimateTokens(message) : 0);
  return tokens > maxTokens ? { tokens, maxTokens } : null;
}

/**
 * A prompt compaction could not fit into the context budget: what is left is what it never cuts (the
 * instructions, the message being answered, the answer's own text and tool calls). The run fails with this
 * message rather than send the model more than its budget (invariant 15).
 */
export class ContextBudgetError extends Error {
  /** `afterOverflow`: `maxTokens` is half of a prompt the provider refused as too long, not the budget. */
  constructor(
    readonly tokens: number,
    readonly maxTokens: number,
    afterOverflow = false,
  ) {
    super(
      `The prompt is about ${tokens} tokens even compacted, more than ` +
        (afterOverflow
          ? `${maxTokens}, half of what the provider refused as too long for the model's context window`
          : `the context budget of ${maxTokens} (context.maxTokens, or the model's default)`) +
        "; it was not sent. What compaction never cuts is left: the agent's instructions, the message being " +
        "answered, and this answer's own text and tool calls.",
    );
    this.name = 'ContextBudgetError';
  }
}

/** A character JSON escapes: a quote, a backslash, a control character. */
// eslint-disable-next-line no-control-regex -- the control characters are what JSON escapes
const ESCAPED = /["\\\u0000-\u001f]/;

/**
 * The characters `JSON.stringify(text)` adds to `text` by escaping: one for `"`, `\\` and the control
 * characters with a short escape (`\\n`, `\\t`, …), five for the others (`\\u0001`). A text full of newlines
 * is nearly twice as long as JSON, which is what a provider is sent.
 */
function escapedExtra(text: string): number {
  if (!ESCAPED.test(text)) return 0;
  let extra = 0;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code === 0x22 || code === 0x5c) extra += 1;
    else if (code < 0x20)
      extra += code === 0x08 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d ? 1 : 5;
  }
  return extra;
}

/** The length of `JSON.stringify(value)`, escapes included, without building the string. */
function jsonLength(value: unknown): number {
  if (value === null || value === undefined) return 4;
  if (typeof value === 'string') return value.length + 2 + escapedExtra(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value).length;
  if (value instanceof Uint8Array) return Math.ceil((value.byteLength * 4) / 3) + 2;
  if (value instanceof ArrayBuffer) return Math.ceil((value.byteLength * 4) / 3) + 2;
  if (value instanceof URL) return value.href.length + 2;
  if (Array.isArray(value)) return 2 + value.reduce((sum: number, item) => sum + jsonLength(item) + 1, 0);
  if (typeof value === 'object') {
    let length = 2;
    for (const [key, item] of Object.entries(value)) {
      if (item !== undefined) length += key.length + 4 + jsonLength(item);
    }
    return length;
  }
  return 0;
}

/** The system prompt of a summary request; the scripted model recognizes a request by it. */
export const COMPACTION_SYSTEM_PROMPT =
  'Summarize the conversation below for an assistant that will continue it without seeing it. ' +
  'Keep facts, decisions, names, numbers, open questions and what the user asked for; leave out pleasantries. ' +
  'Answer with the summary only.';

/** Whether a system prompt is the compactor's summary request. */
export function isSummaryRequest(system: string | null | undefined): boolean {
  return typeof system === 'string' && system.startsWith('Summarize the conversation');
}

/** The first line of a summary request's prompt; it names how many messages are summarized. */
export function summaryRequestHeading(messageCount: number): string {
  return `Conversation (${messageCount} messages):`;
}

/** Reads the message count back from a summary request's prompt (the scripted model's answer uses it). */
export function summarizedMessageCount(prompt: string): number | null {
  const match = /^Conversation \((\d+) messages\):/m.exec(prompt);
  return match ? Number(match[1]) : null;
}

/** Makes a summary of `messages`: the text of the summary message that replaces them. */
export type Summarize = (messages: ModelMessage[]) => Promise<string>;

/** Characters of one part a summary request shows; longer parts are shortened to head and tail. */
const TRANSCRIPT_PART_MAX_CHARS = 4_000;

/** A `Summarize` that asks `model` (the run's model) with `COMPACTION_SYSTEM_PROMPT`. */
export function createModelSummarizer(options: {
  model: LanguageModel;
  /** @default 1000 */
  maxOutputTokens?: number;
  /**
   * The context budget the request is held to (invariant 15): past it, the transcript's oldest lines are left
   * out, a line saying how many in their place; the summary still stands for every message.
   */
  maxInputTokens?: number;
  /**
   * The call is ended after this long, and the history compacted without a summary: it answers all at once,
   * so a silent provider is one that has not answered (a run's `OUTRUN_MODEL_IDLE_TIMEOUT_MS`). Absent or 0:
   * never.
   */
  timeoutMs?: number;
  abortSignal?: AbortSignal;
  /**
   * Asked before the call, with its prompt's estimated tokens and its longest answer: false makes no call and
   * rejects, so the history is compacted without a summary (a run's budget that cannot afford it).
   */
  mayCall?: (tokens: { inputTokens: number; outputTokens: number }) => boolean;
  /** What the summary's model call used, as the provider reports it. */
  onUsage?: (usage: LanguageModelUsage) => void;
}): Summarize {
  const maxOutputTokens = options.maxOutputTokens ?? SUMMARY_MAX_OUTPUT_TOKENS;
  return async (messages) => {
    const request = summaryRequest(messages, options.maxInputTokens ?? Infinity);
    // Not even the newest line fits the budget: nothing worth summarizing could be sent.
    if (!request) throw new SummaryRefusedError();
    const { prompt } = request;
    const tokens = { inputTokens: request.tokens, outputTokens: maxOutputTokens };
    if (options.mayCall && !options.mayCall(tokens)) throw new SummaryRefusedError();
    const { text, usage } = await generateText({
      model: options.model,
      system: COMPACTION_SYSTEM_PROMPT,
      prompt,
      maxOutputTokens,
      abortSignal: withTimeout(options.abortSignal, options.timeoutMs),
    });
    options.onUsage?.(usage);
    // A provider that answers past `maxOutputTokens` would leave a summary too long to fit beside the turns it
    // is meant to make room for (and another paid for at every run): it is cut to its allowance.
    return text.trim().slice(0, maxOutputTokens * CHARS_PER_TOKEN);
  };
}

/** `signal`, ended also after `timeoutMs` when that is given and not 0. */
function withTimeout(
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): AbortSignal | undefined {
  if (!timeoutMs) return signal;
  const timeout = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/**
 * A summary was not asked for: the run's budget or quota could not afford the call, or its context budget
 * could not hold even the newest line of the transcript.
 */
export class SummaryRefusedError extends Error {
  constructor() {
    super('The run cannot afford a summary of its history.');
    this.name = 'SummaryRefusedError';
  }
}

/** The longest summary asked for (tokens), when the context budget leaves room for it. */
export const SUMMARY_MAX_OUTPUT_TOKENS = 1_000;

/**
 * The summary request for `messages` within `maxTokens` (as sent: its system prompt and its one user message,
 * estimated as `estimateTokens` does): a heading and the transcript, whose oldest lines are left out while it
 * is over, a line saying how many in their place. Null when not even the newest line fits.
 */
function summaryRequest(
  messages: readonly ModelMessage[],
  maxTokens: number,
): { prompt: string; tokens: number } | null {
  const lines = transcriptLines(messages);
  const heading = summaryRequestHeading(messages.length);
  const build = (first: number) =>
    [
      heading,
      '',
      ...(first > 0 ? [`[… the ${first} oldest lines left out to fit the context budget …]`] : []),
      ...lines.slice(first),
    ].join('\n');
  const tokensOf = (prompt: string) =>
    estimateTokens([
      { role: 'system', content: COMPACTION_SYSTEM_PROMPT },
      { role: 'user', content: [{ type: 'text', text: prompt }] },
    ]);
  // A first guess from each line's JSON length, then checked on the whole request.
  let over = tokensOf(build(0)) - maxTokens;
  let first = 0;
  while (over > 0 && first < lines.length) {
    over -= Math.floor(jsonLength(lines[first]!) / CHARS_PER_TOKEN);
    first++;
  }
  for (; first < lines.length; first++) {
    const prompt = build(first);
    const tokens = tokensOf(prompt);
    if (tokens <= maxTokens) return { prompt, tokens };
  }
  return null;
}

/** Messages as plain text lines, `Role: text`, for a summary request. */
function transcriptLines(messages: readonly ModelMessage[]): string[] {
  const lines: string[] = [];
  for (const message of messages) {
    const role = message.role[0]!.toUpperCase() + message.role.slice(1);
    if (typeof message.content === 'string') {
      lines.push(`${role}: ${shorten(message.content, TRANSCRIPT_PART_MAX_CHARS)}`);
      continue;
    }
    for (const part of message.content) {
      if (part.type === 'text') lines.push(`${role}: ${shorten(part.text, TRANSCRIPT_PART_MAX_CHARS)}`);
      else if (part.type === 'tool-call') {
        lines.push(`${role} called ${part.toolName}: ${shorten(JSON.stringify(part.input), 500)}`);
      } else if (part.type === 'tool-result') {
        lines.push(`Tool ${part.toolName} returned: ${shorten(outputText(part.output), 1_000)}`);
      }
    }
  }
  return lines;
}

/** The text that opens the summary message standing in for older messages. */
export function summaryMessageText(summary: string, messageCount: number): string {
  return `[Summary of the ${messageCount} earlier messages of this conversation]\n${summary}`;
}

/** A summary of a chat's older messages, as stored and reused by a later run of the chat. */
export interface PreviousSummary {
  /** The messages before this index (system messages aside) are the ones the summary covers. */
  uptoIndex: number;
  summary: string;
}

export interface CompactHistoryOptions {
  /** The history as the model would get it. Never modified. */
  messages: ModelMessage[];
  /** The budget for the history. @default `defaultContextMaxTokens(modelId)` */
  maxTokens?: number;
  /** Used for the default `maxTokens`. */
  modelId?: string;
  /** The last user turns (a user message and all that follows it) kept whole. @default 4 */
  keepLastTurns?: number;
  /** Makes a summary of the oldest turns; without it they are collapsed to their text. */
  summarize?: Summarize;
  /** A summary stored by an earlier run of the chat, used before anything is summarized again. */
  previousSummary?: PreviousSummary | null;
  /** Reported in the event. @default 'threshold' */
  trigger?: CompactionTrigger;
  /** @default 2000 */
  toolOutputMaxChars?: number;
  /**
   * Tokens sent beside the messages that compaction cannot cut (the agent's instructions, the system prompt):
   * counted against `maxTokens` and in the report's `tokensBefore` and `tokensAfter`. @default 0
   */
  fixedTokens?: number;
}

export interface CompactHistoryResult {
  /** The history to send: the input itself when it fits, else a compacted copy. */
  messages: ModelMessage[];
  /** What was done (the `data-compaction` event's data); null when the history fit. */
  compaction: CompactionReport | null;
  /** The estimate of `messages` with the fixed tokens: over `maxTokens` when they could not be fitted. */
  tokens: number;
  /**
   * A new summary to store (`CompactionStore.save`): it covers `messages[0, uptoIndex)` of the input;
   * `messages[uptoIndex]` is always a user message. Null when no summary was made.
   */
  summary: PreviousSummary | null;
}

/**
 * Fits `messages` (and `fixedTokens` beside them) into `maxTokens` (estimated with `estimateTokens`). In
 * order, stopping as soon as the history fits: shorten old tool outputs to their head and tail; use
 * `previousSummary`; with `summarize`, replace all old turns by one summary message (if it fails, go on
 * without); collapse old turns to their text, oldest first, then leave out the oldest collapsed turns. The
 * last `keepLastTurns` user turns stay whole while the budget holds them: when they alone are over it, their
 * tool outputs are shortened, then the kept turns before the last have their tool outputs left out (their
 * calls kept), then are collapsed and left out the same way.
 * The last turn (the one being answered) is cut last and least: its tool outputs are left out, oldest first,
 * a short notice in their place. Its messages are never cut, nor the run's own words in it (its text, its
 * calls' inputs), so a history can stay over budget only by those and the fixed tokens: the caller decides
 * what to do then (a run fails rather than send it).
 */
export async function compactHistory(options: CompactHistoryOptions): Promise<CompactHistoryResult> {
  const maxTokens = contextBudget(options.maxTokens, options.modelId);
  const keepLastTurns = options.keepLastTurns ?? DEFAULT_KEEP_LAST_TURNS;
  const toolOutputMaxChars = options.toolOutputMaxChars ?? DEFAULT_TOOL_OUTPUT_MAX_CHARS;
  const input = options.messages;
  const fixedTokens = options.fixedTokens ?? 0;
  const tokensBefore = fixedTokens + estimateTokens(input);
  if (tokensBefore <= maxTokens) {
    return { messages: input, compaction: null, tokens: tokensBefore, summary: null };
  }

  // The turn being answered is always kept, whatever `keepLastTurns` says (0 keeps no earlier one whole).
  const keepFrom = keptTurnsStart(input, Math.max(1, keepLastTurns));
  // Older messages are rebuilt as the stages go; kept ones are cut only once every older one is (stages 4–6).
  let old: ModelMessage[] = input.slice(0, keepFrom);
  const kept: ModelMessage[] = input.slice(keepFrom);
  let summarized = 0;
  let summary: PreviousSummary | null = null;
  const total = () => fixedTokens + estimateTokens(old) + estimateTokens(kept);
  const fits = () => total() <= maxTokens;

  // 1. Old tool outputs, oldest first.
  for (let index = 0; index < old.length && !fits(); index++) {
    old[index] = withShortToolOutputs(old[index]!, toolOutputMaxChars) ?? old[index]!;
  }

  // 2. An earlier summary, then a new one.
  const previous = options.previousSummary;
  if (!fits() && previous && previous.uptoIndex > 0 && previous.uptoIndex <= keepFrom) {
    const covered = old.slice(0, previous.uptoIndex).filter((message) => message.role !== 'system');
    old = [
      ...old.slice(0, previous.uptoIndex).filter((message) => message.role === 'system'),
      summaryMessage(previous.summary, covered.length),
      ...old.slice(previous.uptoIndex),
    ];
    summarized += covered.length;
  }
  if (!fits() && options.summarize) {
    const systems = old.filter((message) => message.role === 'system');
    const toSummarize = old.filter((message) => message.role !== 'system');
    if (toSummarize.length > 0) {
      const text = await options.summarize(toSummarize).catch(() => null);
      if (text) {
        const covered =
          keepFrom - input.slice(0, keepFrom).filter((message) => message.role === 'system').length;
        old = [...systems, summaryMessage(text, covered)];
        summarized = covered;
        summary = { uptoIndex: keepFrom, summary: text };
      }
    }
  }

  // 3. Old turns collapsed to their text, oldest first; then the oldest left out.
  if (!fits() && summary === null) {
    const turns = splitTurns(old);
    const leftOutSummary = collapseThenLeaveOut(turns, turns.length, fits, () => (old = turns.flat()));
    // The messages the dropped summary stood for are now left out, not summarized.
    if (leftOutSummary) summarized = 0;
  }

  // 4. Only the kept turns are left over budget: their tool outputs too.
  for (let index = 0; index < kept.length && !fits(); index++) {
    kept[index] = withShortToolOutputs(kept[index]!, toolOutputMaxChars) ?? kept[index]!;
  }

  // 5. Still over: the context budget comes before `keepLastTurns` (invariant 15). The kept turns before the
  //    last one (the turn being answered, never cut): first their tool outputs are left out, oldest first, a
  //    notice in each one's place, so their calls stay (a follow-up run goes on from its parent's turn, the
  //    one before its own: collapsed, the model would not know which calls it made and make them again); then
  //    they are collapsed to their text, then left out, oldest first.
  const answeredFrom = kept.findLastIndex((message) => message.role === 'user');
  for (let index = 0; index < answeredFrom && !fits(); index++) {
    kept[index] = withToolOutputsLeftOut(kept[index]!) ?? kept[index]!;
  }
  if (!fits()) {
    const turns = splitTurns(kept);
    collapseThenLeaveOut(turns, turns.length - 1, fits, () => kept.splice(0, kept.length, ...turns.flat()));
  }

  // 6. The turn being answered: its tool outputs left out, oldest first, a notice in each one's place. Its
  //    calls stay, so the model still sees what it did (leaving out whole steps, it would do them again).
  for (let index = 0; index < kept.length && !fits(); index++) {
    kept[index] = withToolOutputsLeftOut(kept[index]!) ?? kept[index]!;
  }

  // Every stage replaces a message it changes by a new one (the input is never changed in place), so the input
  // messages missing from the result are the ones shortened, collapsed, left out or summarized, each once
  // whatever the stages did to it.
  const messages = [...old, ...kept];
  const sent = new Set(messages);
  const trimmed = input.filter((message) => !sent.has(message)).length - summarized;
  // Over budget, yet nothing could be shortened (the turn being answered alone is over it, with nothing to
  // cut): the history is returned as it is, and there is no compaction to report.
  if (trimmed === 0 && summarized === 0) {
    return { messages: input, compaction: null, tokens: tokensBefore, summary: null };
  }
  const tokens = fixedTokens + estimateTokens(messages);
  return {
    messages,
    compaction: {
      trimmed,
      summarized,
      tokensBefore,
      tokensAfter: tokens,
      trigger: options.trigger ?? 'threshold',
    },
    tokens,
    summary,
  };
}

/**
 * Shrinks `turns[0, end)` in place until `fits()`: each collapsed to its text, oldest first, then each left
 * out, oldest first (its system messages stay). `apply` writes `turns` back where `fits` measures them.
 * Returns whether a summary was left out.
 */
function collapseThenLeaveOut(
  turns: ModelMessage[][],
  end: number,
  fits: () => boolean,
  apply: () => void,
): boolean {
  let leftOutSummary = false;
  for (let index = 0; index < end && !fits(); index++) {
    const turn = turns[index]!;
    if (turn.every((message) => message.role === 'system' || isSummary(message))) continue;
    turns[index] = collapseTurn(turn);
    apply();
  }
  for (let index = 0; index < end && !fits(); index++) {
    const turn = turns[index]!;
    const leftOut = turn.filter((message) => message.role !== 'system');
    if (leftOut.length === 0) continue;
    turns[index] = turn.filter((message) => message.role === 'system');
    leftOutSummary ||= leftOut.some(isSummary);
    apply();
  }
  return leftOutSummary;
}

/** The index where the last `keepLastTurns` user turns begin (`messages.length` for none kept). */
function keptTurnsStart(messages: readonly ModelMessage[], keepLastTurns: number): number {
  if (keepLastTurns <= 0) return messages.length;
  let seen = 0;
  for (let index = messages.length - 1; index >= 0; index--) {
    if (messages[index]!.role === 'user' && ++seen === keepLastTurns) return index;
  }
  // Fewer user turns than that: everything from the first user message is kept.
  const firstUser = messages.findIndex((message) => message.role === 'user');
  return firstUser === -1 ? messages.length : firstUser;
}

/** Splits messages into turns, each starting at a user message (the first may start without one). */
function splitTurns(messages: readonly ModelMessage[]): ModelMessage[][] {
  const turns: ModelMessage[][] = [];
  for (const message of messages) {
    if (message.role === 'user' || turns.length === 0) turns.push([message]);
    else turns.at(-1)!.push(message);
  }
  return turns;
}

const SUMMARY_MARKER = '[Summary of the ';

function summaryMessage(summary: string, messageCount: number): ModelMessage {
  return { role: 'user', content: summaryMessageText(summary, messageCount) };
}

function isSummary(message: ModelMessage): boolean {
  return (
    message.role === 'user' &&
    typeof message.content === 'string' &&
    message.content.startsWith(SUMMARY_MARKER)
  );
}

/** A turn reduced to its user text and one assistant message with the assistant's text. */
function collapseTurn(turn: readonly ModelMessage[]): ModelMessage[] {
  const result: ModelMessage[] = [];
  const assistantText: string[] = [];
  for (const message of turn) {
    if (message.role === 'system' || isSummary(message)) result.push(message);
    else if (message.role === 'user') {
      if (typeof message.content === 'string') {
        result.push(message);
        continue;
      }
      const text = message.content.flatMap((part) => (part.type === 'text' ? [part.text] : []));
      const attachments = message.content.length - text.length;
      if (attachments > 0) text.push(`[${attachments} attachment${attachments === 1 ? '' : 's'} left out]`);
      result.push({ role: 'user', content: text.join('\n') });
    } else if (message.role === 'assistant') {
      if (typeof message.content === 'string') assistantText.push(message.content);
      else for (const part of message.content) if (part.type === 'text') assistantText.push(part.text);
    }
  }
  const text = assistantText.filter((item) => item.trim() !== '').join('\n\n');
  if (text) result.push({ role: 'assistant', content: text });
  return result;
}

/** A copy of `message` with its long tool outputs shortened; null when nothing was long. */
function withShortToolOutputs(message: ModelMessage, maxChars: number): ModelMessage | null {
  if (message.role !== 'tool' && message.role !== 'assistant') return null;
  if (typeof message.content === 'string') return null;
  let changed = false;
  const content = message.content.map((part) => {
    if (part.type !== 'tool-result') return part;
    const output = shortOutput(part.output, maxChars);
    if (!output) return part;
    changed = true;
    return { ...part, output };
  });
  return changed ? ({ ...message, content } as ModelMessage) : null;
}

const LEFT_OUT_OUTPUT = '[tool output left out to fit the context budget]';
const LEFT_OUT_LENGTH = jsonLength({ type: 'text', value: LEFT_OUT_OUTPUT });

/** A copy of `message` with each tool output longer than a notice left out, the notice in its place; or null. */
function withToolOutputsLeftOut(message: ModelMessage): ModelMessage | null {
  if (message.role !== 'tool' && message.role !== 'assistant') return null;
  if (typeof message.content === 'string') return null;
  let changed = false;
  const content = message.content.map((part) => {
    // Measured as sent (an image's data included), not as its text.
    if (part.type !== 'tool-result' || jsonLength(part.output) <= LEFT_OUT_LENGTH) return part;
    changed = true;
    return { ...part, output: { type: 'text' as const, value: LEFT_OUT_OUTPUT } };
  });
  return changed ? ({ ...message, content } as ModelMessage) : null;
}

type ToolOutput = ToolResultPart['output'];

function shortOutput(output: ToolOutput, maxChars: number): ToolOutput | null {
  switch (output.type) {
    case 'text':
    case 'error-text': {
      const value = shorten(output.value, maxChars);
      return value === output.value ? null : { ...output, value };
    }
    case 'json':
    case 'error-json': {
      const json = JSON.stringify(output.value);
      if (json.length <= maxChars) return null;
      return { type: output.type === 'json' ? 'text' : 'error-text', value: shorten(json, maxChars) };
    }
    case 'content': {
      // The text items are shortened together, as one text: an MCP tool's many short items (search results,
      // rows) are each under the limit and would otherwise stay whole, the output only ever left out. What is
      // not text (an image) stays as it was, after the text.
      const texts = output.value.filter((item) => item.type === 'text');
      const joined = texts.map((item) => item.text).join('\n');
      if (joined.length <= maxChars) return null;
      return {
        ...output,
        value: [
          { type: 'text', text: shorten(joined, maxChars) },
          ...output.value.filter((item) => item.type !== 'text'),
        ],
      };
    }
    default:
      return null;
  }
}

function outputText(output: ToolOutput): string {
  switch (output.type) {
    case 'text':
    case 'error-text':
      return output.value;
    case 'json':
    case 'error-json':
      return JSON.stringify(output.value);
    case 'content':
      return output.value.map((item) => (item.type === 'text' ? item.text : `[${item.type}]`)).join('\n');
    case 'execution-denied':
      return `[denied${output.reason ? `: ${output.reason}` : ''}]`;
    default:
      return '';
  }
}

/**
 * `text` cut to about `maxChars`: its head and tail with `[… N characters trimmed …]` between them.
 * Never splits a surrogate pair.
 */
export function shorten(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  let head = Math.ceil(maxChars / 2);
  let tail = text.length - Math.floor(maxChars / 2);
  if (isHighSurrogate(text.charCodeAt(head - 1))) head--;
  if (isLowSurrogate(text.charCodeAt(tail))) tail++;
  return `${text.slice(0, head)}\n[… ${tail - head} characters trimmed …]\n${text.slice(tail)}`;
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code: number) => code >= 0xdc00 && code <= 0xdfff;

/** Error codes and messages providers use for a prompt longer than the model's context window. */
const OVERFLOW_CODES = new Set(['context_length_exceeded', 'string_above_max_length', 'prompt_too_long']);
const OVERFLOW_MESSAGES = [
  /context[_ ]length[_ ]exceeded/i,
  /maximum context length/i,
  /prompt is too long/i,
  /input is too long/i,
  /exceeds? (the )?(model'?s? )?(maximum )?context (window|length|size)/i,
  /context window (is )?(exceeded|too small)/i,
  /reduce the length of the (messages|prompt|input)/i,
  /too many (input )?tokens.*(context|maximum)/i,
];

/**
 * Whether a model call failed because the prompt is longer than the model's context window (OpenAI
 * `context_length_exceeded`, Anthropic `prompt is too long`, and the generic wordings of compatible
 * servers). Looks through `cause`, retry wrappers (`errors`, `lastError`) and the response body.
 */
export function isContextOverflowError(error: unknown): boolean {
  // Outrun's own refusal: compacting harder cannot help.
  if (error instanceof ContextBudgetError) return false;
  const seen = new Set<unknown>();
  const visit = (value: unknown, depth: number): boolean => {
    if (value === null || value === undefined || depth > 5 || seen.has(value)) return false;
    if (typeof value === 'string') return OVERFLOW_MESSAGES.some((pattern) => pattern.test(value));
    if (typeof value !== 'object') return false;
    seen.add(value);
    const record = value as Record<string, unknown>;
    if (typeof record.code === 'string' && OVERFLOW_CODES.has(record.code)) return true;
    if (typeof record.type === 'string' && OVERFLOW_CODES.has(record.type)) return true;
    for (const key of ['message', 'responseBody', 'error', 'data', 'cause', 'lastError'] as const) {
      if (visit(record[key], depth + 1)) return true;
    }
    return Array.isArray(record.errors) && record.errors.some((item) => visit(item, depth + 1));
  };
  return visit(error, 0);
}
