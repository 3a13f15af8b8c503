import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createOutrunClient,
  type ConnectionState,
  type OutrunClient,
  type RunStreamEvent,
} from '../../src/client/index.ts';
import { STORE_KINDS } from '../support/databases.ts';
import { script, scriptedText } from '../support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from '../support/test-server.ts';

function textOf(events: RunStreamEvent[]): string {
  return events.map(({ chunk }) => (chunk.type === 'text-delta' ? chunk.delta : '')).join('');
}

function expectDense(events: RunStreamEvent[], from = 1): void {
  expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + from));
}

async function collect(iterable: AsyncIterable<RunStreamEvent>, onEvent?: (event: RunStreamEvent) => void) {
  const events: RunStreamEvent[] = [];
  for await (const event of iterable) {
    events.push(event);
    onEvent?.(event);
  }
  return events;
}

describe.each(STORE_KINDS)('client followRun on %s', (kind) => {
  let server: TestServer;
  let client: OutrunClient;

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { keepAliveMs: 100 } });
    client = createOutrunClient({ baseUrl: server.url, apiKey: ADMIN_KEY });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('follows a run from its first event to the end, each sequence number once', async () => {
    const chat = await client.createChat({ title: 'follow' });
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 3, tokens: 6, delayMs: 5 }) },
    });
    const events = await collect(client.followRun(run.id));

    expectDense(events);
    expect(events[0]!.chunk).toMatchObject({ type: 'data-run' });
    expect(events.at(-1)!.chunk).toMatchObject({
      type: 'data-run',
      data: { status: 'succeeded', stepCount: 3 },
    });
    expect(textOf(events)).toBe(scriptedText(3, 6));
  });

  it('continues after a killed connection with no gap and no duplicate', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 3, tokens: 20, delayMs: 10 }) },
    });
    const states: ConnectionState[] = [];
    let killed = 0;
    const events = await collect(
      client.followRun(run.id, { minRetryDelayMs: 20, onConnectionChange: (state) => states.push(state) }),
      (event) => {
        // Cut every open socket of the server twice mid-stream, as a network drop would.
        if ((event.seq === 15 && killed === 0) || (event.seq === 40 && killed === 1)) {
          killed++;
          server.outrun.server.server.closeAllConnections();
        }
      },
    );

    expect(killed).toBe(2);
    expect(states.filter((state) => state.status === 'reconnecting').length).toBeGreaterThanOrEqual(2);
    expectDense(events);
    expect(textOf(events)).toBe(scriptedText(3, 20));
    expect(events.at(-1)!.chunk).toMatchObject({ type: 'data-run', data: { status: 'succeeded' } });
  });

  it('resumes from `after`: the first event is after + 1, and nothing past the end of a finished run', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, { input: { text: script({ steps: 2, tokens: 4 }) } });
    const all = await collect(client.followRun(run.id));
    const rest = await collect(client.followRun(run.id, { after: 7 }));
    expect(rest[0]!.seq).toBe(8);
    expect(rest).toEqual(all.slice(7));
    expect(await collect(client.followRun(run.id, { after: all.length }))).toEqual([]);
  });

  it('stays connected through a quiet stretch while keep-alives arrive', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 1, tokens: 3, delayMs: 1500 }) },
    });
    const states: ConnectionState[] = [];
    const events = await collect(
      client.followRun(run.id, { idleTimeoutMs: 1000, onConnectionChange: (state) => states.push(state) }),
    );
    expect(states.filter((state) => state.status === 'reconnecting')).toEqual([]);
    expect(textOf(events)).toBe(scriptedText(1, 3));
  });

  it('reconnects when the stream goes silent past the idle timeout, without duplicates', async () => {
    const quiet = await startTestServer(kind, { config: { keepAliveMs: 60_000 } });
    try {
      const quietClient = createOutrunClient({ baseUrl: quiet.url, apiKey: ADMIN_KEY });
      const chat = await quietClient.createChat();
      const run = await quietClient.startRun(chat.id, {
        input: { text: script({ steps: 1, tokens: 3, delayMs: 700 }) },
      });
      const states: ConnectionState[] = [];
      const events = await collect(
        quietClient.followRun(run.id, {
          idleTimeoutMs: 250,
          minRetryDelayMs: 10,
          onConnectionChange: (state) => states.push(state),
        }),
      );
      const reconnects = states.filter((state) => state.status === 'reconnecting');
      expect(reconnects.length).toBeGreaterThan(0);
      expect(reconnects[0]).toMatchObject({ error: { name: 'IdleTimeoutError' } });
      expectDense(events);
      expect(textOf(events)).toBe(scriptedText(1, 3));
    } finally {
      await quiet.close();
    }
  });

  it('ends quietly when its signal aborts, and shows a stopped run ending with abort', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 3, tokens: 50, delayMs: 20 }) },
    });
    const controller = new AbortController();
    const first = await collect(client.followRun(run.id, { signal: controller.signal }), (event) => {
      if (event.seq === 10) controller.abort();
    });
    expect(first.map((event) => event.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    const stop = await client.stopRun(run.id);
    expect(stop.stopped).toBe(true);
    const rest = await collect(client.followRun(run.id, { after: 10 }));
    expectDense(rest, 11);
    expect(rest.map((event) => event.chunk.type)).toContain('abort');
    expect(rest.at(-1)!.chunk).toMatchObject({
      type: 'data-run',
      data: { status: 'aborted', error: { code: 'stopped' } },
    });
  });

  it('throws OutrunApiError for answers a retry cannot fix', async () => {
    const missing = 'run_0000000000000000ffffffffffffffff';
    await expect(collect(client.followRun(missing))).rejects.toMatchObject({
      name: 'OutrunApiError',
      status: 404,
      code: 'run_not_found',
    });
    const stranger = createOutrunClient({ baseUrl: server.url, apiKey: 'not-a-valid-key-at-all' });
    await expect(stranger.listChats()).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
  });
});

