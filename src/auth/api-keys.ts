import { createHash, randomBytes } from 'node:crypto';

const KEY_PREFIX = 'or_';

/** A new API key: `or_` and 32 random bytes in base64url. Shown once; only its hash is stored. */
export function generateApiKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * The stored form of a key. Keys carry 256 random bits, so a fast hash is enough: there is nothing to
 * brute-force, and lookups by hash stay a single index probe per request.
 */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** The first characters of a key, kept to tell keys apart in listings and logs. */
export function apiKeyPrefix(key: string): string {
  return key.slice(0, 10);
}
