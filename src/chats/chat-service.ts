import { sql, type ExpressionBuilder, type Transaction } from 'kysely';
import { keyStillValid, type Caller } from '../auth/auth-service.ts';
import { NotFoundError } from '../errors.ts';
import { newId } from '../ids.ts';
import type { Db } from '../store/database.ts';
import type { Chat, Message, MessagePart, Page } from '../protocol/wire.ts';
import type { ChatRow, Database, MessageRow } from '../store/schema.ts';

export type { Page };
export type ChatObject = Chat;
export type MessageObject = Message;

export const DEFAULT_CHAT_TITLE = 'New chat';

const toChatObject = (row: ChatRow): ChatObject => ({
  id: row.id,
  agentId: row.agent_id,
  title: row.title,
  createdAt: row.created_at.toISOString(),
  updatedAt: row.updated_at.toISOString(),
});

/** How many chats' agents `ChatService.agentOf` remembers (about 100 bytes each); the oldest go first. */
const KNOWN_AGENTS_LIMIT = 10_000;

/**
 * SQL true for a chat (`chats`, in any query that has it) as its owner sees it: in the owner's workspace, the
 * owner's, not deleted; with `keyId`, also only while that API key authenticates (the statement checks the
 * caller's key itself, `keyStillValid`).
 */
export function chatSeenBy(owner: { workspaceId: string; userId: string; keyId?: string }) {
  return (eb: ExpressionBuilder<Database, 'chats'>) =>
    eb.and([
      eb('chats.workspace_id', '=', owner.workspaceId),
      eb('chats.owner_id', '=', owner.userId),
      eb('chats.deleted_at', 'is', null),
      ...(owner.keyId ? [keyStillValid(owner.keyId)] : []),
    ]);
}

/** Chats and their messages, always scoped to the caller's workspace and private to their owner. */
export class ChatService {
  /** Chats' agents seen lately, by chat id: a chat's agent is set when it is created and never changes. */
  readonly #agents = new Map<string, string | null>();

  constructor(private readonly db: Db) {}

  /**
   * The chat's agent if this instance has seen the chat lately (a chat's agent never changes), else
   * undefined. It says nothing of who may use the chat: a start that trusts it checks ownership in its
   * statement (`StartChatRunOptions.checkChat`).
   */
  agentOf(chatId: string): string | null | undefined {
    return this.#agents.get(chatId);
  }

