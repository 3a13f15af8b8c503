import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { openTestDatabase } from './support/databases.ts';

/**
 * A pooled PostgreSQL connection that dies while it is checked out between two statements (a transaction
 * waiting on its caller when the server shuts down or an administrator ends the backend) must fail that
 * transaction, not the process: `pg` emits the server's FATAL message as an `error` event on the connection,
 * and the pool listens only to idle connections.
 */
describe.skipIf(!process.env.DATABASE_URL)('a pooled connection lost while checked out', () => {
  const uncaught: unknown[] = [];
  const record = (error: unknown) => void uncaught.push(error);
  afterEach(() => void process.off('uncaughtException', record));

  it('fails its transaction without an uncaught error, and the pool serves the next statement', async () => {
    process.on('uncaughtException', record);
    const handle = await openTestDatabase('postgres');
    const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await admin.connect();
    try {
      const transaction = handle.db.transaction().execute(async (tx) => {
        const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(tx);
        // Only this test's own backend, in this test's own database.
        await admin.query('select pg_terminate_backend($1)', [rows[0]!.pid]);
        // The server's FATAL arrives while the connection is checked out and no statement is running.
        await new Promise((resolve) => setTimeout(resolve, 200));
        await sql`select 1`.execute(tx);
      });
      await expect(transaction).rejects.toThrow();
      expect(uncaught).toEqual([]);
      const after = await sql<{ one: number }>`select 1 as one`.execute(handle.db);
      expect(after.rows).toEqual([{ one: 1 }]);
    } finally {
      await admin.end();
      await handle.close();
    }
  });
});
