import { Kysely, sql, type RawBuilder } from 'kysely';
import type { Logger } from 'pino';
import { BusChannel, publishBestEffort, type Bus } from '../bus/bus.ts';
import { ConflictError, ForbiddenError, NotFoundError, UnauthorizedError } from '../errors.ts';
import { newId } from '../ids.ts';
import type { Db } from '../store/database.ts';
import type { ApiKeyObject, CreatedApiKey, ScopedToken, TokenScope } from '../protocol/credentials.ts';
import type { UserObject, UserRole, WorkspaceObject } from '../protocol/wire.ts';
import type { WorkspaceQuota } from '../protocol/workspace.ts';
import type { ApiKeyRow, UserRow, WorkspaceRow } from '../store/schema.ts';
import { apiKeyPrefix, generateApiKey, hashApiKey } from './api-keys.ts';
import {
  generateTokenSecret,
  isScopedToken,
  MAX_TOKEN_TTL_SECONDS,
  signScopedToken,
  verifyScopedToken,
  type ScopedTokenClaims,
} from './scoped-tokens.ts';

/** Who is calling: the user behind the credential, and the workspace every query is scoped to. */
export interface Caller {
  userId: string;
  workspaceId: string;
  role: UserRole;
  /** The API key that authenticated the request, or that issued its scoped token. */
  keyId?: string;
  /** Set when the credential is a scoped token: the one chat it opens and what it may do there. */
  token?: { chatId: string; scopes: TokenScope[]; expiresAt: Date };
}

export type { UserObject, WorkspaceObject };

export const toUserObject = (row: UserRow): UserObject => ({
  id: row.id,
  workspaceId: row.workspace_id,
  email: row.email,
  role: row.role,
  createdAt: row.created_at.toISOString(),
});

export const toWorkspaceObject = (row: WorkspaceRow): WorkspaceObject => ({
  id: row.id,
  name: row.name,
  quota: row.quota ?? null,
  createdAt: row.created_at.toISOString(),
});

export const toApiKeyObject = (row: ApiKeyRow): ApiKeyObject => ({
  id: row.id,
  userId: row.user_id,
  name: row.name,
  prefix: row.prefix,
  createdAt: row.created_at.toISOString(),
  lastUsedAt: row.last_used_at?.toISOString() ?? null,
  revokedAt: row.revoked_at?.toISOString() ?? null,
});

const DEFAULT_WORKSPACE_NAME = 'Default';
const OWNER_EMAIL = 'admin@localhost';
const SEEDED_KEY_NAME = 'OUTRUN_ADMIN_KEY';
const TOKEN_SECRET_NAME = 'scoped-token-hmac';
/** `last_used_at` is refreshed at most this often per key, so authentication stays read-only. */
const LAST_USED_RESOLUTION_MS = 60_000;
/** Serializes seeding across processes sharing a database. */
const SEED_LOCK_ID = 7220331;
/**
 * With the workspace's `hashtext`, serializes the creation of its users (`pg_advisory_xact_lock(int, int)`),
 * so two requests for one email in different cases cannot both find it free.
 */
const USER_CREATE_GATE = 0x6f72_7533; // 'oru3'

/** How many API keys `AuthService.identify` remembers (a few hundred bytes each); the oldest go first. */
const KNOWN_KEYS_LIMIT = 10_000;

const isAdminRole = (role: UserRole) => role === 'admin' || role === 'owner';

/**
 * SQL that is true while the API key `keyId` authenticates (not revoked, its user not removed): for a statement
 * that checks its caller's key itself, in the same snapshot as its writes (`AuthService.identify`).
 */
export function keyStillValid(keyId: string): RawBuilder<boolean> {
  return sql<boolean>`exists (select from api_keys k join users u on u.id = k.user_id
    where k.id = ${keyId} and k.revoked_at is null and u.deleted_at is null)`;
}

/** The caller a scoped token's verified claims name. */
function tokenCaller(claims: ScopedTokenClaims): Caller {
  return {
    userId: claims.userId,
    workspaceId: claims.workspaceId,
    // The token reaches only its chat's routes, none of which needs more than the owner's own rights.
    role: 'member',
    keyId: claims.keyId,
    token: { chatId: claims.chatId, scopes: claims.scopes, expiresAt: claims.expiresAt },
  };
}

