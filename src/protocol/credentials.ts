/** API keys and scoped tokens as the API shows them (DESIGN §4 "Identity and keys"). */

/** An API key as the API lists it; the key itself is shown only once, when created. */
export interface ApiKeyObject {
  id: string;
  userId: string;
  name: string;
  /** The first characters of the key, to tell keys apart. */
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

/** `POST /v1/api-keys`: the new key's object and the key itself, which is shown only this once. */
export interface CreatedApiKey {
  apiKey: ApiKeyObject;
  key: string;
}

/** What a scoped token lets a browser do with its one chat (DESIGN §4 "Scoped tokens"). */
export const TokenScope = {
  /** Read the chat, its messages, runs, steps and streams. */
  read: 'read',
  /** Also start and stop runs, answer approvals and continue runs. */
  write: 'write',
} as const;
export type TokenScope = (typeof TokenScope)[keyof typeof TokenScope];

/** `POST /v1/tokens`: a token for one of the caller's chats. */
export interface CreateTokenOptions {
  chatId: string;
  scopes: TokenScope[];
  /** How long the token lives, at most 86400 (a day). @default 3600 */
  ttlSeconds?: number;
}

/** A scoped token (`ors_…`) and what it opens; send it as `Authorization: Bearer <token>`. */
export interface ScopedToken {
  token: string;
  expiresAt: string;
  chatId: string;
  scopes: TokenScope[];
}
