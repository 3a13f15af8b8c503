import pino, { type Logger } from 'pino';
import { BusClosedError, type Bus } from './bus.ts';
import { deliverMessage } from './bus-message.ts';

export interface MemoryBusOptions {
  /** Where a handler's error is reported. @default a pino logger on stdout */
  logger?: Logger;
}

/** The in-process bus of a single instance: handlers run synchronously on publish. */
export class MemoryBus implements Bus {
  readonly #handlers = new Map<string, Set<(message: unknown) => void>>();
  readonly #logger: Logger;
  #closed = false;

  constructor(options: MemoryBusOptions = {}) {
    this.#logger = options.logger ?? pino();
  }

  async publish(channel: string, message: unknown): Promise<void> {
    if (this.#closed) throw new BusClosedError();
    const handlers = this.#handlers.get(channel);
    if (!handlers) return;
    // By reference: event batches are published on every group commit, and handlers only read them.
    deliverMessage({ channel, handlers, message, logger: this.#logger });
  }

  async subscribe(channel: string, handler: (message: unknown) => void): Promise<() => Promise<void>> {
    if (this.#closed) throw new BusClosedError();
    let handlers = this.#handlers.get(channel);
    if (!handlers) this.#handlers.set(channel, (handlers = new Set()));
    const wrapped = (message: unknown) => handler(message);
    handlers.add(wrapped);
    return async () => {
      handlers.delete(wrapped);
      if (handlers.size === 0 && this.#handlers.get(channel) === handlers) this.#handlers.delete(channel);
    };
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
