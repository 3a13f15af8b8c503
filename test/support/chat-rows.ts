import type { Db } from '../../src/store/database.ts';

/**
 * The rows a start writes first, for one chat: its runs and messages (a run's events cannot exist without its
 * run, a foreign key). A refused start must leave these counts as they were.
 */
export async function startRowsOf(db: Db, chatId: string): Promise<{ runs: number; messages: number }> {
  const runs = await db.selectFrom('runs').select('id').where('chat_id', '=', chatId).execute();
  const messages = await db.selectFrom('messages').select('id').where('chat_id', '=', chatId).execute();
  return { runs: runs.length, messages: messages.length };
}
