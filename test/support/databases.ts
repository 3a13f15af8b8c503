import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { inject } from 'vitest';
import { newId } from '../../src/ids.ts';
import { createDatabase, type Db, type DatabaseHandle } from '../../src/store/database.ts';
import { withDatabase } from './global-setup.ts';

export type StoreKind = 'pglite' | 'postgres';

/** The stores every store and engine test runs on: PGlite always, PostgreSQL when DATABASE_URL is set. */
export const STORE_KINDS: StoreKind[] = process.env.DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];

/** A fresh, migrated database of `kind`; `close` also drops it. */
export async function openTestDatabase(
  kind: StoreKind,
  options: { poolSize?: number; connectTimeoutMs?: number } = {},
): Promise<DatabaseHandle> {
  if (kind === 'pglite') {
    const template = new Blob([readFileSync(inject('pgliteTemplate'))]);
    const pglite = new PGlite({ loadDataDir: template });
    const handle = await createDatabase({ pglite, migrate: false });
    return {
      ...handle,
      close: async () => {
        await handle.close();
        await pglite.close();
      },
    };
  }
  const databaseUrl = process.env.DATABASE_URL!;
  const template = inject('postgresTemplate')!;
  const name = `outrun_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(databaseUrl, `create database ${name} template ${template}`);
  const handle = await createDatabase({
    databaseUrl: withDatabase(databaseUrl, name),
    migrate: false,
    poolSize: options.poolSize,
    connectTimeoutMs: options.connectTimeoutMs,
  });
  return {
    ...handle,
    close: async () => {
      await handle.close();
      await adminQuery(databaseUrl, `drop database if exists ${name} with (force)`);
    },
  };
}

/** Inserts a workspace and a member of it, for tests that write chats and runs straight to the store. */
export async function seedMember(db: Db): Promise<{ workspaceId: string; userId: string }> {
  const workspaceId = newId('workspace');
  const userId = newId('user');
  await db.insertInto('workspaces').values({ id: workspaceId, name: 'w' }).execute();
  await db
    .insertInto('users')
    .values({ id: userId, workspace_id: workspaceId, email: 'u@example.com', role: 'member' })
    .execute();
  return { workspaceId, userId };
}

/** A database URL of a fresh, migrated PostgreSQL database (for tests that start a server process). */
export async function createPostgresDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const databaseUrl = process.env.DATABASE_URL!;
  const name = `outrun_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(databaseUrl, `create database ${name} template ${inject('postgresTemplate')!}`);
  return {
    url: withDatabase(databaseUrl, name),
    drop: () => adminQuery(databaseUrl, `drop database if exists ${name} with (force)`),
  };
}

async function adminQuery(databaseUrl: string, query: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(query);
  } finally {
    await client.end();
  }
}
