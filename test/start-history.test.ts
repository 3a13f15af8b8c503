import { afterAll, afterEach, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { ChatService } from '../src/chats/chat-service.ts';
import { FaultPoint, Faults } from '../src/faults.ts';
import type { EchoedInput } from '../src/agent/scripted-model.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { untilWaitingForLock } from './support/lock-waits.ts';
import { pollUntil } from './support/wait.ts';

const echo = JSON.stringify({ script: { echoInput: true } });

/**
 * A start that claims its run on this instance reads the run's history in the statement that begins it, and
 * the executor reads it again only when that statement could not be sure it was current.
 */
describe.each(STORE_KINDS)('a run’s history read by its start on %s', (kind) => {
  let server: TestServer;
  const faults = new Faults();
  let historyReads: MockInstance<ChatService['historyBefore']>;
  const readsOf = (chatId: string) => historyReads.mock.calls.filter(([id]) => id === chatId).length;

  beforeAll(async () => {
    historyReads = vi.spyOn(ChatService.prototype, 'historyBefore');
    server = await startTestServer(kind, { faults });
  });
  afterAll(async () => {
    historyReads.mockRestore();
    await server?.close();
  });
  afterEach(() => faults.clear());

  /** A chat of two finished exchanges; then a run that answers with what the model received. */
  async function thirdTurn(): Promise<{ chatId: string; echoed: EchoedInput }> {
    const chatId = await server.createChat();
    for (const tokens of [3, 5]) await server.waitForRun((await server.startRun(chatId, { tokens })).id);
    const started = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: echo } },
    });
    return { chatId, echoed: await echoedBy(started.body.run.id) };
  }

  async function echoedBy(runId: string): Promise<EchoedInput> {
    expect((await server.waitForRun(runId)).status).toBe('succeeded');
    const stream = await collectStream(await server.fetch(`/v1/runs/${runId}/stream`));
    return JSON.parse(streamedText(stream.events)) as EchoedInput;
  }

  it('gives a locally claimed run the history a read gives, without the read', async () => {
    const local = await thirdTurn();
    expect(readsOf(local.chatId)).toBe(0);
    // The same chat through the queue: the executor reads the history itself.
    faults.arm(FaultPoint.beforeClaim, () => {});
    const queued = await thirdTurn();
    expect(readsOf(queued.chatId)).toBeGreaterThan(0);

    expect(local.echoed).toEqual(queued.echoed);
    // Five messages: two exchanges and this run's user message.
    expect(local.echoed.messages).toBe(5);
    const turns = [3, 5].map((tokens) => script({ tokens }).length + scriptedText(1, tokens).length);
    expect(local.echoed.chars).toBe(turns[0]! + turns[1]! + echo.length);
  });

  // The start waits in the unique index on active runs for the ending of the chat's active run, with its
  // snapshot already taken: the history it sees has that run's message unsettled. PGlite has one connection.
  it.runIf(kind === 'postgres')(
    'reads the history again when the start waited for the ending of the run before it',
    async () => {
      const chatId = await server.createChat();
      const first = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: script({ tokens: 400, delayMs: 10 }) } },
      });
      const firstId = first.body.run.id as string;
      await server.waitForRun(firstId, (run) => run.status === 'running');

      // A stopped run's ending takes the transaction (the owner's picture of the row has no stop); its second
      // pass at the fault point is inside that transaction, which then stays open until released.
      let commit!: () => void;
      const held = new Promise<void>((resolve) => (commit = resolve));
      let hits = 0;
      faults.arm(FaultPoint.settleBeforeCommit, async ({ runId }) => {
        if (runId === firstId && ++hits === 2) await held;
      });
      await server.api(`/v1/runs/${firstId}/stop`, { method: 'POST' });
      await pollUntil(
        () => hits,
        (count) => count >= 2,
      );

      let second;
      try {
        second = server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body: { input: { text: echo } } });
        // The start's statement waits for the ending's transaction.
        await untilWaitingForLock('with "inserted_run" as ');
      } finally {
        commit();
      }
      const started = await second;
      expect(started.status).toBe(201);
      expect((await server.waitForRun(firstId)).status).toBe('aborted');
      const echoed = await echoedBy(started.body.run.id);
      // The stopped run's answer is part of the history: three messages, not the two a stale read would give.
      expect(echoed.messages).toBe(3);
      expect(readsOf(chatId)).toBe(1);
    },
  );
});
