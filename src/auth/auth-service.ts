import { sql } from 'kysely';
import { ForbiddenError, NotFoundError, UnauthorizedError } from '../errors.ts';
import { newId } from '../ids.ts';
import type { Db } from '../store/database.ts';
import type { UserObject, WorkspaceObject } from '../protocol/wire.ts';
import type { UserRow, WorkspaceRow } from '../store/schema.ts';
import { apiKeyPrefix, generateApiKey, hashApiKey } from './api-keys.ts';

/** Who is calling: the user behind the API key, and the workspace every query is scoped to. */
export interface Caller {
  userId: string;
  workspaceId: string;
  role: 'admin' | 'member';
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
  createdAt: row.created_at.toISOString(),
});

const DEFAULT_WORKSPACE_NAME = 'Default';
const ADMIN_EMAIL = 'admin@localhost';
/** `last_used_at` is refreshed at most this often per key, so authentication stays read-only. */
const LAST_USED_RESOLUTION_MS = 60_000;

/** Workspaces, users and API keys. Keys are stored only as SHA-256 hashes. */
export class AuthService {
  constructor(private readonly db: Db) {}

  /** The caller behind `key`, or `UnauthorizedError` for a missing, unknown or revoked key. */
  async authenticate(key: string | undefined): Promise<Caller> {
    if (!key) throw new UnauthorizedError();
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
      .where('api_keys.hash', '=', hashApiKey(key))
      .where('api_keys.revoked_at', 'is', null)
      .executeTakeFirst();
    if (!row) throw new UnauthorizedError('The API key is not valid.');
    if (!row.last_used_at || Date.now() - row.last_used_at.getTime() > LAST_USED_RESOLUTION_MS) {
      await this.db
        .updateTable('api_keys')
        .set({ last_used_at: sql<Date>`now()` })
        .where('id', '=', row.keyId)
        .execute();
    }
    return { userId: row.id, workspaceId: row.workspace_id, role: row.role };
  }

  requireAdmin(caller: Caller): void {
    if (caller.role !== 'admin') throw new ForbiddenError();
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

  async createWorkspace(name: string): Promise<WorkspaceObject> {
    const row = await this.db
      .insertInto('workspaces')
      .values({ id: newId('workspace'), name })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toWorkspaceObject(row);
  }

  /** Creates a user with a fresh API key; the key is returned this once. */
  async createUser(options: {
    workspaceId: string;
    email: string;
    role?: 'admin' | 'member';
  }): Promise<{ user: UserObject; apiKey: string }> {
    return this.db.transaction().execute(async (tx) => {
      const workspace = await tx
        .selectFrom('workspaces')
        .select('id')
        .where('id', '=', options.workspaceId)
        .executeTakeFirst();
      if (!workspace) throw new NotFoundError('workspace', options.workspaceId);
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
          hash: hashApiKey(apiKey),
          prefix: apiKeyPrefix(apiKey),
        })
        .execute();
      return { user: toUserObject(user), apiKey };
    });
  }

  /**
   * Makes sure the default workspace, its admin user and an admin key exist. With `adminKey` that key is
   * registered (idempotent). Without it, a key is generated only when the admin has none, and returned so
   * the caller can print it once.
   */
  async seedAdmin(options: { adminKey?: string }): Promise<{ generatedKey: string | null; userId: string }> {
    return this.db.transaction().execute(async (tx) => {
      // One seeder at a time, also across processes sharing a database.
      await sql`select pg_advisory_xact_lock(7220331)`.execute(tx);
      let admin = await tx
        .selectFrom('users')
        .selectAll()
        .where('email', '=', ADMIN_EMAIL)
        .where('role', '=', 'admin')
        .orderBy('id')
        .executeTakeFirst();
      if (!admin) {
        const workspaceId = newId('workspace');
        await tx.insertInto('workspaces').values({ id: workspaceId, name: DEFAULT_WORKSPACE_NAME }).execute();
        admin = await tx
          .insertInto('users')
          .values({ id: newId('user'), workspace_id: workspaceId, email: ADMIN_EMAIL, role: 'admin' })
          .returningAll()
          .executeTakeFirstOrThrow();
      }
      let generatedKey: string | null = null;
      let key = options.adminKey;
      if (!key) {
        const existing = await tx
          .selectFrom('api_keys')
          .select('id')
          .where('user_id', '=', admin.id)
          .where('revoked_at', 'is', null)
          .executeTakeFirst();
        if (existing) return { generatedKey: null, userId: admin.id };
        key = generatedKey = generateApiKey();
      }
      await tx
        .insertInto('api_keys')
        .values({ id: newId('key'), user_id: admin.id, hash: hashApiKey(key), prefix: apiKeyPrefix(key) })
        .onConflict((oc) => oc.column('hash').doNothing())
        .execute();
      return { generatedKey, userId: admin.id };
    });
  }
}
