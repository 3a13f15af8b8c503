import { afterAll, afterEach, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { ChatService } from '../src/chats/chat-service.ts';
import { newId } from '../src/ids.ts';
import { startRowsOf } from './support/chat-rows.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, script, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

const echo = JSON.stringify({ script: { echoInput: true } });

/**
 * A start does not read its chat: the statement that begins the run checks that the chat is the caller's and
 * has the agent the start assumed. Every answer a read gave stays as it was, and a refused start writes nothing.
 */
describe.each(STORE_KINDS)('a start that checks its chat in its statement on %s', (kind) => {
  let server: TestServer;
  let chatReads: MockInstance<ChatService['getRow']>;
  const readsOf = (chatId: string) => chatReads.mock.calls.filter(([, id]) => id === chatId).length;

  beforeAll(async () => {
    chatReads = vi.spyOn(ChatService.prototype, 'getRow');
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    chatReads.mockRestore();
    await server?.close();
  });
  let forgotten: MockInstance<ChatService['agentOf']> | undefined;
  afterEach(() => forgotten?.mockRestore());

  /** This instance has not seen the chat (it was created on another one, or long ago). */
  const forgetAgents = () => {
    forgotten = vi.spyOn(ChatService.prototype, 'agentOf').mockReturnValue(undefined);
  };

  async function createAgent(instructions: string): Promise<string> {
    const response = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'Agent', instructions },
    });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body.agent.id as string;
  }

  async function chatWith(agentId: string | null, key?: string): Promise<string> {
    const response = await server.api('/v1/chats', { method: 'POST', body: agentId ? { agentId } : {}, key });
    expect(response.status).toBe(201);
    return response.body.chat.id as string;
  }

  const rowsOf = (chatId: string) => startRowsOf(server.outrun.db, chatId);

  const start = (chatId: string, body: Record<string, unknown>, key?: string, accept?: string) =>
    server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body,
      key,
      headers: accept ? { accept } : undefined,
    });

  it('starts a run on a chat without an agent with no read of the chat', async () => {
    const chatId = await chatWith(null);
    forgetAgents();
    const started = await start(chatId, { input: { text: script({ tokens: 3 }) } });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    expect(started.body.run.agentId).toBeNull();
    expect((await server.waitForRun(started.body.run.id)).status).toBe('succeeded');
    expect(readsOf(chatId)).toBe(0);
  });

  it("runs a chat's agent when the start assumed none: the first statement writes nothing, the second runs", async () => {
    const agentId = await createAgent('Answer as the agent of this chat.');
    const chatId = await chatWith(agentId);
    forgetAgents();
    const started = await start(chatId, { input: { text: echo } });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    expect(started.body.run.agentId).toBe(agentId);
    await server.waitForRun(started.body.run.id);
    const stream = await collectStream(await server.fetch(`/v1/runs/${started.body.run.id}/stream`));
    expect(JSON.parse(streamedText(stream.events)).system).toBe('Answer as the agent of this chat.');
    // One run, its two messages, and its events numbered from 1 with no gap: the refused statement left nothing.
    expect(await rowsOf(chatId)).toEqual({ runs: 1, messages: 2 });
    expect(stream.events.map((event) => event.seq)).toEqual(
      Array.from({ length: stream.events.length }, (_, index) => index + 1),
    );
    expect(readsOf(chatId)).toBe(0);
  });

  it("answers a chat it may not use with the read's 404, busy or not, streaming or not, and writes nothing", async () => {
    const bobKey = await server.createUser(`bob-${kind}@example.com`);
    const bobsChat = await chatWith(null, bobKey);
    const busy = await start(bobsChat, { input: { text: script({ tokens: 200, delayMs: 10 }) } }, bobKey);
    expect(busy.status).toBe(201);
    const deleted = await chatWith(null);
    expect((await server.api(`/v1/chats/${deleted}`, { method: 'DELETE' })).status).toBe(204);
    const missing = newId('chat');

    for (const chatId of [bobsChat, deleted, missing]) {
      const read = await server.api(`/v1/chats/${chatId}`);
      expect(read.status).toBe(404);
      const before = await rowsOf(chatId);
      for (const accept of [undefined, 'text/event-stream']) {
        for (const multitask of ['reject', 'enqueue', 'interrupt']) {
          const refused = await start(chatId, { input: { text: 'hi' }, multitask }, undefined, accept);
          expect(refused.status, `${chatId} ${accept} ${multitask}`).toBe(404);
          expect(refused.body).toEqual(read.body);
        }
      }
      expect(await rowsOf(chatId)).toEqual(before);
    }
    await server.api(`/v1/runs/${busy.body.run.id}/stop`, { method: 'POST', key: bobKey });
  });

  it('answers 404 before a bad model for a chat it may not use, and their 400 on its own chat', async () => {
    const missing = newId('chat');
    const chatId = await chatWith(null);
    const agentId = await createAgent('Priced by the agent.');
    const agentChat = await chatWith(agentId);
    forgetAgents();
    const body = { input: { text: 'hi' }, model: 'nope:x' };
    expect((await start(missing, body)).body.error.code).toBe('chat_not_found');
    const own = await start(chatId, body);
    expect(own).toMatchObject({ status: 400, body: { error: { code: 'model_unavailable' } } });
    // The chat is read when the assumed agent's start failed: the answer is that of the chat's own agent.
    expect(await start(agentChat, body)).toMatchObject({ status: 400, body: own.body });
    expect(readsOf(agentChat)).toBe(1);
    expect(await rowsOf(missing)).toEqual({ runs: 0, messages: 0 });
    expect(await rowsOf(chatId)).toEqual({ runs: 0, messages: 0 });
  });
});
