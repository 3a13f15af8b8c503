import type {
  LanguageModelV3,
  LanguageModelV3CallOptions,
  LanguageModelV3StreamPart,
} from '@ai-sdk/provider';
import { randomUUID } from 'node:crypto';
import { wallNow } from './stats.ts';

/** The model id under which benchmark servers offer the clock model. */
export const CLOCK_MODEL_ID = 'bench-clock';

/**
 * What the clock model streams, read from the user text `{"clock": {...}}`: `tokens` text deltas, one every
 * `delayMs` milliseconds, the first one `phaseMs` after the start (so many runs do not tick in lockstep).
 * With `gate`, the first delta waits until the benchmark opens that gate (once every reader is connected).
 */
export interface ClockScript {
  tokens: number;
  delayMs: number;
  /** @default 0 */
  phaseMs?: number;
  /** The name of a gate to wait for (see `releaseClockGate`). @default none: start at once */
  gate?: string;
}

export function clockScript(script: ClockScript): string {
  return JSON.stringify({ clock: script });
}

const gates = new Map<string, { opened: Promise<number>; open: (at: number) => void }>();

function gateNamed(name: string) {
  let gate = gates.get(name);
  if (!gate) {
    let open!: (at: number) => void;
    const opened = new Promise<number>((resolve) => (open = resolve));
    gates.set(name, (gate = { opened, open }));
  }
  return gate;
}

/** Releases the clock streams waiting on gate `name`; their deltas are then paced from `at` (a `wallNow()` time). */
export function releaseClockGate(name: string, at: number = wallNow()): void {
  gateNamed(name).open(at);
}

/**
 * The emit time embedded in a text delta's SSE data (`{"type":"text-delta",…,"delta":"@<emit>~<due> "}`), or
 * null for any other chunk. Cheap: no JSON parse.
 */
export function emitTimeOf(data: string): number | null {
  const start = data.indexOf('"delta":"@');
  if (start === -1) return null;
  const from = start + 10;
  const end = data.indexOf('~', from);
  return end === -1 ? null : Number(data.slice(from, end));
}

/**
 * The time a clock delta was due (its place in the pacing schedule), or null. A delta emitted well after it
 * was due means the server's event loop was too busy to pick the token up on time, which the delivery latency
 * (measured from the emit) does not show.
 */
export function dueTimeOf(data: string): number | null {
  const start = data.indexOf('~', data.indexOf('"delta":"@'));
  if (start === -1) return null;
  const end = data.indexOf(' ', start);
  return end === -1 ? null : Number(data.slice(start + 1, end));
}

/** Resolves at `target`, a `wallNow()` time (at once when it has passed). */
export function sleepUntil(target: number): Promise<void> {
  const wait = target - wallNow();
  return wait <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, wait));
}

/** A clock delta's text, `@<emit>~<due> `, with the emit time taken now. */
export function clockDelta(due: number): string {
  return `@${wallNow().toFixed(3)}~${due.toFixed(3)} `;
}

/**
 * A model for latency benchmarks: like the scripted model, but each text delta is `@<emit>~<due> ` where `emit`
 * is `performance.timeOrigin + performance.now()` taken just before the delta is handed to the AI SDK, and
 * `due` the time the pacing schedule set for it.
 * Deltas are paced against absolute times (no drift when the event loop is late), one step, no tools.
 */
export function createClockModel(): LanguageModelV3 {
  async function* parts(
    script: ClockScript,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<LanguageModelV3StreamPart> {
    const id = `text-${randomUUID()}`;
    yield { type: 'stream-start', warnings: [] };
    yield { type: 'text-start', id };
    const start = script.gate ? await gateNamed(script.gate).opened : wallNow();
    const base = start + (script.phaseMs ?? 0);
    for (let index = 0; index < script.tokens; index++) {
      const due = base + index * script.delayMs;
      await sleepUntil(due);
      if (signal?.aborted) return;
      yield { type: 'text-delta', id, delta: clockDelta(due) };
    }
    yield { type: 'text-end', id };
    yield {
      type: 'finish',
      finishReason: { unified: 'stop', raw: 'stop' },
      usage: {
        inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 },
        outputTokens: { total: script.tokens, text: script.tokens, reasoning: 0 },
      },
    };
  }

  function scriptOf(options: LanguageModelV3CallOptions): ClockScript {
    const user = options.prompt.findLast((message) => message.role === 'user');
    const text =
      user?.role === 'user'
        ? user.content.map((part) => (part.type === 'text' ? part.text : '')).join('')
        : '';
    const parsed = JSON.parse(text) as { clock?: ClockScript };
    if (!parsed.clock) throw new Error('the clock model needs {"clock": {...}} as user text');
    return parsed.clock;
  }

  return {
    specificationVersion: 'v3',
    provider: 'outrun-bench',
    modelId: CLOCK_MODEL_ID,
    supportedUrls: {},
    async doStream(options) {
      const iterator = parts(scriptOf(options), options.abortSignal);
      const stream = new ReadableStream<LanguageModelV3StreamPart>({
        async pull(controller) {
          const next = await iterator.next();
          if (next.done) controller.close();
          else controller.enqueue(next.value);
        },
        async cancel() {
          await iterator.return(undefined);
        },
      });
      return { stream };
    },
    async doGenerate() {
      throw new Error('the clock model only streams');
    },
  };
}

/**
 * Milliseconds from the model emitting the delta carried by `data` to its arrival at `receivedAt` (reader's
 * clock), given the server clock's `offset` ahead of the reader's; null when `data` is not a clock delta.
 */
export function deliveryLatency(data: string, receivedAt: number, offset: number): number | null {
  const emittedAt = emitTimeOf(data);
  return emittedAt === null ? null : receivedAt - (emittedAt - offset);
}
