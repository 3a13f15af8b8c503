import { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { BusClosedError, type Bus } from './bus.ts';
import { deliverMessage, encodeMessage } from './bus-message.ts';

export interface RedisBusOptions {
  /** The Redis server, e.g. `redis://127.0.0.1:6379`. */
  url: string;
  /** Put in front of every channel name, so that several deployments (or test files) can share a server. @default 'outrun:' */
  keyPrefix?: string;
  /** Where connection errors, malformed messages and handler errors are reported. @default a pino logger on stdout */
  logger?: Logger;
}

/** The local handlers of one Redis channel, and the SUBSCRIBE that feeds them. */
interface Subscription {
  handlers: Set<(message: unknown) => void>;
  subscribed: Promise<void>;
}

/**
 * The bus of a scale-out deployment, on Redis pub/sub. Each instance holds two connections: one publishes,
 * one is in subscriber mode and carries every channel this instance listens to, with one Redis SUBSCRIBE per
 * channel however many local handlers share it. Both reconnect on their own (ioredis defaults) and the
 * subscriber re-subscribes its channels; what was published while it was away is lost, as the port allows.
 */
export class RedisBus implements Bus {
  readonly #publisher: Redis;
  readonly #subscriber: Redis;
  readonly #prefix: string;
  readonly #logger: Logger;
  /** By prefixed channel name. */
  readonly #subscriptions = new Map<string, Subscription>();
  #closing: Promise<void> | null = null;

  constructor(options: RedisBusOptions) {
    this.#prefix = options.keyPrefix ?? 'outrun:';
    this.#logger = options.logger ?? pino();
    const name = this.#prefix.replace(/\s/g, '_');
    this.#publisher = new Redis(options.url, { connectionName: `${name}bus-publisher` });
    this.#subscriber = new Redis(options.url, { connectionName: `${name}bus-subscriber` });
    for (const [role, connection] of [
      ['publisher', this.#publisher],
      ['subscriber', this.#subscriber],
    ] as const) {
      // ioredis retries by itself; without a listener an error event would only be printed to stderr.
      connection.on('error', (error: unknown) =>
        this.#logger.warn({ err: error, connection: role }, 'redis bus connection error'),
      );
    }
    this.#subscriber.on('message', (channel: string, text: string) => this.#receive(channel, text));
  }

  async publish(channel: string, message: unknown): Promise<void> {
    if (this.#closing) throw new BusClosedError();
    await this.#publisher.publish(this.#prefix + channel, encodeMessage(message));
  }

  async subscribe(channel: string, handler: (message: unknown) => void): Promise<() => Promise<void>> {
    if (this.#closing) throw new BusClosedError();
    const key = this.#prefix + channel;
    let subscription = this.#subscriptions.get(key);
    if (!subscription) {
      const created: Subscription = {
        handlers: new Set(),
        subscribed: this.#subscriber.subscribe(key).then(() => undefined),
      };
      // A failed SUBSCRIBE must not stay cached: the next subscriber tries again.
      created.subscribed.catch(() => {
        if (this.#subscriptions.get(key) === created) this.#subscriptions.delete(key);
      });
      this.#subscriptions.set(key, (subscription = created));
    }
    const { handlers, subscribed } = subscription;
    const entry = (message: unknown) => handler(message);
    handlers.add(entry);
    const unsubscribe = async (): Promise<void> => {
      if (!handlers.delete(entry) || handlers.size > 0) return;
      if (this.#subscriptions.get(key) !== subscription) return;
      this.#subscriptions.delete(key);
      if (this.#closing) return;
      // Commands on one connection run in order, so a SUBSCRIBE issued after this one wins.
      await this.#subscriber.unsubscribe(key).catch((error: unknown) => {
        this.#logger.warn({ err: error, channel }, 'redis bus unsubscribe failed');
      });
    };
    try {
      await subscribed;
    } catch (error) {
      handlers.delete(entry);
      throw error;
    }
    return unsubscribe;
  }

  /** Quits both connections; handlers receive nothing more. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#subscriptions.clear();
      await Promise.all([quit(this.#publisher), quit(this.#subscriber)]);
    })();
    return this.#closing;
  }

  #receive(key: string, text: string): void {
    const subscription = this.#subscriptions.get(key);
    if (!subscription || subscription.handlers.size === 0) return;
    const channel = key.slice(this.#prefix.length);
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch (error) {
      this.#logger.warn({ err: error, channel }, 'ignored a bus message that is not JSON');
      return;
    }
    deliverMessage({ channel, handlers: subscription.handlers, message, logger: this.#logger });
  }
}

/** Quits gracefully when connected; otherwise (connecting, reconnecting) drops the connection at once. */
async function quit(connection: Redis): Promise<void> {
  if (connection.status === 'end') return;
  if (connection.status !== 'ready') {
    connection.disconnect();
    return;
  }
  try {
    await connection.quit();
  } catch {
    connection.disconnect();
  }
}
