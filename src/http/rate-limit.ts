import type { Redis } from 'ioredis';
import ipaddr from 'ipaddr.js';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError } from '../errors.ts';

/** The window of `OUTRUN_RATE_LIMIT_PER_MINUTE`. */
const WINDOW_SECONDS = 60;

/**
 * Per-key request rate limits on `/v1` (DESIGN §4 `429 rate_limited`), and a limit on failed authentications
 * per client address.
 */
export interface RequestRateLimiter {
  /** Counts one request of `key`; throws `RateLimitedError` (with `retryAfterSeconds`) when over the limit. */
  consume(key: string): Promise<void>;
  /** Whether failed authentications are limited at all (`checkAuthFailures` may throw). */
  readonly limitsAuthFailures: boolean;
  /**
   * Throws `RateLimitedError` when `address` has failed as many authentications as it may this minute: its
   * credential is then not looked up at all.
   */
  checkAuthFailures(address: string): Promise<void>;
  /** Counts one failed authentication (an unknown, revoked or expired credential) from `address`. */
  recordAuthFailure(address: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * The client address a failed authentication is counted against: an IPv4 address as it is (also when it
 * arrives IPv4-mapped, `::ffff:a.b.c.d`), an IPv6 address by its /64 network. One IPv6 host usually holds a
 * whole /64 and can pick a new address in it for every request; counted by address, it would never be
 * limited.
 */
export function addressKey(address: string): string {
  if (!ipaddr.isValid(address)) return address;
  const parsed = ipaddr.process(address);
  if (parsed.kind() === 'ipv4') return parsed.toString();
  const network = (parsed as ipaddr.IPv6).parts.slice(0, 4);
  return `${network.map((part) => part.toString(16)).join(':')}::/64`;
}

/**
 * Who a request is counted against: the caller's API key when known, else the user. A scoped token counts in a
 * bucket of its own per chat, so a browser holding one can never use up the budget of the backend key that
 * issued it (nor of that key's tokens for other chats).
 */
export function rateLimitKeyOf(caller: {
  userId: string;
  keyId?: string;
  token?: { chatId: string };
}): string {
  if (caller.token) return `token:${caller.keyId ?? caller.userId}:${caller.token.chatId}`;
  return caller.keyId ? `key:${caller.keyId}` : `user:${caller.userId}`;
}

/** A fixed-window limiter of `points` a minute, shared through `redis` when given (see below). */
function fixedWindow(points: number, keyPrefix: string, redis: Redis | undefined) {
  const memory = new RateLimiterMemory({ points, duration: WINDOW_SECONDS, keyPrefix });
  return redis
    ? new RateLimiterRedis({
        storeClient: redis,
        points,
        duration: WINDOW_SECONDS,
        keyPrefix,
        // Redis down or reconnecting: count locally instead of waiting on it.
        rejectIfRedisNotReady: true,
        insuranceLimiter: memory,
      })
    : memory;
}

const retryAfterSeconds = (result: RateLimiterRes) => Math.max(1, Math.ceil(result.msBeforeNext / 1000));

/**
 * Fixed-window limiters (`rate-limiter-flexible`): `perMinute` requests per key, and `authFailuresPerMinute`
 * failed authentications per client address. With `redis`, every instance counts in the same Redis keys, so
 * the limits hold across instances; when Redis fails, each instance falls back to counting on its own rather
 * than failing the request. Without `redis`, they count in memory for this instance alone.
 */
export function createRequestRateLimiter(options: {
  /** Requests per key per minute; 0 turns limiting off. */
  perMinute: number;
  /** Failed authentications per client address per minute; 0 turns the limit off. @default 0 */
  authFailuresPerMinute?: number;
  /** A Redis connection the limiter owns (closed by `close()`); absent: in memory. */
  redis?: Redis;
  /** @default 'outrun' */
  keyPrefix?: string;
}): RequestRateLimiter {
  const { perMinute, redis } = options;
  const authFailuresPerMinute = options.authFailuresPerMinute ?? 0;
  const prefix = options.keyPrefix ?? 'outrun';
  const requests = perMinute > 0 ? fixedWindow(perMinute, `${prefix}:rate-limit`, redis) : null;
  const failures =
    authFailuresPerMinute > 0 ? fixedWindow(authFailuresPerMinute, `${prefix}:auth-failures`, redis) : null;
  return {
    limitsAuthFailures: failures !== null,
    async consume(key) {
      if (!requests) return;
      try {
        await requests.consume(key);
      } catch (rejection) {
        if (rejection instanceof RateLimiterRes) {
          throw new RateLimitedError({ limit: perMinute, retryAfterSeconds: retryAfterSeconds(rejection) });
        }
        throw rejection;
      }
    },
    async checkAuthFailures(address) {
      const counted = await failures?.get(address);
      if (counted && counted.consumedPoints >= authFailuresPerMinute) {
        throw new RateLimitedError({
          limit: authFailuresPerMinute,
          retryAfterSeconds: retryAfterSeconds(counted),
          limited: `Too many failed authentications from this address: at most ${authFailuresPerMinute} a minute.`,
        });
      }
    },
    async recordAuthFailure(address) {
      // Past the limit the count is not needed: the next check refuses anyway.
      await failures?.consume(address).catch((rejection: unknown) => {
        if (!(rejection instanceof RateLimiterRes)) throw rejection;
      });
    },
    async close() {
      await redis?.quit().catch(() => {});
    },
  };
}
