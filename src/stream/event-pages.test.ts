import { describe, expect, it } from 'vitest';
import {
  decodePage,
  decodePlainPage,
  decodePlainPages,
  encodePages,
  EVENTS_PER_PAGE,
  linesOf,
  plainPageText,
} from './event-pages.ts';

const events = (texts: string[], first = 1) => texts.map((data, index) => ({ seq: first + index, data }));

describe('event pages', () => {
  it('gives back every event byte for byte, through runs of deltas of several parts', async () => {
    const texts = [
      '{"type":"data-run","data":{"status":"running"}}',
      '{"type":"text-start","id":"msg_1"}',
      '{"type":"text-delta","id":"msg_1","delta":"Hello"}',
      '{"type":"text-delta","id":"msg_1","delta":" wörld \\n \\"delta\\": ✓"}',
      '{"type":"reasoning-delta","id":"r_1","delta":"hm"}',
      '{"type":"text-delta","id":"msg_1","delta":"!"}',
      '{"type":"text-delta","id":"msg_1","delta":"!","extra":1}',
      '{"type":"text-delta","id":"msg_2","delta":""}',
      '{"type":"tool-input-available","input":{"delta":"x"}}',
      '{"type":"tool-input-available","input":{"delta":"y"}}',
      '"a bare string"',
      '{}',
    ];
    expect(linesOf(texts).split('\n')[3]).toBe('\u0001" wörld \\n \\"delta\\": ✓"}');
    const [page] = await encodePages(events(texts, 41));
    expect(page).toMatchObject({ firstSeq: 41, lastSeq: 52 });
    expect(decodePage(page!)).toEqual(events(texts, 41));
    // From any point: a delta after a skipped one gets the skipped line's prefix.
    for (const after of [0, 41, 43, 44, 46, 47, 51, 52, 60]) {
      expect(decodePage(page!, after), `after ${after}`).toEqual(
        events(texts, 41).filter((event) => event.seq > after),
      );
    }
  });

  it('gives back a plain page of the group commit from any point, as bytes or as its text', () => {
    const texts = ['{"type":"text-delta","id":"t","delta":"é😀 \\n"}', '{"a":1}', '"s"', '{}'];
    const text = plainPageText(texts);
    const page = { firstSeq: 7, lastSeq: 10, bytes: Buffer.from(text) };
    // The format byte, then the texts as they are.
    expect(page.bytes[0]).toBe(2);
    for (const after of [0, 6, 7, 9, 10, 12]) {
      const expected = events(texts, 7).filter((event) => event.seq > after);
      expect(decodePage(page, after), `after ${after}`).toEqual(expected);
      expect(decodePlainPage({ firstSeq: 7, lastSeq: 10, text: text.slice(1) }, after)).toEqual(expected);
    }
    expect(() => decodePage({ ...page, lastSeq: 11 })).toThrow('holds 4 events, not 5');
    // A page of one event, and one that claims one but holds two.
    const one = { firstSeq: 3, lastSeq: 3, text: '{"a":1}' };
    expect(decodePlainPage(one)).toEqual([{ seq: 3, data: '{"a":1}' }]);
    expect(decodePlainPage(one, 3)).toEqual([]);
    expect(() => decodePlainPage({ ...one, text: '{}\n{}' })).toThrow('holds 2 events, not 1');
  });

  it('gives back the events of several plain pages read as one text, across a gap in the sequence', () => {
    // Pages 1–2, 3 (one event, as a paced run's insert writes) and 7–9, their texts joined as compaction reads them.
    const texts = ['{"a":1}', '"é😀"', '{"type":"text-delta","id":"t","delta":"x"}', '{}', '[]', '{"b":2}'];
    const pages = { firstSeqs: [1, 3, 7], lastSeqs: [2, 3, 9] };
    const text = [
      plainPageText(texts.slice(0, 2)),
      plainPageText(texts.slice(2, 3)),
      plainPageText(texts.slice(3)),
    ]
      .map((page) => page.slice(1))
      .join('\n');
    expect(decodePlainPages({ ...pages, text })).toEqual(
      [1, 2, 3, 7, 8, 9].map((seq, index) => ({ seq, data: texts[index] })),
    );
    // A count that does not match the pages' ranges, either way, is refused rather than misnumbered.
    expect(() => decodePlainPages({ ...pages, text: text + '\n{}' })).toThrow(
      '3 event pages hold 7 events, not 6',
    );
    expect(() => decodePlainPages({ ...pages, text: texts.slice(0, 5).join('\n') })).toThrow(
      'The event page at 7 holds 2 events, not 3',
    );
  });

  it('cuts full pages, and starts a new page at a gap in the sequence', async () => {
    const many = events(Array.from({ length: EVENTS_PER_PAGE + 5 }, (_, index) => `{"i":${index}}`));
    expect((await encodePages(many)).map((page) => [page.firstSeq, page.lastSeq])).toEqual([
      [1, EVENTS_PER_PAGE],
      [EVENTS_PER_PAGE + 1, EVENTS_PER_PAGE + 5],
    ]);
    const gapped = [...events(['{}', '{}']), ...events(['{}'], 7)];
    expect((await encodePages(gapped)).map((page) => [page.firstSeq, page.lastSeq])).toEqual([
      [1, 2],
      [7, 7],
    ]);
    expect(await encodePages([])).toEqual([]);
  });

  it('refuses a page whose event count does not match its range, or of an unknown format', async () => {
    const [page] = await encodePages(events(['{}', '{}']));
    expect(() => decodePage({ ...page!, lastSeq: 3 })).toThrow('holds 2 events, not 3');
    expect(() => decodePage({ ...page!, lastSeq: 3 }, 2)).toThrow('holds 2 events, not 3');
    expect(() => decodePage({ ...page!, bytes: Buffer.of(9, ...page!.bytes.subarray(1)) })).toThrow(
      'unknown format 9',
    );
  });
});
