import { describe, expect, it } from 'vitest';
import {
  formatKeepAlive,
  formatSseComment,
  formatSseEvent,
  SSE_DONE_FRAME,
  SseParser,
  type SseMessage,
} from './sse.ts';

function parseAll(pieces: string[]): SseMessage[] {
  const parser = new SseParser();
  return pieces.flatMap((piece) => parser.push(piece));
}

describe('SseParser', () => {
  const stream = 'id: 1\ndata: {"a":1}\n\n: ping 1\n\nid: 2\ndata: x\ndata: y\n\ndata: [DONE]\n\n';
  const expected: SseMessage[] = [
    { type: 'event', id: '1', event: undefined, data: '{"a":1}' },
    { type: 'comment', text: 'ping 1' },
    { type: 'event', id: '2', event: undefined, data: 'x\ny' },
    { type: 'event', id: undefined, event: undefined, data: '[DONE]' },
  ];

  it('parses events, multi-line data and comments', () => {
    expect(parseAll([stream])).toEqual(expected);
  });

  it('gives the same result however the text is sliced', () => {
    expect(parseAll(stream.split(''))).toEqual(expected);
    expect(parseAll([stream.slice(0, 9), stream.slice(9, 30), stream.slice(30)])).toEqual(expected);
  });

  it('accepts CRLF and CR line endings, even with CRLF split across pieces', () => {
    const crlf = stream.replaceAll('\n', '\r\n');
    expect(parseAll([crlf])).toEqual(expected);
    expect(
      parseAll(crlf.split('\n').map((line, index, all) => (index < all.length - 1 ? `${line}\n` : line))),
    ).toEqual(expected);
    expect(parseAll(crlf.split(''))).toEqual(expected);
    expect(parseAll([stream.replaceAll('\n', '\r')])).toEqual(expected.slice(0, 3));
  });

  it('keeps an unfinished event until its blank line arrives, and ignores unknown fields', () => {
    const parser = new SseParser();
    expect(parser.push('retry: 10\nid: 5\ndata: a')).toEqual([]);
    expect(parser.push('\n\n')).toEqual([{ type: 'event', id: '5', event: undefined, data: 'a' }]);
    expect(parser.push('event: custom\ndata:no-space\n\n')).toEqual([
      { type: 'event', id: undefined, event: 'custom', data: 'no-space' },
    ]);
  });
});

describe('SSE formatting', () => {
  it('frames an event with its id and data, and the end without an id', () => {
    expect(formatSseEvent({ id: 7, data: '{"type":"start"}' })).toBe('id: 7\ndata: {"type":"start"}\n\n');
    expect(formatSseEvent({ data: 'x' })).toBe('data: x\n\n');
    expect(SSE_DONE_FRAME).toBe('data: [DONE]\n\n');
  });

  it('frames keep-alive comments with the last durable sequence number', () => {
    expect(formatKeepAlive(42)).toBe(': ping 42\n\n');
    expect(formatSseComment('a\nb')).toBe(': a b\n\n');
  });

  it('reads back exactly what it writes, multi-line data included', () => {
    const frames =
      formatSseEvent({ id: 1, data: '{"a":1}' }) +
      formatKeepAlive(1) +
      formatSseEvent({ id: 2, data: 'line 1\nline 2\r\nline 3' }) +
      SSE_DONE_FRAME;
    expect(new SseParser().push(frames)).toEqual([
      { type: 'event', id: '1', event: undefined, data: '{"a":1}' },
      { type: 'comment', text: 'ping 1' },
      { type: 'event', id: '2', event: undefined, data: 'line 1\nline 2\nline 3' },
      { type: 'event', id: undefined, event: undefined, data: '[DONE]' },
    ]);
  });
});
