import type { BusCodec } from './channel.ts';

/** One durable event of a run, as the bus announces it. */
export interface BusRunEvent {
  seq: number;
  /** The chunk's JSON text, exactly as stored. */
  data: string;
  /** Whether this is the run's terminal `data-run` event. */
  terminal: boolean;
}

/** The message that announces newly durable events of one run. */
export interface RunEventsMessage {
  runId: string;
  events: BusRunEvent[];
}

/** The first word of every payload; a new layout gets a new word. */
const FORMAT = 'run-events/1';
const NEWLINE = 0x0a;

/**
 * Carries a run's events with each event's `data` verbatim, so JSON text is never escaped into more JSON:
 *
 * ```
 * run-events/1 <runId> <event count>\n
 * <seq> <terminal 0|1> <data length in UTF-8 bytes>\n<data>\n      (once per event)
 * ```
 *
 * The length prefix makes any `data` safe, newlines included.
 */
export const runEventsCodec: BusCodec<RunEventsMessage> = {
  encode(message) {
    if (!/^[^\s]+$/.test(message.runId)) throw new TypeError('A run id on the bus must be one word.');
    let text = `${FORMAT} ${message.runId} ${message.events.length}\n`;
    for (const event of message.events) {
      if (!Number.isSafeInteger(event.seq))
        throw new TypeError('An event sequence number must be an integer.');
      text += `${event.seq} ${event.terminal ? 1 : 0} ${Buffer.byteLength(event.data, 'utf8')}\n${event.data}\n`;
    }
    return text;
  },

  decode(payload) {
    let offset = 0;
    const line = (): string[] => {
      const end = payload.indexOf(NEWLINE, offset);
      if (end < 0) throw new TypeError('A run-events message ends inside a header line.');
      const words = payload.toString('utf8', offset, end).split(' ');
      offset = end + 1;
      return words;
    };
    const [format, runId, countText, ...rest] = line();
    const count = Number(countText);
    if (format !== FORMAT || !runId || rest.length > 0 || !Number.isSafeInteger(count) || count < 0)
      throw new TypeError('A run-events message has a malformed header.');
    const events: BusRunEvent[] = [];
    for (let index = 0; index < count; index++) {
      const [seqText, terminalText, lengthText, ...extra] = line();
      const seq = Number(seqText);
      const length = Number(lengthText);
      if (
        extra.length > 0 ||
        !Number.isSafeInteger(seq) ||
        (terminalText !== '0' && terminalText !== '1') ||
        !Number.isSafeInteger(length) ||
        length < 0 ||
        offset + length >= payload.length ||
        payload[offset + length] !== NEWLINE
      )
        throw new TypeError('A run-events message has a malformed event.');
      events.push({
        seq,
        terminal: terminalText === '1',
        data: payload.toString('utf8', offset, offset + length),
      });
      offset += length + 1;
    }
    if (offset !== payload.length) throw new TypeError('A run-events message has trailing bytes.');
    return { runId: runId, events };
  },
};
