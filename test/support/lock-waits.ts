import pg from 'pg';
import { pollUntil } from './wait.ts';

/**
 * Waits until a statement whose text starts with `prefix` waits for a lock in the PostgreSQL of
 * `DATABASE_URL` (any of its databases). It watches on a connection of its own: the server's pool may be
 * busy with statements waiting on those locks. PostgreSQL shows a statement's first 1,024 bytes, so match
 * on its start.
 */
export async function untilWaitingForLock(prefix: string, timeoutMs = 10_000): Promise<void> {
  const watcher = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await watcher.connect();
  try {
    await pollUntil(
      async () =>
        (
          await watcher.query(
            `select pid from pg_stat_activity where wait_event_type = 'Lock' and starts_with(query, $1)`,
            [prefix],
          )
        ).rowCount ?? 0,
      (waiting) => waiting >= 1,
      { timeoutMs },
    );
  } finally {
    await watcher.end();
  }
}
