import { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { BusClosedError, BusUnavailableError, type Bus } from './bus.ts';
import { deliverMessage } from './bus-message.ts';
import type { BusCodec, Channel } from './channel.ts';
import { redactUrl } from './redis-reachable.ts';

export interface RedisBusOptions {
  /** The Redis server, e.g. `redis://127.0.0.1:6379`. */
  url: string;
  /** Put in front of every channel name, so that several deployments (or test files) can share a server. @default 'outrun:' */
  keyPrefix?: string;
  /** Where connection errors, malformed messages and handler errors are reported. @default a pino logger on stdout */
  logger?: Logger;
  /** How long `publish` waits for Redis (to connect, then to answer) before it rejects. @default 500 */
  publishTimeoutMs?: number;
  /** How long `subscribe` waits for Redis to confirm the subscription before it rejects. @default 5000 */
  subscribeTimeoutMs?: number;
}

type Handler = (message: unknown) => void;

/** The local handlers of one Redis channel, and whether Redis confirmed its SUBSCRIBE on this connection. */
interface Subscription {
  codec: BusCodec<unknown>;
  handlers: Set<Handler>;
  confirmed: boolean;
  /** Callers of `subscribe` waiting for the confirmation. */
  waiters: Set<() => void>;
  /**
   * Payloads this instance published on the channel while subscribed, in publish order, whose copy from Redis
   * has not come back yet. The local handlers had them at publish, so the copy is dropped on arrival.
   */
  echoes: Buffer[];
}

/** Echoes awaited per channel at most; beyond, the oldest is forgotten (its copy, if it comes, is delivered). */
const MAX_ECHOES = 1000;

/**
 * The bus of a scale-out deployment, on Redis pub/sub. Each instance holds two connections: one publishes,
 * one is in subscriber mode and carries every channel this instance listens to, with one Redis SUBSCRIBE per
 * channel however many local handlers share it.
 *
 * The subscriber connection sends SUBSCRIBE only while it is `ready`, and on every `ready` (the first connect
 * and each reconnect) subscribes again to every channel it holds. ioredis would write a SUBSCRIBE during the
 * connection handshake, which turns the connection into subscriber mode before its ready check (`INFO`); the
 * check then fails, ioredis reconnects, and the subscription is silently gone. What is published while the
 * subscriber is away is lost, as the port allows.
 *
 * The publisher has no offline queue: a publish while Redis is unreachable rejects within `publishTimeoutMs`
 * rather than waiting for the outage to end or being sent late.
 *
 * A publish reaches this instance's own handlers at once, by reference (as on the in-process bus), and other
 * instances through Redis. Redis sends the publisher its own message back too (its subscriber listens on the
 * channel); that copy is recognised by its bytes and dropped. An identical message from another instance is
 * indistinguishable and may be the one dropped, leaving the own copy to be delivered in its place: the
 * handlers get each message once either way.
 */
export class RedisBus implements Bus {
  readonly #publisher: Redis;
  readonly #subscriber: Redis;
  readonly #prefix: string;
  /** The server's URL without its password, for error messages. */
  readonly #where: string;
  readonly #logger: Logger;
  readonly #publishTimeoutMs: number;
  readonly #subscribeTimeoutMs: number;
  /** By prefixed channel name. */
  readonly #subscriptions = new Map<string, Subscription>();
  /** Publishes waiting for the publisher to connect, in publish order. */
  #publisherReady: Promise<void> | null = null;
  #closing: Promise<void> | null = null;

  constructor(options: RedisBusOptions) {
    this.#prefix = options.keyPrefix ?? 'outrun:';
    this.#where = redactUrl(options.url);
    this.#logger = options.logger ?? pino();
    this.#publishTimeoutMs = options.publishTimeoutMs ?? 500;
    this.#subscribeTimeoutMs = options.subscribeTimeoutMs ?? 5000;
    const name = this.#prefix.replace(/\s/g, '_');
    this.#publisher = new Redis(options.url, {
      connectionName: `${name}bus-publisher`,
      enableOfflineQueue: false,
      commandTimeout: this.#publishTimeoutMs,
    });
    this.#subscriber = new Redis(options.url, {
      connectionName: `${name}bus-subscriber`,
      // This adapter re-subscribes on `ready` itself, and sends nothing while the connection is not ready.
      autoResubscribe: false,
      enableOfflineQueue: false,
    });
    for (const [role, connection] of [
      ['publisher', this.#publisher],
      ['subscriber', this.#subscriber],
    ] as const) {
      // ioredis retries by itself and emits an error per attempt: log once per outage.
      let down = false;
      connection.on('error', (error: unknown) => {
        if (down) return;
        down = true;
        this.#logger.warn({ err: error, connection: role }, 'redis bus connection error');
      });
      connection.on('ready', () => {
        if (down) this.#logger.info({ connection: role }, 'redis bus connection is back');
        down = false;
      });
    }
    this.#subscriber.on('ready', () => this.#subscribeAll());
    this.#subscriber.on('close', () => {
      for (const subscription of this.#subscriptions.values()) {
        subscription.confirmed = false;
        // What was in flight is lost with the connection, copies included.
        subscription.echoes.length = 0;
      }
    });
    this.#subscriber.on('messageBuffer', (channel: Buffer, payload: Buffer) =>
      this.#receive(channel.toString(), payload),
    );
  }

  async publish<T>(channel: Channel<T>, message: T): Promise<void> {
    if (this.#closing) throw new BusClosedError();
    const encoded = channel.codec.encode(message);
    const local = this.#subscriptions.get(this.#prefix + channel.name);
    // The bytes of the copy Redis will send back (only to a confirmed subscription), to recognise it.
    let echo: Buffer | null = null;
    if (local && local.handlers.size > 0) {
      if (local.confirmed) {
        echo = typeof encoded === 'string' ? Buffer.from(encoded, 'utf8') : encoded;
        if (local.echoes.length >= MAX_ECHOES) local.echoes.shift();
        local.echoes.push(echo);
      }
      deliverMessage<unknown>({
        channel: channel.name,
        handlers: local.handlers,
        message,
        logger: this.#logger,
      });
    }
    try {
      await this.#publishRemote(channel.name, echo ?? encoded);
    } catch (error) {
      // Not sent: no copy comes back.
      const index = echo ? local!.echoes.indexOf(echo) : -1;
      if (index >= 0) local!.echoes.splice(index, 1);
      throw error;
    }
  }

  async #publishRemote(channelName: string, payload: string | Buffer): Promise<void> {
    if (this.#publisher.status !== 'ready' || this.#publisherReady) {
      this.#publisherReady ??= whenReady(this.#publisher).finally(() => (this.#publisherReady = null));
      await withTimeout(this.#publisherReady, this.#publishTimeoutMs, () => this.#unavailable('publish'));
      if (this.#closing) throw new BusClosedError();
    }
    try {
      await this.#publisher.publish(this.#prefix + channelName, payload);
    } catch (error) {
      if (this.#closing) throw new BusClosedError();
      throw new BusUnavailableError(`Redis at ${this.#where} did not take the publish.`, { cause: error });
    }
  }

  async subscribe<T>(channel: Channel<T>, handler: (message: T) => void): Promise<() => Promise<void>> {
    if (this.#closing) throw new BusClosedError();
    const key = this.#prefix + channel.name;
    let subscription = this.#subscriptions.get(key);
    if (!subscription) {
      subscription = {
        codec: channel.codec as BusCodec<unknown>,
        handlers: new Set(),
        confirmed: false,
        waiters: new Set(),
        echoes: [],
      };
      this.#subscriptions.set(key, subscription);
      // Not ready: the next `ready` subscribes to every channel held, this one included.
      if (this.#subscriber.status === 'ready') this.#send([key]);
    }
    const current = subscription;
    const entry: Handler = (message) => handler(message as T);
    current.handlers.add(entry);
    const unsubscribe = async (): Promise<void> => {
      if (!current.handlers.delete(entry) || current.handlers.size > 0) return;
      if (this.#subscriptions.get(key) !== current) return;
      this.#subscriptions.delete(key);
      if (this.#closing || this.#subscriber.status !== 'ready') return;
      // Commands on one connection run in order, so a SUBSCRIBE issued after this one wins.
      await this.#subscriber.unsubscribe(key).catch((error: unknown) => {
        this.#logger.warn({ err: error, channel: channel.name }, 'redis bus unsubscribe failed');
      });
    };
    if (!current.confirmed) {
      let waiter: () => void = () => {};
      const confirmed = new Promise<void>((resolve) => current.waiters.add((waiter = resolve)));
      try {
        await withTimeout(confirmed, this.#subscribeTimeoutMs, () => this.#unavailable('subscribe'));
        if (this.#closing) throw new BusClosedError();
      } catch (error) {
        current.waiters.delete(waiter);
        await unsubscribe();
        throw error;
      }
    }
    return unsubscribe;
  }

  listening(channel: Channel<unknown>): boolean {
    if (this.#closing || this.#subscriber.status !== 'ready') return false;
    return this.#subscriptions.get(this.#prefix + channel.name)?.confirmed === true;
  }

  ready(): boolean {
    if (this.#closing) return false;
    if (this.#publisher.status !== 'ready' || this.#subscriber.status !== 'ready') return false;
    for (const subscription of this.#subscriptions.values()) if (!subscription.confirmed) return false;
    return true;
  }

  /** Quits both connections; handlers receive nothing more, and waiting `subscribe` calls reject. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const waiters = [...this.#subscriptions.values()].flatMap((subscription) => [...subscription.waiters]);
      this.#subscriptions.clear();
      for (const waiter of waiters) waiter();
      await Promise.all([quit(this.#publisher), quit(this.#subscriber)]);
    })();
    return this.#closing;
  }

  #unavailable(operation: 'publish' | 'subscribe'): Error {
    return this.#closing
      ? new BusClosedError()
      : new BusUnavailableError(`Redis at ${this.#where} did not answer the ${operation} in time.`);
  }

  #subscribeAll(): void {
    if (this.#closing || this.#subscriptions.size === 0) return;
    this.#send([...this.#subscriptions.keys()]);
  }

  /** Sends one SUBSCRIBE for `keys` and marks the subscriptions it was sent for confirmed once Redis replies. */
  #send(keys: string[]): void {
    const sent = keys.map((key) => [key, this.#subscriptions.get(key)!] as const);
    this.#subscriber.subscribe(...keys).then(
      () => {
        for (const [key, subscription] of sent) {
          // A channel left (and perhaps joined again) meanwhile has its own SUBSCRIBE in flight.
          if (this.#subscriptions.get(key) !== subscription) continue;
          subscription.confirmed = true;
          for (const waiter of subscription.waiters) waiter();
          subscription.waiters.clear();
        }
      },
      (error: unknown) => {
        // The connection dropped before the reply: its next `ready` subscribes again.
        if (!this.#closing)
          this.#logger.warn({ err: error, channels: keys.length }, 'redis bus subscribe failed');
      },
    );
  }

  #receive(key: string, payload: Buffer): void {
    const subscription = this.#subscriptions.get(key);
    if (!subscription || subscription.handlers.size === 0) return;
    if (subscription.echoes.length > 0) {
      // Own copies come back in publish order, so the match is almost always the first.
      const index = subscription.echoes.findIndex((echo) => echo.equals(payload));
      if (index >= 0) {
        subscription.echoes.splice(index, 1);
        return;
      }
    }
    const channel = key.slice(this.#prefix.length);
    let message: unknown;
    try {
      message = subscription.codec.decode(payload);
    } catch (error) {
      this.#logger.warn({ err: error, channel }, 'ignored a malformed bus message');
      return;
    }
    deliverMessage({ channel, handlers: subscription.handlers, message, logger: this.#logger });
  }
}

/** Resolves on the connection's next `ready`. */
function whenReady(connection: Redis): Promise<void> {
  return new Promise((resolve) => connection.once('ready', () => resolve()));
}

/** `promise`, or a rejection with `error()` after `timeoutMs`. */
async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(error()), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
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
