import type { Bus } from './bus.ts';

/** The in-process bus of a single instance: handlers run synchronously on publish. */
export class MemoryBus implements Bus {
  readonly #handlers = new Map<string, Set<(message: unknown) => void>>();

  async publish(channel: string, message: unknown): Promise<void> {
    const handlers = this.#handlers.get(channel);
    if (!handlers) return;
    for (const handler of [...handlers]) handler(message);
  }

  async subscribe(channel: string, handler: (message: unknown) => void): Promise<() => Promise<void>> {
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
    this.#handlers.clear();
  }
}
