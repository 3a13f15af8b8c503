import type { ProviderMetadata, UIMessage } from 'ai';
import { RUN_STATUS_CHUNK_TYPE, STEP_INTERRUPTED_CHUNK_TYPE, type RunChunk } from './chunks.ts';
import type { StepInterruptedChunk } from './run.ts';

type Part = UIMessage['parts'][number];

/** The parts of one finished step, as `MessageProjector.push` returns them at its `finish-step`. */
export type ProjectedStep = {
  /** 0-based number of the step among the message's finished steps (interrupted steps do not count). */
  index: number;
  /** The parts added since the previous finished or interrupted step: its `step-start` and everything after it. */
  parts: UIMessage['parts'];
};

/**
 * A chunk that does not fit the stream so far (a delta for a part that never started, a result for an
 * unknown tool call). The same cases make the AI SDK's own reader throw `UIMessageStreamError`.
 */
export class MalformedStreamError extends Error {
  readonly chunkType: string;
  readonly chunkId: string;

  constructor(options: { chunkType: string; chunkId: string; message: string }) {
    super(options.message);
    this.name = 'MalformedStreamError';
    this.chunkType = options.chunkType;
    this.chunkId = options.chunkId;
  }
}

/**
 * Appends text pieces in O(1) and joins them lazily. A join caches its result, so reading the text
 * after every few pushes still costs O(total length) overall.
 */
class TextBuffer {
  private readonly pieces: string[] = [];
  private joined = '';
  private joinedCount = 0;

  append(piece: string): void {
    this.pieces.push(piece);
  }

  get count(): number {
    return this.pieces.length;
  }

  /** The concatenation of the first `count` pieces (default: all). */
  text(count = this.pieces.length): string {
    if (count < this.joinedCount) return this.pieces.slice(0, count).join('');
    if (count > this.joinedCount) {
      this.joined += this.pieces.slice(this.joinedCount, count).join('');
      this.joinedCount = count;
    }
    return this.joined;
  }
}

type TextEntry = {
  kind: 'text' | 'reasoning';
  id: string;
  buffer: TextBuffer;
  state: 'streaming' | 'done';
  providerMetadata: ProviderMetadata | undefined;
};

type PartialToolCall = {
  buffer: TextBuffer;
  inputEncoding: 'json' | 'text' | undefined;
  toolName: string;
  dynamic: boolean | undefined;
  title: string | undefined;
  toolMetadata: Record<string, unknown> | undefined;
};

type ToolEntry = {
  kind: 'tool';
  /** The part's fields. `input` and `rawInput` come from `streaming` while the input streams. */
  part: Record<string, unknown> & { type: string; toolCallId: string };
  /** Set while the part shows streamed input: the buffer and how many pieces it had at the update. */
  streaming: { buffer: TextBuffer; count: number; inputEncoding: 'json' | 'text' | undefined } | undefined;
};

type PlainEntry = { kind: 'plain'; part: Part };

type Entry = TextEntry | ToolEntry | PlainEntry;

/** Fields of a tool update, mirroring what the AI SDK sets on a tool part for each chunk. */
type ToolUpdate = {
  state: string;
  input?: unknown;
  output?: unknown;
  errorText?: string;
  rawInput?: unknown;
  inputEncoding?: 'json' | 'text';
  preliminary?: boolean;
  providerExecuted?: boolean;
  providerMetadata?: ProviderMetadata;
  title?: string;
  toolMetadata?: Record<string, unknown>;
};

function setOrDelete(target: Record<string, unknown>, key: string, value: unknown): void {
  if (value === undefined) delete target[key];
  else target[key] = value;
}

