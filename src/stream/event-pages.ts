import { promisify } from 'node:util';
import { brotliCompress, brotliCompressSync, brotliDecompressSync, constants } from 'node:zlib';

const compressOnThreadPool = promisify(brotliCompress);

/**
 * Pages of fewer characters than this are compressed on the event loop; larger ones on libuv's thread pool, so
 * that the loop streaming every other run's tokens never waits long. The hop to the pool costs more CPU than a
 * small page's compression: about 0.32 ms against 0.07 ms for a short run's page of 1.5 KB, 0.48 against 0.22
 * at 16 KB (Node 24 on the benchmark machine, docs/benchmarks.md).
 */
const COMPRESS_ON_LOOP_BELOW = 16 * 1024;

async function compress(text: string): Promise<Buffer> {
  const options = brotliOptions(Buffer.byteLength(text));
  if (text.length >= COMPRESS_ON_LOOP_BELOW) return compressOnThreadPool(text, options);
  const compressed = brotliCompressSync(text, options);
  // Let the loop serve I/O before the next page: a batch of short runs never holds it for more than one page.
  await new Promise((resolve) => setImmediate(resolve));
  return compressed;
}

/**
 * Brotli at a quality that compresses a page of text deltas in well under a millisecond, with a window no
 * larger than the page. At the default window (4 MiB) the encoder allocates buffers for it whatever the
 * input, and in a busy process that fresh memory can cost a short run's page more than compressing it: 43–216
 * µs of CPU against 35–69 for a page of 424 bytes, in three rounds between bursts of allocations
 * (`bench/passes/2026-12-05b-amd-epyc/brotli-window.txt`; no difference in a tight loop). The output is the
 * same but for the window's size in its header.
 */
function brotliOptions(bytes: number) {
  const windowBits = Math.min(
    constants.BROTLI_DEFAULT_WINDOW,
    Math.max(constants.BROTLI_MIN_WINDOW_BITS, Math.ceil(Math.log2(bytes + 1))),
  );
  return {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 5,
      [constants.BROTLI_PARAM_LGWIN]: windowBits,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes,
    },
  };
}

/**
 * Most events in one page of a compacted run. A page is decompressed whole to read any event of it, so this
 * bounds the work of a resume from the middle of a page (well under a millisecond for 1,000 text deltas)
 * while leaving the compressor enough context to store a delta in a few bytes.
 */
export const EVENTS_PER_PAGE = 1000;

/** One page as stored: the events `firstSeq` through `lastSeq`, every one of them, compressed. */
export interface EncodedPage {
  firstSeq: number;
  lastSeq: number;
  bytes: Buffer;
}

/**
 * The first byte of a page: how its events are encoded, so one format can be read beside another.
 * Format 1 (`COMPRESSED`, a compacted run): brotli of the events' lines (see `linesOf`) joined by newlines.
 * Format 2 (`PLAIN`, what the group commit writes while a run streams): the events' JSON texts joined by
 * newlines, as they are.
 */
const COMPRESSED = 1;
export const PLAIN = 2;

/** Between two events: `JSON.stringify` escapes newlines inside strings, so chunk text never holds one. */
export const SEPARATOR = '\n';
/** Starts a line that repeats the previous event's text up to its `"delta":` key. JSON text never holds it raw. */
const SAME_PREFIX = '\u0001';
const DELTA_KEY = '"delta":';

/**
 * Cuts consecutive events into pages of at most `EVENTS_PER_PAGE`. A gap in the sequence starts a new page,
 * so every page covers a dense range.
 */
export async function encodePages(events: readonly { seq: number; data: string }[]): Promise<EncodedPage[]> {
  const pages: EncodedPage[] = [];
  let start = 0;
  for (let index = 1; index <= events.length; index++) {
    const full = index - start === EVENTS_PER_PAGE;
    const gap = index < events.length && events[index]!.seq !== events[index - 1]!.seq + 1;
    if (index < events.length && !full && !gap) continue;
    const slice = events.slice(start, index);
    const compressed = await compress(linesOf(slice.map((event) => event.data)));
    pages.push({
      firstSeq: slice[0]!.seq,
      lastSeq: slice[slice.length - 1]!.seq,
      bytes: Buffer.concat([Buffer.of(COMPRESSED), compressed]),
    });
    start = index;
  }
  return pages;
}

/**
 * The events of one stored page after `after` (by default all of them), with their sequence numbers, exactly
 * as they were written. The page is decompressed whole, but the events up to `after` are only stepped over: a
 * resume near a page's end builds the few it sends, not the thousand before them.
 */
export function decodePage(
  page: { firstSeq: number; lastSeq: number; bytes: Uint8Array },
  after = page.firstSeq - 1,
): { seq: number; data: string }[] {
  const format = page.bytes[0];
  const body = page.bytes.subarray(1);
  if (format === PLAIN) return decodePlainPage({ ...page, text: utf8.decode(body) }, after);
  if (format !== COMPRESSED) {
    throw new Error(`The event page at ${page.firstSeq} has the unknown format ${format}.`);
  }
  const skip = Math.max(0, after - page.firstSeq + 1);
  const { texts, count } = readLines(brotliDecompressSync(body).toString('utf8'), skip);
  checkCount(page, count);
  return texts.map((data, index) => ({ seq: page.firstSeq + skip + index, data }));
}

