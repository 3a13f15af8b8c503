import { deflateRawSync, inflateRawSync } from 'node:zlib';

/**
 * Most events in one page of a compacted run. A page is inflated whole to read any event of it, so this
 * bounds the work of a resume from the middle of a page (about a millisecond for 1,000 text deltas) while
 * leaving deflate enough repetition to reach a few bytes per delta.
 */
export const EVENTS_PER_PAGE = 1000;

/** One page as stored: the events `firstSeq` through `lastSeq`, every one of them, compressed. */
export interface EncodedPage {
  firstSeq: number;
  lastSeq: number;
  bytes: Buffer;
}

/** A page's separator: `JSON.stringify` escapes newlines inside strings, so chunk text never holds one. */
const SEPARATOR = '\n';

/**
 * Cuts consecutive events into pages of at most `EVENTS_PER_PAGE`, each the deflate-raw of the events' JSON
 * texts joined by newlines. A gap in the sequence starts a new page, so every page covers a dense range.
 */
export function encodePages(events: readonly { seq: number; data: string }[]): EncodedPage[] {
  const pages: EncodedPage[] = [];
  let start = 0;
  for (let index = 1; index <= events.length; index++) {
    const full = index - start === EVENTS_PER_PAGE;
    const gap = index < events.length && events[index]!.seq !== events[index - 1]!.seq + 1;
    if (index < events.length && !full && !gap) continue;
    const slice = events.slice(start, index);
    for (const event of slice) {
      if (event.data.includes(SEPARATOR)) {
        throw new Error(`Event ${event.seq} holds a raw newline and cannot be paged.`);
      }
    }
    pages.push({
      firstSeq: slice[0]!.seq,
      lastSeq: slice[slice.length - 1]!.seq,
      bytes: deflateRawSync(slice.map((event) => event.data).join(SEPARATOR)),
    });
    start = index;
  }
  return pages;
}

/** The events of one stored page, with their sequence numbers. */
export function decodePage(page: {
  firstSeq: number;
  lastSeq: number;
  bytes: Uint8Array;
}): { seq: number; data: string }[] {
  const texts = inflateRawSync(page.bytes).toString('utf8').split(SEPARATOR);
  if (texts.length !== page.lastSeq - page.firstSeq + 1) {
    throw new Error(
      `The event page at ${page.firstSeq} holds ${texts.length} events, not ${page.lastSeq - page.firstSeq + 1}.`,
    );
  }
  return texts.map((data, index) => ({ seq: page.firstSeq + index, data }));
}
