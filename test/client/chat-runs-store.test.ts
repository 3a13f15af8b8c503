import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutrunClient, type Message, type OutrunClient } from '../../src/client/index.ts';
import type { RunObject } from '../../src/protocol/index.ts';
import { ChatRunsStore, type ChatRunsSnapshot } from '../../src/react/chat-runs-store.ts';
import { script, scriptedText } from '../support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from '../support/test-server.ts';
import { waitUntil } from '../support/wait.ts';

function assistantText(messages: Message[]): string {
  const assistant = messages.filter((message) => message.role === 'assistant').at(-1);
  return (assistant?.parts ?? []).map((part) => (part.type === 'text' ? part.text : '')).join('');
}

/** Records every snapshot a store publishes. */
function record(store: ChatRunsStore): ChatRunsSnapshot[] {
  const snapshots: ChatRunsSnapshot[] = [];
  store.subscribe(() => snapshots.push(store.getSnapshot()));
  return snapshots;
}

describe('ChatRunsStore (the state behind useChatRuns)', () => {
  let server: TestServer;
  let client: OutrunClient;
  const streamRequests: Array<{ url: string; lastEventId: string | null }> = [];

  beforeAll(async () => {
    server = await startTestServer('pglite', { config: { keepAliveMs: 200 } });
    client = createOutrunClient({
      baseUrl: server.url,
      apiKey: ADMIN_KEY,
      fetch: (input, init) => {
        const url = String(input);
        if (url.includes('/stream')) {
          streamRequests.push({ url, lastEventId: new Headers(init?.headers).get('last-event-id') });
        }
        return fetch(input, init);
      },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('reopens a chat mid-run and continues from the snapshot without showing any text twice', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 3, tokens: 30, delayMs: 15 }) },
    });
    await server.waitForRun(run.id, (current) => current.stepCount >= 1);
    streamRequests.length = 0;

    const store = new ChatRunsStore({ client, chatId: chat.id, pollIntervalMs: 0, throttleMs: 0 });
    const snapshots = record(store);
    store.start();
    await waitUntil(
      () => store.getSnapshot().run?.status === 'succeeded' && store.getSnapshot().status === 'ready',
    );
    store.dispose();

    const expected = scriptedText(3, 30);
    // Each rendered text is a prefix of the answer: a duplicate or a gap would break that.
    for (const snapshot of snapshots)
      expect(expected.startsWith(assistantText(snapshot.messages))).toBe(true);
    expect(snapshots.some((snapshot) => snapshot.status === 'streaming')).toBe(true);
    expect(assistantText(store.getSnapshot().messages)).toBe(expected);
    // It followed from where the loaded snapshot ended, not from the start.
    expect(Number(streamRequests[0]?.lastEventId)).toBeGreaterThan(0);
  });

  it('shows the same thing in the tab that sent the message and in a tab that only watches', async () => {
    const chat = await client.createChat();
    const starter = new ChatRunsStore({ client, chatId: chat.id, pollIntervalMs: 0, throttleMs: 0 });
    const observer = new ChatRunsStore({ client, chatId: chat.id, pollIntervalMs: 50, throttleMs: 0 });
    const starterSnapshots = record(starter);
    const observerSnapshots = record(observer);
    starter.start();
    observer.start();
    await waitUntil(
      () => starter.getSnapshot().status === 'ready' && observer.getSnapshot().status === 'ready',
    );

    expect(await starter.send(script({ steps: 2, tokens: 20, delayMs: 15 }))).toBe(true);
    await waitUntil(() => observer.getSnapshot().status === 'streaming');
    await waitUntil(
      () =>
        starter.getSnapshot().run?.status === 'succeeded' &&
        observer.getSnapshot().run?.status === 'succeeded',
    );
    await waitUntil(
      () => starter.getSnapshot().status === 'ready' && observer.getSnapshot().status === 'ready',
    );
    starter.dispose();
    observer.dispose();

    const expected = scriptedText(2, 20);
    for (const snapshot of [...starterSnapshots, ...observerSnapshots]) {
      expect(expected.startsWith(assistantText(snapshot.messages))).toBe(true);
    }
    expect(starter.getSnapshot().messages).toEqual(observer.getSnapshot().messages);
    expect(assistantText(observer.getSnapshot().messages)).toBe(expected);
    expect(observer.getSnapshot().messages.map((message) => message.role)).toEqual(['user', 'assistant']);
  });

  it('answers a send during an active run with run_already_active, follows that run, and stops it', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 3, tokens: 100, delayMs: 20 }) },
    });
    const store = new ChatRunsStore({ client, chatId: chat.id, pollIntervalMs: 0, throttleMs: 0 });
    store.start();
    expect(await store.send('hello')).toBe(false);
    expect(store.getSnapshot().error).toMatchObject({
      status: 409,
      code: 'run_already_active',
      runId: run.id,
    });
    // Followed, and some of its text arrived: what the stop keeps.
    await waitUntil(
      () =>
        store.getSnapshot().status === 'streaming' && assistantText(store.getSnapshot().messages).length > 0,
    );

    await store.stop(run.id);
    expect(store.getSnapshot().error).toBeNull();
    await waitUntil(
      () => store.getSnapshot().run?.status === 'aborted' && store.getSnapshot().status === 'ready',
    );
    store.dispose();
    const snapshot = store.getSnapshot();
    expect(snapshot.run?.error?.code).toBe('stopped');
    expect(snapshot.isRunning).toBe(false);
    const text = assistantText(snapshot.messages);
    expect(text.length).toBeGreaterThan(0);
    expect(scriptedText(3, 100).startsWith(text)).toBe(true);
  });

  it('recovers by itself when the server was unreachable at load time', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, { input: { text: script({ steps: 1, tokens: 3 }) } });
    await server.waitForRun(run.id);
    let down = true;
    const flaky = createOutrunClient({
      baseUrl: server.url,
      apiKey: ADMIN_KEY,
      fetch: (input, init) => (down ? Promise.reject(new TypeError('fetch failed')) : fetch(input, init)),
    });
    const store = new ChatRunsStore({ client: flaky, chatId: chat.id, pollIntervalMs: 30 });
    store.start();
    await waitUntil(() => store.getSnapshot().error !== null);
    expect(store.getSnapshot()).toMatchObject({
      status: 'ready',
      messages: [],
      error: { code: 'network_error' },
    });
    down = false;
    await waitUntil(() => store.getSnapshot().messages.length === 2);
    expect(store.getSnapshot()).toMatchObject({ error: null, run: { id: run.id, status: 'succeeded' } });
    store.dispose();
  });

  it('never stays running after a send answered with a 5xx', async () => {
    const failing = createOutrunClient({
      baseUrl: server.url,
      apiKey: ADMIN_KEY,
      fetch: async (input, init) =>
        init?.method === 'POST' && String(input).endsWith('/runs')
          ? new Response(JSON.stringify({ error: { code: 'internal_error', message: 'boom' } }), {
              status: 503,
            })
          : fetch(input, init),
    });
    const chat = await failing.createChat();
    const store = new ChatRunsStore({ client: failing, chatId: chat.id, pollIntervalMs: 0 });
    store.start();
    await waitUntil(() => store.getSnapshot().status === 'ready');
    expect(await store.send('hi')).toBe(false);
    expect(store.getSnapshot()).toMatchObject({ status: 'ready', isRunning: false, error: { status: 503 } });
    store.dispose();
  });

  it('retries a stop that cannot reach the server until it lands, without leaving an error', async () => {
    let failStops = 2;
    const flaky = createOutrunClient({
      baseUrl: server.url,
      apiKey: ADMIN_KEY,
      fetch: (input, init) => {
        if (String(input).endsWith('/stop') && failStops > 0) {
          failStops--;
          return Promise.reject(new TypeError('fetch failed'));
        }
        return fetch(input, init);
      },
    });
    const chat = await flaky.createChat();
    const store = new ChatRunsStore({ client: flaky, chatId: chat.id, pollIntervalMs: 0, throttleMs: 0 });
    const snapshots = record(store);
    store.start();
    await waitUntil(() => store.getSnapshot().status === 'ready');
    expect(await store.send(script({ steps: 1, tokens: 400, delayMs: 20 }))).toBe(true);
    await waitUntil(() => store.getSnapshot().isRunning);
    await store.stop();
    await waitUntil(
      () => store.getSnapshot().run?.status === 'aborted' && store.getSnapshot().status === 'ready',
    );
    store.dispose();
    expect(failStops).toBe(0);
    expect(snapshots.some((snapshot) => snapshot.isStopRetrying)).toBe(true);
    expect(store.getSnapshot().error).toBeNull();
    expect(store.getSnapshot().isStopRetrying).toBe(false);
  });

  it('queues a message sent during a run and follows it when the run before it ends', async () => {
    const chat = await client.createChat();
    const store = new ChatRunsStore({ client, chatId: chat.id, pollIntervalMs: 0, throttleMs: 0 });
    store.start();
    await waitUntil(() => store.getSnapshot().status === 'ready');
    await store.send(script({ steps: 1, tokens: 40, delayMs: 20 }), { multitask: 'enqueue' });
    await waitUntil(() => store.getSnapshot().isRunning);
    await store.send(script({ steps: 1, tokens: 3 }), { multitask: 'enqueue' });
    expect(store.getSnapshot().queued).toHaveLength(1);
    expect(store.getSnapshot().messages.at(-1)?.status).toBe('queued');
    await waitUntil(
      () =>
        store.getSnapshot().queued.length === 0 &&
        store.getSnapshot().status === 'ready' &&
        assistantText(store.getSnapshot().messages) === scriptedText(1, 3),
    );
    store.dispose();
    const statuses = store.getSnapshot().messages.map((message) => message.status);
    expect(statuses).toEqual(['completed', 'completed', 'completed', 'completed']);
  });
  /** A chat with an agent whose `echo` tool waits for approval, and a run of it waiting for the answer. */
  async function waitingForApproval(): Promise<{ chatId: string; run: RunObject; approvalId: string }> {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'asks first', tools: [{ name: 'echo', needsApproval: true }] },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    const run = await client.startRun(chatId, {
      input: { text: script({ steps: 2, tokens: 3, tool: true }) },
    });
    const waiting = await server.waitForRun(run.id, (current) => current.status === 'waiting');
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    return { chatId, run, approvalId };
  }

  it('follows a run reopened while it waits for an approval through the answer to its end', async () => {
    const { chatId, run, approvalId } = await waitingForApproval();

    // A page reload: a new store loads the waiting run's snapshot and follows it from there.
    const store = new ChatRunsStore({ client, chatId, pollIntervalMs: 0, throttleMs: 0 });
    const snapshots = record(store);
    store.start();
    await waitUntil(() => store.getSnapshot().status === 'streaming');
    const asking = store
      .getSnapshot()
      .messages.at(-1)!
      .parts.find((part) => part.type === 'tool-echo');
    expect(asking).toMatchObject({ state: 'approval-requested' });

    const answered = await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    expect(answered.status).toBe(200);
    await waitUntil(
      () => store.getSnapshot().run?.status === 'succeeded' && store.getSnapshot().status === 'ready',
    );
    store.dispose();

    const expected = scriptedText(2, 3);
    const stored = (await server.api(`/v1/chats/${chatId}/messages`)).body.items.at(-1) as Message;
    // The stream after the snapshot applied to it: the followed message reached the end before the final load.
    const followed = snapshots.filter((snapshot) => snapshot.status === 'streaming').at(-1)!;
    expect(assistantText(followed.messages)).toBe(expected);
    expect(followed.messages.at(-1)!.parts).toEqual(stored.parts);
    expect(assistantText(store.getSnapshot().messages)).toBe(expected);
    expect(store.getSnapshot().messages.at(-1)!.parts).toEqual(stored.parts);
    for (const snapshot of snapshots) {
      expect(expected.startsWith(assistantText(snapshot.messages))).toBe(true);
      expect(snapshot.error).toBeNull();
    }
  });

  it('reports a stream it cannot apply after one fresh load instead of retrying it forever', async () => {
    const { chatId, run, approvalId } = await waitingForApproval();
    let follows = 0;
    const broken: OutrunClient = {
      ...client,
      // A delta for a text part that never started: no projection can apply it.
      async *followRun() {
        follows++;
        yield { seq: 1_000_000, chunk: { type: 'text-delta', id: 'missing', delta: 'x' } } as never;
      },
    };
    const store = new ChatRunsStore({ client: broken, chatId, pollIntervalMs: 0, throttleMs: 0 });
    store.start();
    await waitUntil(() => store.getSnapshot().error !== null);
    expect(follows).toBe(2);
    expect(store.getSnapshot()).toMatchObject({
      status: 'ready',
      isRunning: true,
      error: { name: 'MalformedStreamError' },
    });
    // A later load shows the run's latest snapshot and keeps the error, without following it again.
    await store.sync();
    expect(follows).toBe(2);
    expect(store.getSnapshot().error).toMatchObject({ name: 'MalformedStreamError' });

    // Once the run ends, a load shows its final message and the error goes.
    await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    await server.waitForRun(run.id);
    await store.sync();
    store.dispose();
    expect(store.getSnapshot()).toMatchObject({ status: 'ready', error: null, run: { status: 'succeeded' } });
    expect(assistantText(store.getSnapshot().messages)).toBe(scriptedText(2, 3));
    expect(follows).toBe(2);
  });
});
