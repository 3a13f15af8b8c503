import { convertToModelMessages, type ModelMessage, type ToolSet, type UIMessage } from 'ai';
import type { ChatService } from '../chats/chat-service.ts';
import { withoutInterruptedSteps } from '../protocol/message-projector.ts';
import type { MessageRow, RunRow } from '../store/schema.ts';

type Part = UIMessage['parts'][number];

/**
 * What the model sees for a run: the chat's messages before the run's assistant message, then the steps
 * this run already finished (a resumed run). Parts of steps a crash interrupted, and Outrun's own data
 * parts, are left out: the model sees each step once.
 */
export async function loadRunContext(options: {
  chats: ChatService;
  run: RunRow;
  finishedParts: Part[];
  tools: ToolSet;
  /** The chat's messages before the run's assistant message, when the start read them already. */
  stored?: MessageRow[] | null;
}): Promise<{ messages: ModelMessage[]; storedMessages: MessageRow[] }> {
  const { run } = options;
  const rows =
    options.stored ?? (await options.chats.historyBefore(run.chat_id, run.assistant_message_id ?? run.id));
  const messages = rows.map((message): UIMessage => ({
    id: message.id,
    role: message.role,
    parts: forModel(message.parts as Part[]),
  }));
  if (options.finishedParts.length > 0) {
    messages.push({
      id: run.assistant_message_id ?? run.id,
      role: 'assistant',
      parts: forModel(options.finishedParts),
    });
  }
  const converted = await convertToModelMessages(
    messages.filter((message) => message.parts.length > 0),
    { tools: options.tools, ignoreIncompleteToolCalls: true },
  );
  return { messages: converted, storedMessages: rows };
}

function forModel(parts: Part[]): Part[] {
  return (withoutInterruptedSteps(parts) as Part[]).filter((part) => !part.type.startsWith('data-'));
}
