import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { TokenScope } from '../protocol/credentials.ts';

const TOKEN_PREFIX = 'ors_';
const TOKEN_VERSION = 1;

/** The longest a scoped token may live: one day. */
export const MAX_TOKEN_TTL_SECONDS = 86_400;

/** The signed claims of a scoped token. */
export interface ScopedTokenClaims {
  /** The chat the token opens. */
  chatId: string;
  /** The chat owner, whose identity the token acts as. */
  userId: string;
  workspaceId: string;
  /** The API key that issued the token; revoking it ends the token too. */
  keyId: string;
  scopes: TokenScope[];
  expiresAt: Date;
}

interface WirePayload {
  v: number;
  c: string;
  u: string;
  w: string;
  k: string;
  s: TokenScope[];
  /** Expiry, in seconds since the epoch. */
  e: number;
}

/** A new signing secret: 32 random bytes, base64url. */
export function generateTokenSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Whether `value` has the shape of a scoped token (as opposed to an API key). */
export function isScopedToken(value: string): boolean {
  return value.startsWith(TOKEN_PREFIX);
}

/** Signs `claims` into `ors_<payload>.<signature>` with HMAC-SHA256. */
export function signScopedToken(claims: ScopedTokenClaims, secret: string): string {
  const payload: WirePayload = {
    v: TOKEN_VERSION,
    c: claims.chatId,
    u: claims.userId,
    w: claims.workspaceId,
    k: claims.keyId,
    s: claims.scopes,
    e: Math.floor(claims.expiresAt.getTime() / 1000),
  };
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${TOKEN_PREFIX}${body}.${signature(body, secret)}`;
}

/**
 * The claims of a token signed with `secret`, or null when it is malformed, forged or expired at `now`. Only a
 * signature check: whether the issuing key is still valid is the caller's question.
 */
export function verifyScopedToken(token: string, secret: string, now = new Date()): ScopedTokenClaims | null {
  if (!isScopedToken(token)) return null;
  const [body, mac, ...rest] = token.slice(TOKEN_PREFIX.length).split('.');
  if (!body || !mac || rest.length > 0) return null;
  const expected = Buffer.from(signature(body, secret));
  const given = Buffer.from(mac);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  let payload: WirePayload;
  try {
    payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as WirePayload;
  } catch {
    return null;
  }
  if (payload.v !== TOKEN_VERSION || typeof payload.e !== 'number') return null;
  const expiresAt = new Date(payload.e * 1000);
  if (expiresAt.getTime() <= now.getTime()) return null;
  return {
    chatId: payload.c,
    userId: payload.u,
    workspaceId: payload.w,
    keyId: payload.k,
    scopes: payload.s,
    expiresAt,
  };
}

function signature(body: string, secret: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
}