/** The input of a tool part whose input is still streaming: the raw text, or its JSON once it parses. */
function streamedInput(text: string, inputEncoding: 'json' | 'text' | undefined): unknown {
  if (inputEncoding === 'text') return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Projects a UI message stream onto the assistant message's `parts`, chunk by chunk, with the same result
 * as the AI SDK's `readUIMessageStream` (`data-run` lifecycle chunks and transient data parts excluded).
 *
 * Each chunk costs O(1) amortized: text is kept as pieces and joined only when parts are read, and no part
 * is cloned per chunk. `push` returns the finished step at each `finish-step`, so a caller can persist
 * steps as they finish (O(steps) writes) and write the in-flight step once at the end.
 *
 * A `data-step-interrupted` chunk closes a step a crash cut short: its open text and reasoning parts end
 * (`done`), the chunk stays in the parts as a data part right after them, and the step is not reported as
 * finished; the redone step that follows starts with its own `step-start`. `withoutInterruptedSteps`
 * leaves such steps out (for the model's history). The projector imports nothing from `ai` at runtime,
 * so browsers can run it.
 *
 * Returned parts share `input`, `output` and `data` values with the pushed chunks; treat them as read-only.
 * Unlike the SDK, a tool input that is still streaming and is not yet valid JSON projects as `undefined`
 * (the SDK repairs partial JSON); `rawInput` always has the streamed text.
 */
export class MessageProjector {
  private readonly entries: Entry[] = [];
  /** `entries` index where the current step begins: after the last finished or interrupted step. */
  private stepStart = 0;
  /** How many steps have finished (interrupted steps excluded). */
  private finishedSteps = 0;
  private readonly activeText = new Map<string, TextEntry>();
  private readonly activeReasoning = new Map<string, TextEntry>();
  private readonly partialToolCalls = new Map<string, PartialToolCall>();
  /** Tool parts since the last `step-start`: any kind (first wins), static only, dynamic only. */
  private stepTools = new Map<string, ToolEntry>();
  private stepStaticTools = new Map<string, ToolEntry>();
  private stepDynamicTools = new Map<string, ToolEntry>();
  /** The latest tool part per tool call id, across steps. */
  private readonly latestTools = new Map<string, ToolEntry>();
  /** The first data part per `type` and `id`; a later chunk with the same pair replaces its data. */
  private readonly dataParts = new Map<string, PlainEntry>();

  /**
   * A projector that continues `parts`: chunks pushed to it apply as they would to the projector that
   * produced those parts from the whole stream. `parts` must end where a step ended (its `finish-step` or
   * `data-step-interrupted`), as a streaming message's parts do through its `streamSeq`: a step in flight
   * could not go on, since text parts do not keep their stream ids. The parts are copied, not mutated.
   */
  static fromParts(parts: readonly Part[]): MessageProjector {
    const projector = new MessageProjector();
    let stepOpen = false;
    for (const source of parts) {
      const part = { ...source } as Part;
      if (part.type === 'step-start') {
        if (stepOpen) projector.finishedSteps++;
        stepOpen = true;
        projector.stepTools = new Map();
        projector.stepStaticTools = new Map();
        projector.stepDynamicTools = new Map();
      } else if (part.type === STEP_INTERRUPTED_CHUNK_TYPE) {
        stepOpen = false;
      }
      if (isToolPart(part)) {
        const entry: ToolEntry = {
          kind: 'tool',
          part: part as ToolEntry['part'],
          streaming: undefined,
        };
        projector.entries.push(entry);
        const toolCallId = entry.part.toolCallId;
        const byKind = part.type === 'dynamic-tool' ? projector.stepDynamicTools : projector.stepStaticTools;
        if (!byKind.has(toolCallId)) byKind.set(toolCallId, entry);
        if (!projector.stepTools.has(toolCallId)) projector.stepTools.set(toolCallId, entry);
        projector.latestTools.set(toolCallId, entry);
        continue;
      }
      // Text and reasoning of a finished step never change again, so they are kept as they are.
      const entry = projector.pushPlain(part);
      const id = (part as { id?: unknown }).id;
      if (part.type.startsWith('data-') && id != null) {
        const key = `${part.type}\u0000${String(id)}`;
        if (!projector.dataParts.has(key)) projector.dataParts.set(key, entry);
      }
    }
    if (stepOpen) projector.finishedSteps++;
    projector.stepStart = projector.entries.length;
    return projector;
  }

  /** Applies one chunk. At a `finish-step` chunk, returns the parts of the step that just finished. */
  push(chunk: RunChunk): ProjectedStep | undefined {
    switch (chunk.type) {
      case 'text-start':
      case 'reasoning-start': {
        const kind = chunk.type === 'text-start' ? 'text' : 'reasoning';
        const entry: TextEntry = {
          kind,
          id: chunk.id,
          buffer: new TextBuffer(),
          state: 'streaming',
          providerMetadata: chunk.providerMetadata,
        };
        (kind === 'text' ? this.activeText : this.activeReasoning).set(chunk.id, entry);
        this.entries.push(entry);
        return undefined;
      }
      case 'text-delta':
      case 'reasoning-delta': {
        const entry = this.activeTextEntry(chunk.type, chunk.id);
        entry.buffer.append(chunk.delta);
        entry.providerMetadata = chunk.providerMetadata ?? entry.providerMetadata;
        return undefined;
      }
      case 'text-end':
      case 'reasoning-end': {
        const entry = this.activeTextEntry(chunk.type, chunk.id);
        entry.state = 'done';
        entry.providerMetadata = chunk.providerMetadata ?? entry.providerMetadata;
        (chunk.type === 'text-end' ? this.activeText : this.activeReasoning).delete(chunk.id);
        return undefined;
      }
      case 'file':
        this.pushPlain({
          type: 'file',
          mediaType: chunk.mediaType,
          url: chunk.url,
          ...(chunk.providerMetadata != null ? { providerMetadata: chunk.providerMetadata } : {}),
        });
        return undefined;
      case 'source-url':
        this.pushPlain(
          withoutUndefined({
            type: 'source-url',
            sourceId: chunk.sourceId,
            url: chunk.url,
            title: chunk.title,
            providerMetadata: chunk.providerMetadata,
          }) as Part,
        );
        return undefined;
      case 'source-document':
        this.pushPlain(
          withoutUndefined({
            type: 'source-document',
            sourceId: chunk.sourceId,
            mediaType: chunk.mediaType,
            title: chunk.title,
            filename: chunk.filename,
            providerMetadata: chunk.providerMetadata,
          }) as Part,
        );
        return undefined;
      case 'tool-input-start': {
        this.partialToolCalls.set(chunk.toolCallId, {
          buffer: new TextBuffer(),
          inputEncoding: chunk.inputEncoding,
          toolName: chunk.toolName,
          dynamic: chunk.dynamic,
          title: chunk.title,
          toolMetadata: chunk.toolMetadata,
        });
        this.updateTool(chunk.toolCallId, chunk.toolName, chunk.dynamic === true, {
          state: 'input-streaming',
          inputEncoding: chunk.inputEncoding,
          providerExecuted: chunk.providerExecuted,
          title: chunk.title,
          toolMetadata: chunk.toolMetadata,
          providerMetadata: chunk.providerMetadata,
        });
        return undefined;
      }
      case 'tool-input-delta': {
        const partial = this.partialToolCalls.get(chunk.toolCallId);
        if (partial === undefined) {
          throw new MalformedStreamError({
            chunkType: 'tool-input-delta',
            chunkId: chunk.toolCallId,
            message: `Received tool-input-delta for missing tool call with ID "${chunk.toolCallId}".`,
          });
        }
        partial.buffer.append(chunk.inputTextDelta);
        const entry = this.updateTool(chunk.toolCallId, partial.toolName, partial.dynamic === true, {
          state: 'input-streaming',
          inputEncoding: partial.inputEncoding,
          title: partial.title,
          toolMetadata: partial.toolMetadata,
        });
        entry.streaming = {
          buffer: partial.buffer,
          count: partial.buffer.count,
          inputEncoding: partial.inputEncoding,
        };
        return undefined;
      }
      case 'tool-input-available':
        this.updateTool(chunk.toolCallId, chunk.toolName, chunk.dynamic === true, {
          state: 'input-available',
          input: chunk.input,
          providerExecuted: chunk.providerExecuted,
          providerMetadata: chunk.providerMetadata,
          title: chunk.title,
          toolMetadata: chunk.toolMetadata,
        });
        return undefined;
      case 'tool-input-error': {
        const existing = this.stepTools.get(chunk.toolCallId);
        const dynamic =
          existing !== undefined ? existing.part.type === 'dynamic-tool' : chunk.dynamic === true;
        this.updateTool(chunk.toolCallId, chunk.toolName, dynamic, {
          state: 'output-error',
          ...(dynamic ? { input: chunk.input } : { rawInput: chunk.input }),
          errorText: chunk.errorText,
          providerExecuted: chunk.providerExecuted,
          providerMetadata: chunk.providerMetadata,
          toolMetadata: chunk.toolMetadata,
        });
        return undefined;
      }
      case 'tool-approval-request': {
        const entry = this.toolInvocation(chunk.type, chunk.toolCallId);
        this.settleStreamingInput(entry);
        entry.part.state = 'approval-requested';
        entry.part.approval = {
          id: chunk.approvalId,
          ...(chunk.approvalDescriptor != null ? { descriptor: chunk.approvalDescriptor } : {}),
          ...(Object.prototype.hasOwnProperty.call(chunk, 'inputSchemaInput')
            ? { inputSchemaInput: chunk.inputSchemaInput }
            : {}),
          ...(chunk.signature != null ? { signature: chunk.signature } : {}),
        };
        return undefined;
      }
      case 'tool-output-denied': {
        const entry = this.toolInvocation(chunk.type, chunk.toolCallId);
        this.settleStreamingInput(entry);
        entry.part.state = 'output-denied';
        return undefined;
      }
      case 'tool-output-available':
      case 'tool-output-error': {
        const entry = this.toolInvocation(chunk.type, chunk.toolCallId);
        this.settleStreamingInput(entry);
        const { part } = entry;
        const dynamic = part.type === 'dynamic-tool';
        const common = {
          input: part.input,
          providerExecuted: chunk.providerExecuted,
          providerMetadata: chunk.providerMetadata,
          title: part.title as string | undefined,
          toolMetadata: chunk.toolMetadata ?? (part.toolMetadata as Record<string, unknown> | undefined),
        };
        const update: ToolUpdate =
          chunk.type === 'tool-output-available'
            ? { ...common, state: 'output-available', output: chunk.output, preliminary: chunk.preliminary }
            : {
                ...common,
                state: 'output-error',
                errorText: chunk.errorText,
                ...(dynamic ? {} : { rawInput: part.rawInput }),
              };
        const toolName = dynamic ? (part.toolName as string) : part.type.slice('tool-'.length);
        this.applyToolUpdate(entry, toolName, update);
        return undefined;
      }
      case 'start-step':
        this.pushPlain({ type: 'step-start' });
        this.stepTools = new Map();
        this.stepStaticTools = new Map();
        this.stepDynamicTools = new Map();
        return undefined;
      case 'finish-step': {
        this.activeText.clear();
        this.activeReasoning.clear();
        const start = this.stepStart;
        this.stepStart = this.entries.length;
        return { index: this.finishedSteps++, parts: this.materialize(start, this.entries.length) };
      }
      case STEP_INTERRUPTED_CHUNK_TYPE: {
        // The step was cut short: its open parts end as they are, and the redone step starts afresh.
        for (const entry of [...this.activeText.values(), ...this.activeReasoning.values()])
          entry.state = 'done';
        this.activeText.clear();
        this.activeReasoning.clear();
        const { data } = chunk as StepInterruptedChunk;
        this.pushPlain({ type: STEP_INTERRUPTED_CHUNK_TYPE, data: { step: data.step, reason: data.reason } });
        this.stepStart = this.entries.length;
        return undefined;
      }
      case 'start':
      case 'finish':
      case 'abort':
      case 'error':
      case 'message-metadata':
        return undefined;
      default: {
        if (!chunk.type.startsWith('data-') || chunk.type === RUN_STATUS_CHUNK_TYPE) return undefined;
        const data = chunk as { type: `data-${string}`; id?: string; data: unknown; transient?: boolean };
        if (data.transient) return undefined;
        const key = data.id != null ? `${data.type}\u0000${data.id}` : undefined;
        const existing = key !== undefined ? this.dataParts.get(key) : undefined;
        if (existing !== undefined) {
          (existing.part as { data: unknown }).data = data.data;
        } else {
          const entry = this.pushPlain({ ...data } as Part);
          if (key !== undefined) this.dataParts.set(key, entry);
        }
        return undefined;
      }
    }
  }

  /** All parts so far, including the step in flight. */
  parts(): UIMessage['parts'] {
    return this.materialize(0, this.entries.length);
  }

  private activeTextEntry(type: string, id: string): TextEntry {
    const entry = (type.startsWith('text') ? this.activeText : this.activeReasoning).get(id);
    if (entry === undefined) {
      const kind = type.startsWith('text') ? 'text' : 'reasoning';
      throw new MalformedStreamError({
        chunkType: type,
        chunkId: id,
        message: `Received ${type} for missing ${kind} part with ID "${id}".`,
      });
    }
    return entry;
  }

  private pushPlain(part: Part): PlainEntry {
    const entry: PlainEntry = { kind: 'plain', part };
    this.entries.push(entry);
    return entry;
  }

  /** The tool part a result or approval refers to: in the current step, else the latest one. */
  private toolInvocation(chunkType: string, toolCallId: string): ToolEntry {
    const entry = this.stepTools.get(toolCallId) ?? this.latestTools.get(toolCallId);
    if (entry === undefined) {
      throw new MalformedStreamError({
        chunkType,
        chunkId: toolCallId,
        message: `No tool invocation found for tool call ID "${toolCallId}".`,
      });
    }
    return entry;
  }

  /** Fixes the streamed input of a tool part into plain fields before other fields change. */
  private settleStreamingInput(entry: ToolEntry): void {
    if (entry.streaming === undefined) return;
    const text = entry.streaming.buffer.text(entry.streaming.count);
    setOrDelete(entry.part, 'input', streamedInput(text, entry.streaming.inputEncoding));
    entry.part.rawInput = text;
    entry.streaming = undefined;
  }

  /** Updates the current step's tool part for `toolCallId`, or adds one. */
  private updateTool(toolCallId: string, toolName: string, dynamic: boolean, update: ToolUpdate): ToolEntry {
    let entry = (dynamic ? this.stepDynamicTools : this.stepStaticTools).get(toolCallId);
    if (entry === undefined) {
      entry = {
        kind: 'tool',
        part: dynamic
          ? { type: 'dynamic-tool', toolName, toolCallId, state: update.state }
          : { type: `tool-${toolName}`, toolCallId, state: update.state },
        streaming: undefined,
      };
      this.entries.push(entry);
      (dynamic ? this.stepDynamicTools : this.stepStaticTools).set(toolCallId, entry);
      if (!this.stepTools.has(toolCallId)) this.stepTools.set(toolCallId, entry);
      this.latestTools.set(toolCallId, entry);
    }
    this.applyToolUpdate(entry, toolName, update);
    return entry;
  }

  /** Sets a tool part's fields the way the AI SDK's `updateToolPart` / `updateDynamicToolPart` do. */
  private applyToolUpdate(entry: ToolEntry, toolName: string, update: ToolUpdate): void {
    const { part } = entry;
    entry.streaming = undefined;
    part.state = update.state;
    if (part.type === 'dynamic-tool') part.toolName = toolName;
    else part.type = `tool-${toolName}`;
    setOrDelete(part, 'input', update.input);
    setOrDelete(part, 'output', update.output);
    setOrDelete(part, 'errorText', update.errorText);
    setOrDelete(part, 'rawInput', update.rawInput);
    setOrDelete(part, 'inputEncoding', update.inputEncoding);
    setOrDelete(part, 'preliminary', update.preliminary);
    if (update.title !== undefined) part.title = update.title;
    if (update.toolMetadata !== undefined) part.toolMetadata = update.toolMetadata;
    if (update.providerExecuted !== undefined) part.providerExecuted = update.providerExecuted;
    if (update.providerMetadata != null) {
      const isResult = update.state === 'output-available' || update.state === 'output-error';
      part[isResult ? 'resultProviderMetadata' : 'callProviderMetadata'] = update.providerMetadata;
    }
  }

  private materialize(start: number, end: number): UIMessage['parts'] {
    const parts: Part[] = [];
    for (let index = start; index < end; index++) {
      parts.push(materializeEntry(this.entries[index] as Entry));
    }
    return parts;
  }
}

function materializeEntry(entry: Entry): Part {
  switch (entry.kind) {
    case 'plain':
      return { ...entry.part } as Part;
    case 'text':
    case 'reasoning':
      return {
        type: entry.kind,
        ...(entry.kind === 'reasoning' ? { id: entry.id } : {}),
        text: entry.buffer.text(),
        state: entry.state,
        ...(entry.providerMetadata != null ? { providerMetadata: entry.providerMetadata } : {}),
      } as Part;
    case 'tool': {
      const part: Record<string, unknown> = { ...entry.part };
      if (entry.streaming !== undefined) {
        const text = entry.streaming.buffer.text(entry.streaming.count);
        setOrDelete(part, 'input', streamedInput(text, entry.streaming.inputEncoding));
        part.rawInput = text;
      }
      return part as Part;
    }
  }
}

/** Whether a message part is a tool call (a static or a dynamic tool). */
export function isToolPart(part: { type: string }): boolean {
  return part.type.startsWith('tool-') || part.type === 'dynamic-tool';
}

function withoutUndefined(object: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

/**
 * `parts` without the steps a crash cut short: for each `data-step-interrupted` part, its step's parts
 * from its `step-start` through the data part itself. What remains is what the model finished saying.
 */
export function withoutInterruptedSteps(parts: readonly Part[]): Part[] {
  const kept: Part[] = [];
  let stepStart = -1;
  for (const part of parts) {
    if (part.type === STEP_INTERRUPTED_CHUNK_TYPE) {
      if (stepStart !== -1) kept.length = stepStart;
      stepStart = -1;
      continue;
    }
    if (part.type === 'step-start') stepStart = kept.length;
    kept.push(part);
  }
  return kept;
}

/** The text of `parts`: their text parts' text, concatenated. */
export function textOf(parts: readonly Part[]): string {
  let text = '';
  for (const part of parts) if (part.type === 'text') text += part.text;
  return text;
}
