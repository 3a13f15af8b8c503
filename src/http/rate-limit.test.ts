import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { RateLimitedError } from '../errors.ts';
import { addressKey, createRequestRateLimiter } from './rate-limit.ts';

describe('addressKey', () => {
  it.each([
    ['203.0.113.7', '203.0.113.7'],
    ['::ffff:203.0.113.7', '203.0.113.7'],
    ['::FFFF:10.0.0.1', '10.0.0.1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2:aaaa:bbbb:cccc:dddd', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002::9', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['2001:db8::', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::192.0.2.33', '64:ff9b:0:0::/64'],
    ['not an address', 'not an address'],
  ])('counts %s as %s', (address, key) => {
    expect(addressKey(address)).toBe(key);
  });
});

describe('failed authentications', () => {
  it('are counted in memory, and refused past the limit, while Redis cannot be reached', async () => {
    // Nothing listens on port 1: the limiter's Redis never becomes ready.
    const redis = new Redis('redis://127.0.0.1:1', {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
    });
    redis.on('error', () => {});
    const limiter = createRequestRateLimiter({ perMinute: 0, authFailuresPerMinute: 2, redis });
    try {
      await limiter.checkAuthFailures('203.0.113.7');
      await limiter.recordAuthFailure('203.0.113.7');
      await limiter.checkAuthFailures('203.0.113.7');
      await limiter.recordAuthFailure('203.0.113.7');
      const refused = await limiter.checkAuthFailures('203.0.113.7').catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(RateLimitedError);
      expect((refused as RateLimitedError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
      await expect(limiter.checkAuthFailures('203.0.113.8')).resolves.toBeUndefined();
    } finally {
      await limiter.close();
      redis.disconnect();
    }
  });
});
