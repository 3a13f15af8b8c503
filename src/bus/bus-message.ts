import type { Logger } from 'pino';

/**
 * Calls each handler with one message. A handler that throws, or returns a promise that rejects, is logged
 * and does not keep the message from the others.
 */
export function deliverMessage<T>(options: {
  channel: string;
  handlers: ReadonlySet<(message: T) => void>;
  message: T;
  logger: Logger;
}): void {
  const { channel, message, logger } = options;
  const report = (error: unknown) => logger.error({ err: error, channel }, 'a bus handler failed');
  // A handler may subscribe or unsubscribe others while this loop runs: new ones wait for the next message,
  // removed ones get nothing more.
  for (const handler of [...options.handlers]) {
    if (!options.handlers.has(handler)) continue;
    try {
      const result: unknown = handler(message);
      if (isPromiseLike(result)) result.then(undefined, report);
    } catch (error) {
      report(error);
    }
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}
