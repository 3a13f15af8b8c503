/** One dispatched Server-Sent Events message: an event (with its `id`, if any) or a comment line. */
export type SseMessage =
  | { type: 'event'; id: string | undefined; event: string | undefined; data: string }
  | { type: 'comment'; text: string };

/**
 * An incremental parser for `text/event-stream` (the WHATWG rules that matter here): lines end in CRLF,
 * LF or CR; `data` lines join with newlines; a blank line dispatches the event; `:` starts a comment.
 * Feed it decoded text in any slicing; it returns the messages completed so far.
 */
export class SseParser {
  #buffer = '';
  #data: string[] = [];
  #id: string | undefined;
  #event: string | undefined;
  #hasField = false;

  push(text: string): SseMessage[] {
    this.#buffer += text;
    const messages: SseMessage[] = [];
    let start = 0;
    for (;;) {
      let end = start;
      while (end < this.#buffer.length && this.#buffer[end] !== '\n' && this.#buffer[end] !== '\r') end++;
      if (end >= this.#buffer.length) break;
      // A CR at the very end of the buffer may be the first half of a CRLF: wait for the next piece.
      if (this.#buffer[end] === '\r' && end === this.#buffer.length - 1) break;
      const line = this.#buffer.slice(start, end);
      start = end + (this.#buffer[end] === '\r' && this.#buffer[end + 1] === '\n' ? 2 : 1);
      const message = this.#line(line);
      if (message) messages.push(message);
    }
    this.#buffer = this.#buffer.slice(start);
    return messages;
  }

  #line(line: string): SseMessage | undefined {
    if (line === '') {
      if (!this.#hasField) return undefined;
      const message: SseMessage = {
        type: 'event',
        id: this.#id,
        event: this.#event,
        data: this.#data.join('\n'),
      };
      this.#data = [];
      this.#id = undefined;
      this.#event = undefined;
      this.#hasField = false;
      return message;
    }
    if (line.startsWith(':')) return { type: 'comment', text: line.slice(1).trimStart() };
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'id') this.#id = value;
    else if (field === 'event') this.#event = value;
    else return undefined;
    this.#hasField = true;
    return undefined;
  }
}
