import { sql } from 'kysely';
import type { Db } from '../../src/store/database.ts';

/**
 * Durable run events in the whole database, wherever they are stored: rows of `run_events` plus the events
 * of compacted runs' pages. A finished run's compaction moves events without changing this count.
 */
export async function countEvents(db: Db): Promise<number> {
  const result = await sql<{ n: string | number }>`
    select (select count(*) from run_events)
         + (select coalesce(sum(last_seq - first_seq + 1), 0) from run_event_pages) as n`.execute(db);
  return Number(result.rows[0]!.n);
}