describe('client API calls', () => {
  let server: TestServer;
  let client: OutrunClient;

  beforeAll(async () => {
    server = await startTestServer('pglite');
    client = createOutrunClient({ baseUrl: `${server.url}/`, apiKey: () => ADMIN_KEY });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('creates, lists, renames and deletes chats, newest first', async () => {
    const first = await client.createChat({ title: 'first' });
    const second = await client.createChat();
    expect(second.title).toBe('New chat');
    const page = await client.listChats({ limit: 2 });
    expect(page.items.map((chat) => chat.id)).toEqual([second.id, first.id]);
    expect((await client.renameChat(first.id, 'renamed')).title).toBe('renamed');
    expect((await client.getChat(first.id)).title).toBe('renamed');
    await client.deleteChat(second.id);
    await expect(client.getChat(second.id)).rejects.toMatchObject({ status: 404, code: 'chat_not_found' });
  });

  it('answers a second start with 409 run_already_active carrying the active run id', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 1, tokens: 20, delayMs: 50 }) },
    });
    const error = await client
      .startRun(chat.id, { input: { text: 'again' } })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({
      name: 'OutrunApiError',
      status: 409,
      code: 'run_already_active',
      runId: run.id,
    });

    const latest = await client.latestRun(chat.id);
    expect(latest.run?.id).toBe(run.id);
    expect(latest.message?.id).toBe(run.assistantMessageId);
    const stopped = await client.stopChat(chat.id);
    expect(stopped.stopped).toBe(true);
    const settled = await server.waitForRun(run.id);
    expect(settled.status).toBe('aborted');
    expect((await client.getRun(run.id)).status).toBe('aborted');
    expect((await client.listRuns(chat.id)).items.map((item) => item.id)).toEqual([run.id]);
  });

  it('lists messages and the finished steps of a run with their timings and usage', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, { input: { text: script({ steps: 2, tokens: 3 }) } });
    await server.waitForRun(run.id);
    const messages = await client.allMessages(chat.id);
    expect(messages.map((message) => message.role)).toEqual(['user', 'assistant']);
    const steps = await client.listRunSteps(run.id);
    expect(steps.map((step) => step.step)).toEqual([1, 2]);
    expect(steps[0]!.parts.map((part) => part.type)).toEqual(['step-start', 'text', 'tool-echo']);
    expect(Date.parse(steps[0]!.finishedAt)).toBeGreaterThanOrEqual(Date.parse(steps[0]!.startedAt));
    expect(steps[1]!.usage?.outputTokens).toBeGreaterThan(0);

    const otherKey = await server.createUser('steps-stranger@example.com');
    const other = createOutrunClient({ baseUrl: server.url, apiKey: otherKey });
    await expect(other.listRunSteps(run.id)).rejects.toMatchObject({ status: 404, code: 'run_not_found' });
  });

  it('reports an unreachable server as a network_error with status 0', async () => {
    const offline = createOutrunClient({ baseUrl: 'http://127.0.0.1:9', apiKey: ADMIN_KEY });
    await expect(offline.me()).rejects.toMatchObject({ status: 0, code: 'network_error', retryable: true });
  });
});
