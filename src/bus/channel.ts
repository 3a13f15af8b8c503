/**
 * How a message of one channel crosses a networked bus. `encode` runs once per publish; `decode` once per
 * delivery on each receiving instance. The in-process bus uses neither: it passes the message by reference.
 */
export interface BusCodec<T> {
  /** The message as it travels. Throws for a message the channel cannot carry. */
  encode(message: T): string | Buffer;
  /** The message back from what `encode` produced. Throws (`TypeError`) on a payload it cannot read. */
  decode(payload: Buffer): T;
}

/** A named bus channel and the type of message it carries. */
export interface Channel<T> {
  /** The channel's name, unique per deployment (a networked bus adds its key prefix). */
  readonly name: string;
  readonly codec: BusCodec<T>;
}

/** Carries any JSON value as its JSON text. */
export function jsonCodec<T>(): BusCodec<T> {
  return jsonCodecInstance as BusCodec<T>;
}

const jsonCodecInstance: BusCodec<unknown> = {
  encode(message) {
    const encoded = JSON.stringify(message) as string | undefined;
    if (encoded === undefined) throw new TypeError('A JSON bus message must be a JSON value.');
    return encoded;
  },
  decode(payload) {
    try {
      return JSON.parse(payload.toString('utf8')) as unknown;
    } catch (error) {
      throw new TypeError('A JSON bus message is not JSON.', { cause: error });
    }
  },
};

/** A channel whose messages are JSON values. */
export function jsonChannel<T>(name: string): Channel<T> {
  return { name, codec: jsonCodec<T>() };
}
