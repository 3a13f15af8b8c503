import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';

/** Thrown at start-up when the Redis server named by `REDIS_URL` does not answer. */
export class RedisUnreachableError extends Error {
  readonly code = 'redis_unreachable';
  constructor(url: string, options?: { cause?: unknown }) {
    const code = (options?.cause as { code?: unknown } | undefined)?.code;
    super(
      `REDIS_URL is unreachable: no answer from ${redactUrl(url)}${typeof code === 'string' ? ` (${code})` : ''}. ` +
        'Is Redis running and is the URL right?',
      options,
    );
    this.name = 'RedisUnreachableError';
  }
}

export interface AssertRedisReachableOptions {
  /** How long to keep trying before giving up. @default 5000 */
  timeoutMs?: number;
  /** The pause between attempts. @default 250 */
  retryDelayMs?: number;
}

/**
 * Resolves once the Redis server at `url` answers PING; rejects with `RedisUnreachableError` (its message
 * names `REDIS_URL`) if it does not within `timeoutMs`. Start-up calls it before building the bus and queue,
 * so a deployment pointed at a Redis that is down fails at once with a message saying why, instead of
 * hanging in its first subscribe.
 */
export async function assertRedisReachable(
  url: string,
  options: AssertRedisReachableOptions = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const remaining = Math.max(1, deadline - Date.now());
    const probe = new Redis(url, {
      lazyConnect: true,
      connectTimeout: remaining,
      commandTimeout: remaining,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
    });
    probe.on('error', () => {});
    try {
      await probe.connect();
      await probe.ping();
      return;
    } catch (error) {
      lastError = error;
    } finally {
      probe.disconnect();
    }
    await sleep(Math.min(options.retryDelayMs ?? 250, Math.max(0, deadline - Date.now())));
  }
  throw new RedisUnreachableError(url, { cause: lastError });
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(an invalid URL)';
  }
}
