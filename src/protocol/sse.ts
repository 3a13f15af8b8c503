import { createParser, type EventSourceParser } from 'eventsource-parser';

/**
 * Server-Sent Events framing as the run stream uses it (DESIGN §5): `id: <seq>` and `data: <chunk JSON>`
 * per event, `: ping <last seq>` keep-alive comments, and `data: [DONE]` (no id) after the last event.
 * The server writes with the formatters; clients read with `SseParser`.
 */

/** The `data` of the event that ends a run's stream. */
export const SSE_DONE_DATA = '[DONE]';

/** The line breaks the SSE format accepts; a `data` value with any of them becomes several `data` lines. */
const LINE_BREAK = /\r\n|\r|\n/;

/** Frames one event: its `id` line (when given) and its `data` line(s), ending with a blank line. */
export function formatSseEvent(event: { id?: string | number; data: string }): string {
  const data = LINE_BREAK.test(event.data)
    ? event.data
        .split(LINE_BREAK)
        .map((line) => `data: ${line}`)
        .join('\n')
    : `data: ${event.data}`;
  return event.id === undefined ? `${data}\n\n` : `id: ${event.id}\n${data}\n\n`;
}

/** Frames a comment, which readers ignore and which keeps an idle connection alive. */
export function formatSseComment(text: string): string {
  return `: ${text.split(LINE_BREAK).join(' ')}\n\n`;
}

/** The keep-alive comment of a run stream: `: ping <last durable seq>`. */
export function formatKeepAlive(lastSeq: number): string {
  return formatSseComment(`ping ${lastSeq}`);
}

/** The frame that ends a run's stream: `data: [DONE]`, without an id. */
export const SSE_DONE_FRAME = formatSseEvent({ data: SSE_DONE_DATA });

/** One dispatched Server-Sent Events message: an event (with its `id`, if any) or a comment line. */
export type SseMessage =
  | { type: 'event'; id: string | undefined; event: string | undefined; data: string }
  | { type: 'comment'; text: string };

/**
 * An incremental `text/event-stream` reader on `eventsource-parser` (the WHATWG rules: CRLF, LF or CR
 * line endings, multi-line `data`, comments). Feed it decoded text in any slicing; `push` returns the
 * messages completed so far. Use one parser per connection.
 */
export class SseParser {
  readonly #parser: EventSourceParser;
  #messages: SseMessage[] = [];

  constructor() {
    this.#parser = createParser({
      onEvent: (event) =>
        this.#messages.push({ type: 'event', id: event.id, event: event.event, data: event.data }),
      onComment: (text) => this.#messages.push({ type: 'comment', text: text.trimStart() }),
    });
  }

  push(text: string): SseMessage[] {
    this.#parser.feed(text);
    const messages = this.#messages;
    this.#messages = [];
    return messages;
  }
}
