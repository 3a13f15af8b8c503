import type { ModelMessage } from 'ai';
import { newId } from '../ids.ts';
import type { Db } from '../store/database.ts';
import type { CompactionRow } from '../store/schema.ts';
import type { PreviousSummary } from './compaction.ts';

/** A stored summary of a chat's older messages. */
export interface CompactionRecord {
  id: string;
  chatId: string;
  runId: string | null;
  /** The last stored message the summary covers. */
  uptoMessageId: string;
  summary: string;
  tokensBefore: number;
  tokensAfter: number;
  createdAt: string;
}

const toRecord = (row: CompactionRow): CompactionRecord => ({
  id: row.id,
  chatId: row.chat_id,
  runId: row.run_id,
  uptoMessageId: row.upto_message_id,
  summary: row.summary,
  tokensBefore: row.tokens_before,
  tokensAfter: row.tokens_after,
  createdAt: row.created_at.toISOString(),
});

/** The `compactions` table: summaries made by context compaction, reused by later runs of the same chat. */
export class CompactionStore {
  readonly #db: Db;

  constructor(options: { db: Db }) {
    this.#db = options.db;
  }

  /** Stores a summary; pass `db` to write inside a caller's transaction. */
  async save(
    compaction: {
      chatId: string;
      runId: string | null;
      uptoMessageId: string;
      summary: string;
      tokensBefore: number;
      tokensAfter: number;
    },
    db: Db = this.#db,
  ): Promise<CompactionRecord> {
    const row = await db
      .insertInto('compactions')
      .values({
        id: newId('compaction'),
        chat_id: compaction.chatId,
        run_id: compaction.runId,
        upto_message_id: compaction.uptoMessageId,
        summary: compaction.summary,
        tokens_before: compaction.tokensBefore,
        tokens_after: compaction.tokensAfter,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toRecord(row);
  }

  /** The chat's newest summary, or null. */
  async latest(chatId: string): Promise<CompactionRecord | null> {
    const row = await this.#db
      .selectFrom('compactions')
      .selectAll()
      .where('chat_id', '=', chatId)
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? toRecord(row) : null;
  }
}

/**
 * Maps between stored messages and model messages through user messages, which convert one to one: a
 * summary covering `modelMessages[0, uptoIndex)` covers the stored messages before the matching user
 * message. Returns the id of the last of them (what `save` wants), or null when none matches.
 */
export function uptoMessageIdOf(options: {
  /** The chat's stored messages the model messages were made from, oldest first. */
  storedMessages: readonly { id: string; role: string }[];
  modelMessages: readonly ModelMessage[];
  /** `CompactHistoryResult.summary.uptoIndex`. */
  uptoIndex: number;
}): string | null {
  const userTurnsCovered = options.modelMessages
    .slice(0, options.uptoIndex)
    .filter((message) => message.role === 'user' && !isSummaryText(message)).length;
  let users = 0;
  for (let index = 0; index < options.storedMessages.length; index++) {
    if (options.storedMessages[index]!.role !== 'user') continue;
    if (users === userTurnsCovered) return index === 0 ? null : options.storedMessages[index - 1]!.id;
    users++;
  }
  return null;
}

/**
 * The inverse of `uptoMessageIdOf`: `compactHistory`'s `previousSummary` for a stored summary, or null when
 * its last covered message is not among `storedMessages` (or nothing after it is a user message).
 */
export function previousSummaryOf(options: {
  record: Pick<CompactionRecord, 'uptoMessageId' | 'summary'>;
  storedMessages: readonly { id: string; role: string }[];
  modelMessages: readonly ModelMessage[];
}): PreviousSummary | null {
  const position = options.storedMessages.findIndex((message) => message.id === options.record.uptoMessageId);
  if (position === -1) return null;
  const usersCovered = options.storedMessages.slice(0, position + 1).filter((m) => m.role === 'user').length;
  let users = 0;
  for (let index = 0; index < options.modelMessages.length; index++) {
    if (options.modelMessages[index]!.role !== 'user') continue;
    if (users === usersCovered) return { uptoIndex: index, summary: options.record.summary };
    users++;
  }
  return null;
}

function isSummaryText(message: ModelMessage): boolean {
  return typeof message.content === 'string' && message.content.startsWith('[Summary of the ');
}