export interface AuthServiceOptions {
  db: Db;
  /** Where revocations are announced, so every instance closes the revoked key's streams. */
  bus?: Bus;
  logger?: Logger;
}

/**
 * Workspaces, users, API keys and scoped tokens. Keys are stored only as SHA-256 hashes; scoped tokens are
 * stateless HMAC-signed claims bound to the key that issued them (docs/decisions/0004-scoped-tokens.md).
 * Authentication reads the database on every request, so a revocation holds on the next request everywhere;
 * the start and stream routes check a key this instance knows in their own statement instead (`identify`).
 */
export class AuthService {
  private readonly db: Db;
  private readonly options: AuthServiceOptions;
  private tokenSecret: Promise<string> | null = null;
  /** The callers API keys named when they last authenticated here, by key hash (see `identify`). */
  readonly #known = new Map<string, { caller: Caller; lastUsedAt: number }>();

  /** Takes its options, or just a database (then revocations are not announced on a bus). */
  constructor(options: AuthServiceOptions | Db) {
    this.options = options instanceof Kysely ? { db: options } : options;
    this.db = this.options.db;
  }

  /**
   * The caller behind an API key or a scoped token, or `UnauthorizedError` for a missing, unknown, revoked or
   * expired one. `fromQuery`: the credential came as `?access_token=`, which only a scoped token may.
   */
  async authenticate(credential: string | undefined, options: { fromQuery?: boolean } = {}): Promise<Caller> {
    if (!credential) throw new UnauthorizedError();
    if (isScopedToken(credential)) return this.authenticateToken(credential);
    if (options.fromQuery) {
      throw new UnauthorizedError(
        'An API key may not travel in the URL; send it as `Authorization: Bearer <key>`, or use a scoped token.',
      );
    }
    const hash = hashApiKey(credential);
    const row = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select([
        'api_keys.id as keyId',
        'api_keys.last_used_at',
        'users.id',
        'users.workspace_id',
        'users.role',
      ])
      .where('api_keys.hash', '=', hash)
      .where('api_keys.revoked_at', 'is', null)
      .where('users.deleted_at', 'is', null)
      .executeTakeFirst();
    if (!row) {
      this.#known.delete(hash);
      throw new UnauthorizedError('The API key is not valid.');
    }
    let lastUsedAt = row.last_used_at?.getTime() ?? 0;
    if (Date.now() - lastUsedAt > LAST_USED_RESOLUTION_MS) {
      await this.db
        .updateTable('api_keys')
        .set({ last_used_at: sql<Date>`now()` })
        .where('id', '=', row.keyId)
        .execute();
      lastUsedAt = Date.now();
    }
    const caller: Caller = {
      userId: row.id,
      workspaceId: row.workspace_id,
      role: row.role,
      keyId: row.keyId,
    };
    this.#known.delete(hash);
    if (this.#known.size >= KNOWN_KEYS_LIMIT) this.#known.delete(this.#known.keys().next().value!);
    this.#known.set(hash, { caller, lastUsedAt });
    return caller;
  }

  /**
   * Whether `apiKey` authenticated on this instance and has not failed since: read from memory, no statement.
   * A client address past its failed authentications is still served such a key
   * (`OUTRUN_AUTH_FAILURES_PER_MINUTE`), so one bad client behind a shared address does not lock out the
   * people already signed in from it.
   */
  knowsKey(apiKey: string): boolean {
    return this.#known.has(hashApiKey(apiKey));
  }

  /**
   * The caller an API key named when it last authenticated on this instance, read from memory, or undefined
   * (not seen lately, or its `last_used_at` is due for a refresh, which `authenticate` makes); for a scoped
   * token, the caller its claims name once their signature and expiry check out. A key's user, workspace and
   * role never change, but the key (or a token's issuing key) may have been revoked since, here or on another
   * instance: whoever acts on this caller checks the key in the statement that writes or reads
   * (`keyStillValid`), and authenticates for real before any other answer
   * (docs/decisions/0012-key-checked-in-the-statement.md). `fromQuery`: as for `authenticate`.
   */
  async identify(credential: string, options: { fromQuery?: boolean } = {}): Promise<Caller | undefined> {
    if (isScopedToken(credential)) {
      // A scoped token names its caller in claims this server signed; only its issuing key can have changed.
      const claims = verifyScopedToken(credential, await this.secret());
      return claims ? tokenCaller(claims) : undefined;
    }
    if (options.fromQuery) return undefined;
    const known = this.#known.get(hashApiKey(credential));
    if (!known || Date.now() - known.lastUsedAt > LAST_USED_RESOLUTION_MS) return undefined;
    return { ...known.caller };
  }

  private async authenticateToken(token: string): Promise<Caller> {
    const claims = verifyScopedToken(token, await this.secret());
    if (!claims) throw new UnauthorizedError('The token is not valid or has expired; request a new one.');
    const issuer = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select('api_keys.id')
      .where('api_keys.id', '=', claims.keyId)
      .where('api_keys.revoked_at', 'is', null)
      .where('users.id', '=', claims.userId)
      .where('users.workspace_id', '=', claims.workspaceId)
      .where('users.deleted_at', 'is', null)
      .executeTakeFirst();
    if (!issuer) throw new UnauthorizedError('The token was revoked; request a new one.');
    return tokenCaller(claims);
  }

  /** Of `keyIds`, those that no longer authenticate: revoked, or their user removed. */
  async invalidKeyIds(keyIds: string[]): Promise<string[]> {
    if (keyIds.length === 0) return [];
    const valid = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select('api_keys.id')
      .where('api_keys.id', 'in', keyIds)
      .where('api_keys.revoked_at', 'is', null)
      .where('users.deleted_at', 'is', null)
      .execute();
    const validIds = new Set(valid.map((row) => row.id));
    return keyIds.filter((id) => !validIds.has(id));
  }

  /** A workspace admin, or the owner. */
  requireAdmin(caller: Caller): void {
    if (caller.token || !isAdminRole(caller.role)) throw new ForbiddenError();
  }

  /** The instance owner (the key from `OUTRUN_ADMIN_KEY`). */
  requireOwner(caller: Caller): void {
    if (caller.token || caller.role !== 'owner') {
      throw new ForbiddenError('This route needs the instance owner key (OUTRUN_ADMIN_KEY).');
    }
  }

  /** Refuses a scoped token on a route that needs an API key. */
  requireApiKey(caller: Caller): void {
    if (caller.token) throw new ForbiddenError('A scoped token is valid only for its chat’s routes.');
  }

  async me(caller: Caller): Promise<{ user: UserObject; workspace: WorkspaceObject }> {
    const user = await this.db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', caller.userId)
      .executeTakeFirstOrThrow();
    const workspace = await this.db
      .selectFrom('workspaces')
      .selectAll()
      .where('id', '=', caller.workspaceId)
      .executeTakeFirstOrThrow();
    return { user: toUserObject(user), workspace: toWorkspaceObject(workspace) };
  }

  /** A new workspace; owner only. */
  async createWorkspace(
    caller: Caller,
    options: { name: string; quota?: WorkspaceQuota | null },
  ): Promise<WorkspaceObject> {
    this.requireOwner(caller);
    const row = await this.db
      .insertInto('workspaces')
      .values({
        id: newId('workspace'),
        name: options.name,
        quota: options.quota ? JSON.stringify(options.quota) : null,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toWorkspaceObject(row);
  }

  /** Renames a workspace or replaces its quota (`null` removes it); owner only. */
  async updateWorkspace(
    caller: Caller,
    workspaceId: string,
    patch: { name?: string; quota?: WorkspaceQuota | null },
  ): Promise<WorkspaceObject> {
    this.requireOwner(caller);
    const changes = {
      ...(patch.name !== undefined ? { name: patch.name } : {}),
      ...(patch.quota !== undefined ? { quota: patch.quota ? JSON.stringify(patch.quota) : null } : {}),
    };
    // An empty patch changes nothing and returns the workspace (an UPDATE needs at least one column).
    const row =
      Object.keys(changes).length === 0
        ? await this.db.selectFrom('workspaces').selectAll().where('id', '=', workspaceId).executeTakeFirst()
        : await this.db
            .updateTable('workspaces')
            .set(changes)
            .where('id', '=', workspaceId)
            .returningAll()
            .executeTakeFirst();
    if (!row) throw new NotFoundError('workspace', workspaceId);
    return toWorkspaceObject(row);
  }

  /**
   * Creates a user with a fresh API key; the key is returned this once. The owner may add users to any
   * workspace; an admin only to their own (another workspace is `workspace_not_found`).
   */
  async createUser(
    caller: Caller,
    options: { workspaceId: string; email: string; role?: 'admin' | 'member' },
  ): Promise<{ user: UserObject; apiKey: string }> {
    this.requireAdmin(caller);
    if (caller.role !== 'owner' && options.workspaceId !== caller.workspaceId) {
      throw new NotFoundError('workspace', options.workspaceId);
    }
    return this.db.transaction().execute(async (tx) => {
      const workspace = await tx
        .selectFrom('workspaces')
        .select('id')
        .where('id', '=', options.workspaceId)
        .executeTakeFirst();
      if (!workspace) throw new NotFoundError('workspace', options.workspaceId);
      await sql`select pg_advisory_xact_lock(${USER_CREATE_GATE}::int, hashtext(${options.workspaceId}))`.execute(
        tx,
      );
      // An email names one person whatever its case: `Ann@x.io` is taken by `ann@x.io`.
      const taken = await tx
        .selectFrom('users')
        .select('id')
        .where('workspace_id', '=', options.workspaceId)
        .where(sql<string>`lower(email)`, '=', options.email.toLowerCase())
        .where('deleted_at', 'is', null)
        .executeTakeFirst();
      if (taken)
        throw new ConflictError('user_exists', 'A user with this email already exists in the workspace.');
      const user = await tx
        .insertInto('users')
        .values({
          id: newId('user'),
          workspace_id: options.workspaceId,
          email: options.email,
          role: options.role ?? 'member',
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      const apiKey = generateApiKey();
      await tx
        .insertInto('api_keys')
        .values({
          id: newId('key'),
          user_id: user.id,
          name: 'default',
          hash: hashApiKey(apiKey),
          prefix: apiKeyPrefix(apiKey),
        })
        .execute();
      return { user: toUserObject(user), apiKey };
    });
  }

  /**
   * Removes a user: their keys are revoked (closing their streams on every instance), their chats' schedules
   * are disabled (nobody could see or stop them: chats are private) and the user is soft-deleted. Their chats
   * and runs stay. The owner cannot be removed.
   */
  async removeUser(caller: Caller, userId: string): Promise<void> {
    this.requireAdmin(caller);
    const user = await this.visibleUser(caller, userId);
    if (user.role === 'owner') throw new ForbiddenError('The instance owner cannot be removed.');
    const revoked = await this.db.transaction().execute(async (tx) => {
      await tx
        .updateTable('users')
        .set({ deleted_at: sql<Date>`now()` })
        .where('id', '=', userId)
        .where('deleted_at', 'is', null)
        .execute();
      await tx
        .updateTable('schedules')
        .set({ enabled: false, next_run_at: null, last_result: 'owner_removed' })
        .where('chat_id', 'in', (eb) => eb.selectFrom('chats').select('id').where('owner_id', '=', userId))
        .where('enabled', '=', true)
        .execute();
      return tx
        .updateTable('api_keys')
        .set({ revoked_at: sql<Date>`now()` })
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .returning('id')
        .execute();
    });
    await this.announceRevoked(revoked.map((row) => row.id));
  }

  /** The caller's keys, or (admin) those of `userId` in their workspace (owner: any workspace). */
  async listApiKeys(caller: Caller, options: { userId?: string } = {}): Promise<ApiKeyObject[]> {
    this.requireApiKey(caller);
    let userId = caller.userId;
    if (options.userId && options.userId !== caller.userId) {
      this.requireAdmin(caller);
      const user = await this.visibleUser(caller, options.userId);
      // The owner is above workspace admins: its keys (the seeded `OUTRUN_ADMIN_KEY` among them) are its own.
      if (user.role === 'owner') throw new ForbiddenError('Only the instance owner manages its keys.');
      userId = user.id;
    }
    const rows = await this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows.map(toApiKeyObject);
  }

  /** A new key of the caller; the key itself is returned this once. */
  async createApiKey(caller: Caller, options: { name: string }): Promise<CreatedApiKey> {
    this.requireApiKey(caller);
    const key = generateApiKey();
    const row = await this.db
      .insertInto('api_keys')
      .values({
        id: newId('key'),
        user_id: caller.userId,
        name: options.name,
        hash: hashApiKey(key),
        prefix: apiKeyPrefix(key),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { apiKey: toApiKeyObject(row), key };
  }

  /**
   * Revokes a key of the caller, or (admin) of a user of their workspace; any other key is `api_key_not_found`.
   * Idempotent. Every instance closes the key's open streams.
   */
  async revokeApiKey(caller: Caller, keyId: string): Promise<ApiKeyObject> {
    this.requireApiKey(caller);
    const row = await this.db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select(['api_keys.id', 'api_keys.user_id', 'users.workspace_id', 'users.role'])
      .where('api_keys.id', '=', keyId)
      .executeTakeFirst();
    const own = row?.user_id === caller.userId;
    // A workspace admin administers its workspace's users' keys, not the owner's (who may be in it).
    const administered =
      row !== undefined &&
      isAdminRole(caller.role) &&
      (caller.role === 'owner' || (row.workspace_id === caller.workspaceId && row.role !== 'owner'));
    if (!row || !(own || administered)) throw new NotFoundError('api_key', keyId);
    const revoked = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: sql<Date>`coalesce(revoked_at, now())` })
      .where('id', '=', keyId)
      .returningAll()
      .executeTakeFirst();
    if (!revoked) throw new NotFoundError('api_key', keyId);
    await this.announceRevoked([keyId]);
    return toApiKeyObject(revoked);
  }

  /** A scoped token for one of the caller's chats (DESIGN §4). */
  async issueToken(
    caller: Caller,
    options: { chatId: string; scopes: TokenScope[]; ttlSeconds: number },
  ): Promise<Pick<ScopedToken, 'token' | 'expiresAt'>> {
    this.requireApiKey(caller);
    if (!caller.keyId) throw new ForbiddenError('Scoped tokens are issued to API keys only.');
    const ttlSeconds = Math.min(options.ttlSeconds, MAX_TOKEN_TTL_SECONDS);
    const chat = await this.db
      .selectFrom('chats')
      .select('id')
      .where('id', '=', options.chatId)
      .where('workspace_id', '=', caller.workspaceId)
      .where('owner_id', '=', caller.userId)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    if (!chat) throw new NotFoundError('chat', options.chatId);
    // Whole seconds, rounded up: a token lives at least the `ttlSeconds` asked for.
    const expiresAt = new Date(Math.ceil(Date.now() / 1000) * 1000 + ttlSeconds * 1000);
    const token = signScopedToken(
      {
        chatId: chat.id,
        userId: caller.userId,
        workspaceId: caller.workspaceId,
        keyId: caller.keyId,
        scopes: [...new Set(options.scopes)],
        expiresAt,
      },
      await this.secret(),
    );
    return { token, expiresAt: expiresAt.toISOString() };
  }

  /**
   * Makes sure the default workspace, its owner and the owner's seeded key exist. With `adminKey` that key is
   * registered (idempotent) and any other seeded key revoked: changing `OUTRUN_ADMIN_KEY` retires the old one.
   * A configured key the owner has revoked stays revoked; `adminKeyRevokedAt` says so, for the caller to warn.
   * Without it, a key is generated only when the owner has none, and returned so the caller can print it once.
   */
  async seedAdmin(options: {
    adminKey?: string;
  }): Promise<{ generatedKey: string | null; userId: string; adminKeyRevokedAt: Date | null }> {
    const result = await this.db.transaction().execute(async (tx) => {
      // One seeder at a time, also across processes sharing a database.
      await sql`select pg_advisory_xact_lock(${SEED_LOCK_ID})`.execute(tx);
      let owner = await tx
        .selectFrom('users')
        .selectAll()
        .where('role', '=', 'owner')
        .where('deleted_at', 'is', null)
        .orderBy('id')
        .executeTakeFirst();
      if (!owner) {
        const workspaceId = newId('workspace');
        await tx.insertInto('workspaces').values({ id: workspaceId, name: DEFAULT_WORKSPACE_NAME }).execute();
        owner = await tx
          .insertInto('users')
          .values({ id: newId('user'), workspace_id: workspaceId, email: OWNER_EMAIL, role: 'owner' })
          .returningAll()
          .executeTakeFirstOrThrow();
      }
      let generatedKey: string | null = null;
      let key = options.adminKey;
      if (!key) {
        const existing = await tx
          .selectFrom('api_keys')
          .select('id')
          .where('user_id', '=', owner.id)
          .where('revoked_at', 'is', null)
          .executeTakeFirst();
        if (existing) {
          return { generatedKey: null, userId: owner.id, revoked: [] as string[], adminKeyRevokedAt: null };
        }
        key = generatedKey = generateApiKey();
      }
      const hash = hashApiKey(key);
      await tx
        .insertInto('api_keys')
        .values({
          id: newId('key'),
          user_id: owner.id,
          name: SEEDED_KEY_NAME,
          seeded: true,
          hash,
          prefix: apiKeyPrefix(key),
        })
        .onConflict((oc) => oc.column('hash').doNothing())
        .execute();
      const revoked = await tx
        .updateTable('api_keys')
        .set({ revoked_at: sql<Date>`now()` })
        .where('user_id', '=', owner.id)
        .where('seeded', '=', true)
        .where('hash', '!=', hash)
        .where('revoked_at', 'is', null)
        .returning('id')
        .execute();
      // A configured key the owner revoked stays revoked (a restart does not bring back a retired key).
      const configured = await tx
        .selectFrom('api_keys')
        .select('revoked_at')
        .where('hash', '=', hash)
        .executeTakeFirst();
      return {
        generatedKey,
        userId: owner.id,
        revoked: revoked.map((row) => row.id),
        adminKeyRevokedAt: configured?.revoked_at ?? null,
      };
    });
    await this.announceRevoked(result.revoked);
    return {
      generatedKey: result.generatedKey,
      userId: result.userId,
      adminKeyRevokedAt: result.adminKeyRevokedAt,
    };
  }

  /** A user the caller administers: theirs is the workspace, or the caller is the owner. */
  private async visibleUser(caller: Caller, userId: string): Promise<UserRow> {
    let query = this.db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', userId)
      .where('deleted_at', 'is', null);
    if (caller.role !== 'owner') query = query.where('workspace_id', '=', caller.workspaceId);
    const user = await query.executeTakeFirst();
    if (!user) throw new NotFoundError('user', userId);
    return user;
  }

  private async announceRevoked(keyIds: string[]): Promise<void> {
    const { bus, logger } = this.options;
    if (!bus || !logger) return;
    for (const keyId of keyIds) {
      await publishBestEffort({ bus, channel: BusChannel.apiKeyRevoked, message: { keyId }, logger });
    }
  }

  /** The scoped-token signing secret, created once per database and shared by every instance on it. */
  private secret(): Promise<string> {
    this.tokenSecret ??= (async () => {
      await this.db
        .insertInto('server_secrets')
        .values({ name: TOKEN_SECRET_NAME, value: generateTokenSecret() })
        .onConflict((oc) => oc.column('name').doNothing())
        .execute();
      const row = await this.db
        .selectFrom('server_secrets')
        .select('value')
        .where('name', '=', TOKEN_SECRET_NAME)
        .executeTakeFirstOrThrow();
      return row.value;
    })();
    this.tokenSecret.catch(() => {
      this.tokenSecret = null;
    });
    return this.tokenSecret;
  }
}
