/** One frame of a Server-Sent Events stream as a test sees it. */
export interface SseFrame {
  id: number | null;
  data: string | null;
  comment: string | null;
}

/** Parses an SSE response body frame by frame. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame: SseFrame = { id: null, data: null, comment: null };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) frame.comment = line.slice(1).trim();
        else if (line.startsWith('id: ')) frame.id = Number(line.slice(4));
        else if (line.startsWith('data: ')) frame.data = line.slice(6);
      }
      yield frame;
    }
  }
}

export interface StreamEvent {
  seq: number;
  chunk: { type: string; [key: string]: unknown };
}

export interface CollectedStream {
  events: StreamEvent[];
  done: boolean;
  comments: string[];
}

/**
 * Reads a run stream until `[DONE]`, or until `stopAfter` events when given (then the connection is
 * dropped, as a closing tab would).
 */
export async function collectStream(
  response: Response,
  options: { stopAfter?: number } = {},
): Promise<CollectedStream> {
  if (!response.body) throw new Error(`no body (status ${response.status})`);
  const result: CollectedStream = { events: [], done: false, comments: [] };
  const reader = readSse(response.body);
  try {
    for await (const frame of reader) {
      if (frame.comment !== null) result.comments.push(frame.comment);
      if (frame.data === '[DONE]') {
        result.done = true;
        break;
      }
      if (frame.data !== null && frame.id !== null) {
        result.events.push({ seq: frame.id, chunk: JSON.parse(frame.data) });
        if (options.stopAfter !== undefined && result.events.length >= options.stopAfter) break;
      }
    }
  } finally {
    await reader.return(undefined);
  }
  return result;
}

/** The concatenated `text-delta`s of a stream. */
export function streamedText(events: StreamEvent[]): string {
  return events
    .filter((event) => event.chunk.type === 'text-delta')
    .map((event) => event.chunk.delta as string)
    .join('');
}

/** The expected answer of a scripted run (DESIGN §6): delta i of step s is `s<s>t<i> `. */
export function scriptedText(steps: number, tokens: number): string {
  let text = '';
  for (let s = 1; s <= steps; s++) for (let i = 0; i < tokens; i++) text += `s${s}t${i} `;
  return text;
}

export function script(options: {
  steps?: number;
  tokens?: number;
  delayMs?: number;
  tool?: boolean | string;
  toolInput?: Record<string, unknown>;
  failAtStep?: number;
  echoInput?: boolean;
}) {
  return JSON.stringify({ script: options });
}

/**
 * The text of a stream as its final answer reads, without steps a crash or shutdown interrupted: the
 * deltas of each step that finished, in order. Interrupted steps are closed by `data-step-interrupted`.
 */
export function answeredText(events: StreamEvent[]): string {
  let text = '';
  let step = '';
  for (const { chunk } of events) {
    if (chunk.type === 'start-step') step = '';
    else if (chunk.type === 'text-delta') step += chunk.delta as string;
    else if (chunk.type === 'finish-step') text += step;
    else if (chunk.type === 'data-step-interrupted') step = '';
  }
  return text;
}

/** The text parts of a message, without the parts of steps marked interrupted. */
export function messageText(parts: { type: string; text?: string }[]): string {
  let text = '';
  let step = '';
  for (const part of parts) {
    if (part.type === 'step-start') {
      text += step;
      step = '';
    } else if (part.type === 'text') step += part.text ?? '';
    else if (part.type === 'data-step-interrupted') step = '';
  }
  return text + step;
}