/**
 * The events of a page of format `PLAIN` after `after`, from its text past the format byte (a reader's
 * statement converts it to text itself: PGlite parses a `bytea` result about ten times slower than text).
 */
export function decodePlainPage(
  page: { firstSeq: number; lastSeq: number; text: string },
  after = page.firstSeq - 1,
): { seq: number; data: string }[] {
  // A page of one event (a paced run's insert holds one): no split, no copies.
  if (page.firstSeq === page.lastSeq && !page.text.includes(SEPARATOR)) {
    return after < page.firstSeq ? [{ seq: page.firstSeq, data: page.text }] : [];
  }
  const skip = Math.max(0, after - page.firstSeq + 1);
  const lines = page.text.split(SEPARATOR);
  checkCount(page, lines.length);
  return lines.slice(skip).map((data, index) => ({ seq: page.firstSeq + skip + index, data }));
}

/**
 * The events of plain pages read as one text: their texts (past the format byte) joined by newlines, with
 * each page's first and last sequence numbers in the same order (not necessarily ascending). What compaction
 * reads of a run: one row however many pages the group commit wrote (a paced run writes one per token, and
 * receiving a row each was about two fifths of the server's part of compacting such a run).
 */
export function decodePlainPages(pages: {
  firstSeqs: readonly number[];
  lastSeqs: readonly number[];
  text: string;
}): { seq: number; data: string }[] {
  const lines = pages.text.split(SEPARATOR);
  const events: { seq: number; data: string }[] = [];
  for (let page = 0; page < pages.firstSeqs.length; page++) {
    const firstSeq = pages.firstSeqs[page]!;
    const lastSeq = pages.lastSeqs[page]!;
    for (let seq = firstSeq; seq <= lastSeq; seq++) {
      if (events.length === lines.length) checkCount({ firstSeq, lastSeq }, seq - firstSeq);
      events.push({ seq, data: lines[events.length]! });
    }
  }
  if (events.length !== lines.length) {
    throw new Error(
      `${pages.firstSeqs.length} event pages hold ${lines.length} events, not ${events.length}.`,
    );
  }
  return events;
}

function checkCount(page: { firstSeq: number; lastSeq: number }, count: number): void {
  if (count !== page.lastSeq - page.firstSeq + 1) {
    throw new Error(
      `The event page at ${page.firstSeq} holds ${count} events, not ${page.lastSeq - page.firstSeq + 1}.`,
    );
  }
}

const utf8 = new TextDecoder();

/**
 * A page of format `PLAIN` as text: its format character, then the events' JSON texts one per line. Its UTF-8
 * bytes are the page (the format character is the byte 2). Nothing is encoded, so the group commit pays only
 * for the join; a JSON text never holds a raw newline (`JSON.stringify` escapes it) nor starts with the byte 1
 * that marks a shortened line.
 */
export function plainPageText(texts: readonly string[]): string {
  return String.fromCharCode(PLAIN) + texts.join(SEPARATOR);
}

/**
 * The page text of events: one line each, where an event that starts like the one before it up to its
 * `"delta":` key (a run of text deltas of one part) keeps only the rest. The compressor then sees the text
 * nearly alone instead of a long part id per token. The first `"delta":` of a chunk's text is always a key:
 * inside a JSON string a quote is escaped.
 */
export function linesOf(texts: readonly string[]): string {
  let previous: string | null = null;
  const lines = texts.map((text) => {
    if (text.includes(SEPARATOR) || text.startsWith(SAME_PREFIX)) {
      throw new Error('An event holds a raw newline or control character and cannot be paged.');
    }
    const prefix = prefixOf(text);
    const line = prefix !== null && prefix === previous ? SAME_PREFIX + text.slice(prefix.length) : text;
    previous = prefix;
    return line;
  });
  return lines.join(SEPARATOR);
}

/**
 * The events of a page's text from its `skip`-th on, and how many it holds. A line that repeats the previous
 * prefix keeps that prefix as its own (the prefix ends at the text's first `"delta":`), so only the other lines
 * are searched for one, and a skipped line is built only when a later one needs its prefix.
 */
function readLines(page: string, skip: number): { texts: string[]; count: number } {
  const texts: string[] = [];
  let previous: string | null = null;
  let count = 0;
  for (let start = 0; start <= page.length; count++) {
    const newline = page.indexOf(SEPARATOR, start);
    const end = newline === -1 ? page.length : newline;
    if (page.startsWith(SAME_PREFIX, start)) {
      if (count >= skip) texts.push(previous! + page.slice(start + SAME_PREFIX.length, end));
    } else {
      const text = page.slice(start, end);
      if (count >= skip) texts.push(text);
      previous = prefixOf(text);
    }
    start = end + SEPARATOR.length;
  }
  return { texts, count };
}

function prefixOf(text: string): string | null {
  const at = text.indexOf(DELTA_KEY);
  return at === -1 ? null : text.slice(0, at + DELTA_KEY.length);
}
