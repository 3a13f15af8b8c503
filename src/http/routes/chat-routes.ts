import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import type { ChatObject } from '../../chats/chat-service.ts';
import { newId } from '../../ids.ts';
import { RunTrigger } from '../../runs/run-status.ts';
import { withIdempotency } from '../idempotent-route.ts';
import { PaginationQuery, requireId } from '../validation.ts';

export const CreateChatBody = z
  .object({ title: z.string().max(200).optional(), agentId: z.string().nullable().optional() })
  .strict()
  .optional();
export const UpdateChatBody = z.object({ title: z.string().max(200) }).strict();
const ChatParams = z.object({ chatId: z.string() });
export const ChatListQuery = PaginationQuery(20, 100);
export const MessageListQuery = PaginationQuery(100, 500);

export function registerChatRoutes(app: FastifyInstance, context: OutrunContext): void {
  const { chats, engine, agents } = context;
  const chatId = (params: unknown) => requireId('chat', ChatParams.parse(params).chatId);

  app.post('/v1/chats', async (request, reply) =>
    withIdempotency(context.idempotency, request, reply, async (claim) => {
      const body = CreateChatBody.parse(request.body) ?? {};
      if (body.agentId) requireId('agent', body.agentId);
      const autostart = body.agentId ? (await agents.get(request.caller, body.agentId)).autostart : null;
      if (!autostart) {
        // The answer is stored with the chat (`claim`): a retry after a crash replays it, not a second chat.
        const chat = await chats.create(
          request.caller,
          body,
          claim ? (tx, created) => claim.answerIn(tx, { status: 201, body: { chat: created } }) : undefined,
        );
        return { status: 201, body: { chat } };
      }
      // An agent with `autostart` begins at once: the chat is created in its first run's transaction, so it
      // exists with that run or not at all, and the answer carries the run, like a run request's, stored with
      // it (`claim`): a retry never starts a second one, nor a failed or cut start leaves an empty chat.
      const id = newId('chat');
      let chat: ChatObject | undefined;
      const run = await engine.startChatRun({
        workspaceId: request.caller.workspaceId,
        userId: request.caller.userId,
        chatId: id,
        agentId: body.agentId!,
        parts: [{ type: 'text', text: autostart.text }],
        trigger: RunTrigger.autostart,
        createChat: async (tx) => {
          chat = await chats.createIn(tx, request.caller, { ...body, id });
        },
        inTransaction: claim
          ? (tx, begun) => claim.answerIn(tx, { status: 201, body: { chat, run: begun } })
          : undefined,
      });
      return { status: 201, body: { chat, run } };
    }),
  );

  app.get('/v1/chats', async (request) => {
    const query = ChatListQuery.parse(request.query);
    if (query.cursor) requireId('chat', query.cursor);
    return chats.list(request.caller, query);
  });

  app.get('/v1/chats/:chatId', async (request) => ({
    chat: await chats.get(request.caller, chatId(request.params)),
  }));

  app.patch('/v1/chats/:chatId', async (request) => {
    const id = chatId(request.params);
    const body = UpdateChatBody.parse(request.body);
    return { chat: await chats.rename(request.caller, id, body.title) };
  });

  app.delete('/v1/chats/:chatId', async (request, reply) => {
    const id = chatId(request.params);
    await chats.getRow(request.caller, id);
    // Its runs are stopped, queued ones too, before the chat goes (a crash in between leaves a chat without
    // runs, not runs in a deleted chat), and again after: a start that raced the deletion and committed first.
    // A start that commits later is refused (`RunService.begin`).
    await engine.stopChat(id, { includeQueued: true });
    await chats.delete(request.caller, id);
    await engine.stopChat(id, { includeQueued: true });
    return reply.status(204).send();
  });

  app.get('/v1/chats/:chatId/messages', async (request) => {
    const id = chatId(request.params);
    const query = MessageListQuery.parse(request.query);
    if (query.cursor) requireId('message', query.cursor);
    return chats.messages(request.caller, id, query);
  });
}
