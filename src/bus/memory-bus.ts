import pino, { type Logger } from 'pino';
import { BusClosedError, type Bus } from './bus.ts';
import { deliverMessage } from './bus-message.ts';
import type { Channel } from './channel.ts';

export interface MemoryBusOptions {
  /** Where a handler's error is reported. @default a pino logger on stdout */
  logger?: Logger;
}

type Handler = (message: unknown) => void;

/** The in-process bus of a single instance: handlers run synchronously on publish, with no codec. */
export class MemoryBus implements Bus {
  readonly #handlers = new Map<string, Set<Handler>>();
  readonly #logger: Logger;
  #closed = false;

  constructor(options: MemoryBusOptions = {}) {
    this.#logger = options.logger ?? pino();
  }

  async publish<T>(channel: Channel<T>, message: T): Promise<void> {
    if (this.#closed) throw new BusClosedError();
    const handlers = this.#handlers.get(channel.name);
    if (!handlers) return;
    // By reference: event batches are published on every group commit, and handlers only read them.
    deliverMessage<unknown>({ channel: channel.name, handlers, message, logger: this.#logger });
  }

  async subscribe<T>(channel: Channel<T>, handler: (message: T) => void): Promise<() => Promise<void>> {
    if (this.#closed) throw new BusClosedError();
    const name = channel.name;
    let handlers = this.#handlers.get(name);
    if (!handlers) this.#handlers.set(name, (handlers = new Set()));
    const wrapped: Handler = (message) => handler(message as T);
    handlers.add(wrapped);
    return async () => {
      handlers.delete(wrapped);
      if (handlers.size === 0 && this.#handlers.get(name) === handlers) this.#handlers.delete(name);
    };
  }

  /** Always true while open: a handler is subscribed as soon as `subscribe` is called. */
  listening(): boolean {
    return !this.#closed;
  }

  /** Always true while open: nothing stands between publisher and subscriber. */
  ready(): boolean {
    return !this.#closed;
  }

  /** Channels with at least one subscriber (for tests and metrics). */
  channelCount(): number {
    return this.#handlers.size;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#handlers.clear();
  }
}
