import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CompactionStore } from '../src/agent/compaction-store.ts';
import { STORE_KINDS } from './support/databases.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

describe.each(STORE_KINDS)('stored compactions on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('finds the newest summary of a chat for its next run, and none for another chat', async () => {
    const chatId = await server.createChat();
    const otherChatId = await server.createChat();
    const run = await server.waitForRun((await server.startRun(chatId, { steps: 1, tokens: 1 })).id);
    const store = new CompactionStore({ db: server.outrun.db });
    expect(await store.latest(chatId)).toBeNull();
    const base = { chatId, runId: run.id, tokensBefore: 9_000, tokensAfter: 3_000 };
    await store.save({ ...base, uptoMessageId: 'msg_a', summary: 'first' });
    const second = await store.save({ ...base, uptoMessageId: 'msg_b', summary: 'second' });
    expect(await store.latest(chatId)).toEqual(second);
    expect(second).toMatchObject({ summary: 'second', uptoMessageId: 'msg_b', tokensBefore: 9_000 });
    expect(await store.latest(otherChatId)).toBeNull();
  });
});