  /** Remembers a chat's agent, as `getRow` does (`agentOf`). */
  rememberAgent(chatId: string, agentId: string | null): void {
    if (this.#agents.has(chatId)) return;
    if (this.#agents.size >= KNOWN_AGENTS_LIMIT) this.#agents.delete(this.#agents.keys().next().value!);
    this.#agents.set(chatId, agentId);
  }

  /** A new chat of the caller. `agentId` must name a live agent of the caller's workspace, else `agent_not_found`. */
  async create(
    caller: Caller,
    options: { title?: string; agentId?: string | null },
    /** Writes that commit with the chat (an `Idempotency-Key`'s answer), in its transaction. */
    inTransaction?: (tx: Transaction<Database>, chat: ChatObject) => Promise<void>,
  ): Promise<ChatObject> {
    if (!inTransaction) return this.createIn(this.db, caller, options);
    return this.db.transaction().execute(async (tx) => {
      const chat = await this.createIn(tx, caller, options);
      await inTransaction(tx, chat);
      return chat;
    });
  }

  /** `create` in `db`: the caller's transaction, which may go on to write more (a chat's first run). */
  async createIn(
    db: Db | Transaction<Database>,
    caller: Caller,
    options: { id?: string; title?: string; agentId?: string | null },
  ): Promise<ChatObject> {
    const agentId = options.agentId ?? null;
    if (agentId !== null) {
      const agent = await db
        .selectFrom('agents')
        .select('id')
        .where('id', '=', agentId)
        .where('workspace_id', '=', caller.workspaceId)
        .where('archived_at', 'is', null)
        .executeTakeFirst();
      if (!agent) throw new NotFoundError('agent', agentId);
    }
    const row = await db
      .insertInto('chats')
      .values({
        id: options.id ?? newId('chat'),
        workspace_id: caller.workspaceId,
        owner_id: caller.userId,
        agent_id: agentId,
        title: options.title?.trim() || DEFAULT_CHAT_TITLE,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    // A chat rolled back with its transaction leaves an entry no chat will ever have the id of.
    this.rememberAgent(row.id, row.agent_id);
    return toChatObject(row);
  }

  /** The caller's chat, or `NotFoundError` (also for someone else's chat: existence never leaks). */
  async get(caller: Caller, chatId: string): Promise<ChatObject> {
    return toChatObject(await this.getRow(caller, chatId));
  }

  /**
   * The caller's chat row, or `NotFoundError`. With `keyId`, also `NotFoundError` when that API key no longer
   * authenticates (the read checks the caller's key itself: `readCheckingKey`).
   */
  async getRow(caller: Caller, chatId: string, keyId?: string): Promise<ChatRow> {
    const row = await this.db
      .selectFrom('chats')
      .selectAll()
      .where('id', '=', chatId)
      .where(chatSeenBy({ workspaceId: caller.workspaceId, userId: caller.userId, keyId }))
      .executeTakeFirst();
    if (!row) throw new NotFoundError('chat', chatId);
    this.rememberAgent(chatId, row.agent_id);
    return row;
  }

  /** The caller's chats, newest first. */
  async list(caller: Caller, options: { limit: number; cursor?: string }): Promise<Page<ChatObject>> {
    let query = this.db
      .selectFrom('chats')
      .selectAll()
      .where(chatSeenBy({ workspaceId: caller.workspaceId, userId: caller.userId }));
    if (options.cursor) query = query.where('id', '<', options.cursor);
    const rows = await query
      .orderBy('id', 'desc')
      .limit(options.limit + 1)
      .execute();
    return pageOf(rows.map(toChatObject), options.limit);
  }

  async rename(caller: Caller, chatId: string, title: string): Promise<ChatObject> {
    await this.getRow(caller, chatId);
    const row = await this.db
      .updateTable('chats')
      .set({ title: title.trim() || DEFAULT_CHAT_TITLE, updated_at: sql<Date>`now()` })
      .where('id', '=', chatId)
      .where('deleted_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    // Deleted since it was read.
    if (!row) throw new NotFoundError('chat', chatId);
    return toChatObject(row);
  }

  /** Soft-deletes a chat: it disappears from every route; its runs and events stay for the record. */
  async delete(caller: Caller, chatId: string): Promise<void> {
    await this.getRow(caller, chatId);
    await this.db
      .updateTable('chats')
      .set({ deleted_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
      .where('id', '=', chatId)
      .where('deleted_at', 'is', null)
      .execute();
  }

  /** The chat's messages, oldest first. A message still streaming shows the run's finished steps. */
  async messages(
    caller: Caller,
    chatId: string,
    options: { limit: number; cursor?: string },
  ): Promise<Page<MessageObject>> {
    await this.getRow(caller, chatId);
    let query = this.db.selectFrom('messages').selectAll().where('chat_id', '=', chatId);
    if (options.cursor) query = query.where('id', '>', options.cursor);
    const rows = await query
      .orderBy('id')
      .limit(options.limit + 1)
      .execute();
    const page = pageOf(rows, options.limit);
    return {
      items: await Promise.all(page.items.map((row) => this.toMessageObject(row))),
      nextCursor: page.nextCursor,
    };
  }

  /**
   * The chat's messages before `beforeMessageId` (a run's assistant message), oldest first: the history
   * a run answers. Messages of runs queued after it come later and are left out.
   */
  async historyBefore(chatId: string, beforeMessageId: string): Promise<MessageRow[]> {
    return this.db
      .selectFrom('messages')
      .selectAll()
      .where('chat_id', '=', chatId)
      .where('id', '<', beforeMessageId)
      .orderBy('id')
      .execute();
  }

  async message(messageId: string): Promise<MessageObject | null> {
    const row = await this.db
      .selectFrom('messages')
      .selectAll()
      .where('id', '=', messageId)
      .executeTakeFirst();
    return row ? this.toMessageObject(row) : null;
  }

  /** A message as the API shows it; a streaming message is assembled from its run's recorded steps. */
  async toMessageObject(row: MessageRow): Promise<MessageObject> {
    let parts = row.parts;
    let streamSeq: number | null = null;
    if (row.status === 'streaming' && row.run_id) {
      const steps = await this.db
        .selectFrom('run_steps')
        .select(['parts', 'last_seq'])
        .where('run_id', '=', row.run_id)
        .orderBy('step')
        .execute();
      parts = steps.flatMap((step) => step.parts);
      streamSeq = steps.at(-1)?.last_seq ?? 0;
    }
    return {
      id: row.id,
      role: row.role,
      parts: parts as MessagePart[],
      status: row.status,
      runId: row.run_id,
      createdAt: row.created_at.toISOString(),
      streamSeq,
    };
  }
}

function pageOf<T extends { id: string }>(rows: T[], limit: number): Page<T> {
  const items = rows.slice(0, limit);
  return { items, nextCursor: rows.length > limit ? items[items.length - 1]!.id : null };
}
