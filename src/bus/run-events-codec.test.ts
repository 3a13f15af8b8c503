import { describe, expect, it } from 'vitest';
import { jsonCodec } from './channel.ts';
import { runEventsCodec, type RunEventsMessage } from './run-events-codec.ts';

function roundTrip(message: RunEventsMessage): RunEventsMessage {
  const encoded = runEventsCodec.encode(message);
  return runEventsCodec.decode(Buffer.isBuffer(encoded) ? encoded : Buffer.from(encoded, 'utf8'));
}

describe('run-events codec', () => {
  it('returns the message it was given', () => {
    const message: RunEventsMessage = {
      runId: 'run_01HZX',
      events: [
        { seq: 1, data: '{"type":"start"}', terminal: false },
        { seq: 2, data: '{"type":"text-delta","id":"t1","delta":"s1t0 "}', terminal: false },
        { seq: 3, data: '{"type":"data-run","data":{"status":"succeeded"}}', terminal: true },
      ],
    };
    expect(roundTrip(message)).toEqual(message);
  });

  it('keeps data with raw newlines, unicode, escaped NUL and a trailing newline byte for byte', () => {
    const awkward = [
      '{"type":"text-delta",\n"delta":"two\\nlines"}\n',
      '{"delta":"ü ✓ 日本 😀 \\u0000 \\"quoted\\" \\\\"}',
      '\n\n',
      '',
      '{"delta":"1 0 5\\n"}',
    ];
    const message: RunEventsMessage = {
      runId: 'run_awkward',
      events: awkward.map((data, index) => ({
        seq: index + 10,
        data,
        terminal: index === awkward.length - 1,
      })),
    };
    expect(roundTrip(message)).toEqual(message);
  });

  it("puts each event's data on the wire verbatim, not escaped into more JSON", () => {
    const data = '{"type":"text-delta","delta":"a \\"b\\"\\n"}';
    const encoded = runEventsCodec.encode({ runId: 'run_1', events: [{ seq: 7, data, terminal: false }] });
    expect(encoded.toString()).toBe(`run-events/1 run_1 1\n7 0 ${Buffer.byteLength(data)}\n${data}\n`);
  });

  it('carries a batch with no events', () => {
    expect(roundTrip({ runId: 'run_empty', events: [] })).toEqual({ runId: 'run_empty', events: [] });
  });

  it('rejects a run id it could not read back', () => {
    expect(() => runEventsCodec.encode({ runId: 'run 1', events: [] })).toThrow(TypeError);
    expect(() => runEventsCodec.encode({ runId: '', events: [] })).toThrow(TypeError);
  });

  it('rejects malformed payloads with a TypeError', () => {
    const good = runEventsCodec.encode({
      runId: 'run_1',
      events: [{ seq: 1, data: '{"a":1}', terminal: true }],
    }) as string;
    const malformed = [
      '',
      '{"runId":"run_1","events":[]}',
      'run-events/2 run_1 0\n',
      'run-events/1 run_1 1\n',
      good.slice(0, -1),
      `${good}extra`,
      good.replace('1 1 7', '1 1 8'),
      good.replace('1 1 7', '1 2 7'),
      good.replace('1 1 7', 'x 1 7'),
    ];
    for (const payload of malformed) {
      expect(() => runEventsCodec.decode(Buffer.from(payload, 'utf8')), JSON.stringify(payload)).toThrow(
        TypeError,
      );
    }
  });
});

describe('JSON codec', () => {
  it('returns the value it was given, and rejects what is not JSON', () => {
    const codec = jsonCodec<unknown>();
    const value = { runId: 'run_1', nested: [1, 'ü\n', null, { deep: true }] };
    expect(codec.decode(Buffer.from(codec.encode(value) as string))).toEqual(value);
    expect(() => codec.encode(undefined)).toThrow(TypeError);
    expect(() => codec.decode(Buffer.from('{"a":'))).toThrow(TypeError);
  });
});
