import { newId } from '../../src/ids.ts';
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

/** A chat of the member's and a `running` run in it (epoch 1), written straight to the store. */
export async function insertRunningRun(
  db: Db,
  member: { workspaceId: string; userId: string },
): Promise<{ chatId: string; runId: string }> {
  const chatId = newId('chat');
  await db
    .insertInto('chats')
    .values({ id: chatId, workspace_id: member.workspaceId, owner_id: member.userId, title: 't' })
    .execute();
  const runId = newId('run');
  await db
    .insertInto('runs')
    .values({
      id: runId,
      chat_id: chatId,
      workspace_id: member.workspaceId,
      created_by: member.userId,
      trigger: 'api',
      status: 'running',
      model: 'scripted',
      options: '{}',
      attempt: 1,
      epoch: 1,
    })
    .execute();
  return { chatId, runId };
}

/**
 * Ends a run as its settle would, straight in the store: `status` (succeeded unless said) and `finished_at`,
 * so that compaction takes it.
 */
export async function finishRun(db: Db, runId: string, status = 'succeeded'): Promise<void> {
  await db.updateTable('runs').set({ status, finished_at: new Date() }).where('id', '=', runId).execute();
}
