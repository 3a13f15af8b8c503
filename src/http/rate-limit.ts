import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError } from '../errors.ts';

/** The window of `OUTRUN_RATE_LIMIT_PER_MINUTE`. */
const WINDOW_SECONDS = 60;

/** Per-key request rate limits on `/v1` (DESIGN §4 `429 rate_limited`). */
export interface RequestRateLimiter {
  /** Counts one request of `key`; throws `RateLimitedError` (with `retryAfterSeconds`) when over the limit. */
  consume(key: string): Promise<void>;
  close(): Promise<void>;
}

/** Who a request is counted against: the caller's API key when known, else the user. */
export function rateLimitKeyOf(caller: { userId: string; keyId?: string }): string {
  return caller.keyId ? `key:${caller.keyId}` : `user:${caller.userId}`;
}

/**
 * A fixed-window limiter of `perMinute` requests per key (`rate-limiter-flexible`). With `redis`, every
 * instance counts in the same Redis keys, so the limit holds across instances; when Redis fails, each
 * instance falls back to counting on its own rather than failing the request. Without `redis`, it counts
 * in memory for this instance alone.
 */
export function createRequestRateLimiter(options: {
  /** Requests per key per minute; 0 turns limiting off. */
  perMinute: number;
  /** A Redis connection the limiter owns (closed by `close()`); absent: in memory. */
  redis?: Redis;
  /** @default 'outrun' */
  keyPrefix?: string;
}): RequestRateLimiter {
  const { perMinute, redis } = options;
  if (perMinute <= 0) {
    return { consume: async () => {}, close: async () => void (await redis?.quit().catch(() => {})) };
  }
  const keyPrefix = `${options.keyPrefix ?? 'outrun'}:rate-limit`;
  const memory = new RateLimiterMemory({ points: perMinute, duration: WINDOW_SECONDS, keyPrefix });
  const limiter = redis
    ? new RateLimiterRedis({
        storeClient: redis,
        points: perMinute,
        duration: WINDOW_SECONDS,
        keyPrefix,
        // Redis down or reconnecting: count locally instead of waiting on it.
        rejectIfRedisNotReady: true,
        insuranceLimiter: memory,
      })
    : memory;
  return {
    async consume(key) {
      try {
        await limiter.consume(key);
      } catch (rejection) {
        if (rejection instanceof RateLimiterRes) {
          throw new RateLimitedError({
            limit: perMinute,
            retryAfterSeconds: Math.max(1, Math.ceil(rejection.msBeforeNext / 1000)),
          });
        }
        throw rejection;
      }
    },
    async close() {
      await redis?.quit().catch(() => {});
    },
  };
}
