import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { MemoryBus } from '../src/bus/memory-bus.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, scriptedText, streamedText, script } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

describe.each(STORE_KINDS)('run stream on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { keepAliveMs: 200 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('streams a whole run with dense sequence numbers, data-run first and last, then [DONE]', async () => {
    const chatId = await server.createChat();
    const response = await server.fetch(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
      body: JSON.stringify({ input: { text: script({ steps: 3, tokens: 4 }) } }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const stream = await collectStream(response);

    expect(stream.done).toBe(true);
    expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
    expect(stream.events[0]!.chunk).toMatchObject({ type: 'data-run', data: { status: 'pending' } });
    expect(stream.events.at(-1)!.chunk).toMatchObject({
      type: 'data-run',
      data: { status: 'succeeded', stepCount: 3 },
    });
    expect(streamedText(stream.events)).toBe(scriptedText(3, 4));
    const tools = stream.events.filter((event) => event.chunk.type === 'tool-output-available');
    expect(tools.map((event) => event.chunk.output)).toEqual([{ step: 1 }, { step: 2 }]);
  });

  it('follows a streaming start from its first event without reading the log, on both start endpoints', async () => {
    const read = vi.spyOn(server.outrun.log, 'read');
    try {
      const chatId = await server.createChat();
      const response = await server.fetch(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
        body: JSON.stringify({ input: { text: script({ steps: 2, tokens: 3 }) } }),
      });
      const runId = response.headers.get('x-outrun-run-id');
      const stream = await collectStream(response);
      expect(stream.done).toBe(true);
      expect(stream.events.map((event) => event.seq)).toEqual(stream.events.map((_, index) => index + 1));
      expect(stream.events[0]!.chunk).toMatchObject({ type: 'data-run', data: { id: runId } });
      expect(streamedText(stream.events)).toBe(scriptedText(2, 3));

      const useChat = await server.fetch('/v1/ui/chats', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          id: await server.createChat(),
          messages: [
            { id: 'u1', role: 'user', parts: [{ type: 'text', text: script({ steps: 1, tokens: 2 }) }] },
          ],
        }),
      });
      expect(useChat.status).toBe(200);
      const useChatRunId = useChat.headers.get('x-outrun-run-id');
      const answer = await collectStream(useChat);
      expect(answer.done).toBe(true);
      expect(streamedText(answer.events)).toBe(scriptedText(1, 2));
      // No stream read the log first (a keep-alive, every 200 ms here, re-reads after the last event seen).
      const firstReads = read.mock.calls.filter(
        ([options]) => (options.runId === runId || options.runId === useChatRunId) && options.after === 0,
      );
      expect(firstReads).toEqual([]);
    } finally {
      read.mockRestore();
    }
  });

  it('answers a streaming start the chat refuses with 409 and keeps no subscription for it', async () => {
    const bus = server.outrun.bus as MemoryBus;
    const chatId = await server.createChat();
    const first = await server.startRun(chatId, { steps: 1, tokens: 50, delayMs: 20 });
    const before = bus.channelCount();
    const refused = await server.fetch(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
      body: JSON.stringify({ input: { text: script({ steps: 1, tokens: 1 }) } }),
    });
    expect(refused.status).toBe(409);
    expect((await refused.json()).error.code).toBe('run_already_active');
    await expect.poll(() => bus.channelCount()).toBe(before);
    await server.waitForRun(first.id);
  });

  it('keeps the assistant message equal to the streamed text, with every step recorded', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 3, tokens: 5 });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'succeeded', stepCount: 3, error: null });
    expect(settled.usage?.outputTokens).toBeGreaterThan(0);

    const messages = await server.api(`/v1/chats/${chatId}/messages`);
    expect(messages.body.items.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant']);
    const assistant = messages.body.items[1];
    expect(assistant).toMatchObject({ status: 'completed', runId: run.id, id: run.assistantMessageId });
    const text = assistant.parts
      .filter((part: { type: string }) => part.type === 'text')
      .map((part: { text: string }) => part.text)
      .join('');
    expect(text).toBe(scriptedText(3, 5));
    expect(assistant.parts.filter((part: { type: string }) => part.type === 'step-start')).toHaveLength(3);
    expect(assistant.parts.filter((part: { type: string }) => part.type === 'tool-echo')).toHaveLength(2);

    const steps = await server.outrun.db
      .selectFrom('run_steps')
      .selectAll()
      .where('run_id', '=', run.id)
      .execute();
    expect(steps.map((step) => step.step)).toEqual([1, 2, 3]);
  });

  it('holds every finished step in the message while the run streams, and streamSeq continues it exactly', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 4, tokens: 10, delayMs: 15 });
    await server.waitForRun(run.id, (r) => r.stepCount >= 2);

    const snapshot = (await server.api(`/v1/chats/${chatId}/messages`)).body.items[1];
    expect(snapshot.status).toBe('streaming');
    const stepsShown = snapshot.parts.filter((part: { type: string }) => part.type === 'step-start').length;
    expect(stepsShown).toBeGreaterThanOrEqual(2);
    const shownText = snapshot.parts
      .filter((part: { type: string }) => part.type === 'text')
      .map((part: { text: string }) => part.text)
      .join('');
    expect(shownText).toBe(scriptedText(stepsShown, 10));

    // What the snapshot shows plus the stream after streamSeq is the whole answer, once.
    const rest = await collectStream(
      await server.fetch(`/v1/runs/${run.id}/stream?after=${snapshot.streamSeq}`),
    );
    expect(rest.events[0]!.seq).toBe(snapshot.streamSeq + 1);
    expect(shownText + streamedText(rest.events)).toBe(scriptedText(4, 10));
  });

  it('keeps running and persisting after the reader disconnects mid-stream', async () => {
    const chatId = await server.createChat();
    const response = await server.fetch(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', 'content-type': 'application/json' },
      body: JSON.stringify({ input: { text: script({ steps: 2, tokens: 10, delayMs: 15 }) } }),
    });
    const runId = response.headers.get('x-outrun-run-id')!;
    const partial = await collectStream(response, { stopAfter: 6 });
    expect(partial.done).toBe(false);

    const settled = await server.waitForRun(runId);
    expect(settled.status).toBe('succeeded');
    const replay = await collectStream(await server.fetch(`/v1/runs/${runId}/stream`));
    expect(replay.done).toBe(true);
    expect(streamedText(replay.events)).toBe(scriptedText(2, 10));
    expect(replay.events.slice(0, 6)).toEqual(partial.events);
  });

  it('resumes after event N with N+1, with no gap or duplicate, while live and after the end', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 2, tokens: 30, delayMs: 10 });

    // Live: read a few events, drop the connection, resume with Last-Event-ID, repeat.
    const seen: number[] = [];
    const chunks: string[] = [];
    let after = 0;
    for (let round = 0; round < 50; round++) {
      const response = await server.fetch(`/v1/runs/${run.id}/stream`, {
        headers: after ? { 'last-event-id': String(after) } : {},
      });
      const part = await collectStream(response, { stopAfter: 7 });
      for (const event of part.events) {
        seen.push(event.seq);
        chunks.push(JSON.stringify(event.chunk));
      }
      after = part.events.at(-1)?.seq ?? after;
      if (part.done) break;
    }
    expect(seen).toEqual(seen.map((_, index) => index + 1));
    const whole = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(whole.events.map((event) => JSON.stringify(event.chunk))).toEqual(chunks);

    // After the end: any N resumes at N+1 and ends with [DONE].
    for (const n of [1, 17, whole.events.length - 1]) {
      const resumed = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream?after=${n}`));
      expect(resumed.events.map((event) => event.seq)).toEqual(
        whole.events.slice(n).map((event) => event.seq),
      );
      expect(resumed.done).toBe(true);
    }
  });

  it('prefers Last-Event-ID over ?after= and answers just [DONE] past the end of a finished run', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 3 });
    await server.waitForRun(run.id);

    const both = await collectStream(
      await server.fetch(`/v1/runs/${run.id}/stream?after=1`, { headers: { 'last-event-id': '4' } }),
    );
    expect(both.events[0]!.seq).toBe(5);

    const past = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream?after=1000`));
    expect(past).toMatchObject({ events: [], done: true });
  });

  it("reads a resume's first page and checks the reader's ownership in one statement", async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 3 });
    await server.waitForRun(run.id);
    const owned = vi.spyOn(server.outrun.runs, 'readOwned');
    const getForOwner = vi.spyOn(server.outrun.runs, 'getForOwner');
    const read = vi.spyOn(server.outrun.log, 'read');
    try {
      const resumed = await collectStream(
        await server.fetch(`/v1/runs/${run.id}/stream`, { headers: { 'last-event-id': '2' } }),
      );
      expect(resumed.done).toBe(true);
      expect(resumed.events[0]!.seq).toBe(3);
      expect(resumed.events.at(-1)!.chunk).toMatchObject({ type: 'data-run', data: { status: 'succeeded' } });
      expect(owned).toHaveBeenCalledTimes(1);
      expect(owned.mock.calls[0]![0]).toMatchObject({ runId: run.id, after: 2, limit: 100 });
      expect(getForOwner).not.toHaveBeenCalled();
      expect(read).not.toHaveBeenCalled();
    } finally {
      owned.mockRestore();
      getForOwner.mockRestore();
      read.mockRestore();
    }
  });

  it("keeps each shape of a resume's statement to its own conditions (a key to check, a chat to keep to)", async () => {
    const chatId = await server.createChat();
    const otherChat = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 3 });
    await server.waitForRun(run.id);
    const chat = await server.outrun.db
      .selectFrom('chats')
      .select(['workspace_id', 'owner_id'])
      .where('id', '=', chatId)
      .executeTakeFirstOrThrow();
    const owner = {
      runId: run.id,
      workspaceId: chat.workspace_id,
      userId: chat.owner_id,
      after: 0,
      limit: 100,
    };
    const seen = async (extra: { keyId?: string; chatId?: string }) =>
      (await server.outrun.runs.readOwned({ ...owner, ...extra }))?.events.length;
    // Each shape twice, interleaved: a statement compiled for one shape never answers for another.
    for (let round = 0; round < 2; round++) {
      expect(await seen({})).toBeGreaterThan(3);
      expect(await seen({ keyId: 'key_that_does_not_exist' })).toBeUndefined();
      expect(await seen({ chatId: otherChat })).toBeUndefined();
      expect(await seen({ chatId })).toBeGreaterThan(3);
      expect(await seen({ keyId: 'key_that_does_not_exist', chatId })).toBeUndefined();
    }
    expect(await server.outrun.runs.readOwned({ ...owner, userId: 'usr_someone_else' })).toBeUndefined();
    // useChat's resume statement: with a key to check or without.
    const chatOwner = { chatId, workspaceId: chat.workspace_id, userId: chat.owner_id, firstPage: 100 };
    for (let round = 0; round < 2; round++) {
      expect(await server.outrun.runs.activeOfOwnedChat(chatOwner)).toEqual({
        agentId: null,
        run: undefined,
      });
      const keyed = { ...chatOwner, keyId: 'key_that_does_not_exist' };
      expect(await server.outrun.runs.activeOfOwnedChat(keyed)).toBeUndefined();
    }
  });

  it("looks up useChat's resume in one statement: the chat's ownership, its active run, its last event and the first page", async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 40, delayMs: 20 });
    await vi.waitFor(async () => expect(await server.outrun.log.lastSeq(run.id)).toBeGreaterThanOrEqual(5));
    const lookUp = vi.spyOn(server.outrun.runs, 'activeOfOwnedChat');
    const read = vi.spyOn(server.outrun.log, 'read');
    const others = [
      vi.spyOn(server.outrun.runs, 'findActive'),
      vi.spyOn(server.outrun.chats, 'getRow'),
      vi.spyOn(server.outrun.log, 'lastSeq'),
    ];
    try {
      const response = await server.fetch(`/v1/ui/chats/${chatId}/stream`);
      expect(response.status).toBe(200);
      expect(response.headers.get('x-outrun-run-id')).toBe(run.id);
      const stream = await collectStream(response, { stopAfter: 3 });
      // Replayed from the run's first event: useChat rebuilds its message from `start`.
      expect(stream.events[0]!.seq).toBe(1);
      expect(lookUp).toHaveBeenCalledTimes(1);
      for (const other of others) expect(other).not.toHaveBeenCalled();
      // The log is read only past the first page (once subscribed), never from the start.
      expect(read.mock.calls.every(([page]) => page.after >= 5)).toBe(true);
    } finally {
      read.mockRestore();
      lookUp.mockRestore();
      for (const other of others) other.mockRestore();
    }
    await server.waitForRun(run.id);
    // The chat has no active run now.
    expect((await server.fetch(`/v1/ui/chats/${chatId}/stream`)).status).toBe(204);
  });

  it('serves any number of readers the same sequence', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 2, tokens: 20, delayMs: 5 });
    const readers = await Promise.all(
      Array.from({ length: 12 }, () =>
        server.fetch(`/v1/runs/${run.id}/stream`).then((r) => collectStream(r)),
      ),
    );
    const first = JSON.stringify(readers[0]!.events);
    for (const reader of readers) {
      expect(reader.done).toBe(true);
      expect(JSON.stringify(reader.events)).toBe(first);
    }
  });

  it('writes every live reader byte for byte what a replay of the finished run writes', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 2, tokens: 15, delayMs: 5 });
    // Live readers share each event's frame; the replay frames the events it reads itself.
    const withoutPings = (text: string) => text.replace(/^: ping \d+\n\n/gm, '');
    const live = await Promise.all(
      Array.from({ length: 5 }, () => server.fetch(`/v1/runs/${run.id}/stream`).then((r) => r.text())),
    );
    const replay = await (await server.fetch(`/v1/runs/${run.id}/stream`)).text();
    expect(replay).toMatch(/^id: 1\ndata: \{"type":"data-run",.*\}\n\nid: 2\ndata: /);
    expect(replay.endsWith('}\n\ndata: [DONE]\n\n')).toBe(true);
    for (const text of live) expect(withoutPings(text)).toBe(replay);
    // A reader that joins mid-run gets the same bytes from where it joined.
    const resumed = await (
      await server.fetch(`/v1/runs/${run.id}/stream`, { headers: { 'last-event-id': '9' } })
    ).text();
    expect(resumed).toBe(replay.slice(replay.indexOf('id: 10\n')));
  });

  it('sends keep-alive comments with the last durable sequence number while a run is idle', async () => {
    const chatId = await server.createChat();
    // Tokens 600 ms apart, keep-alive every 200 ms: the reader sees pings between deltas.
    const run = await server.startRun(chatId, { steps: 1, tokens: 2, delayMs: 600 });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const pings = stream.comments.filter((comment) => comment.startsWith('ping '));
    expect(pings.length).toBeGreaterThan(0);
    const lastSeq = Math.max(...stream.events.map((event) => event.seq));
    for (const ping of pings) expect(Number(ping.slice(5))).toBeLessThanOrEqual(lastSeq);
  });

  it("names in a keep-alive no sequence number past the log's end, for a reader resumed past it", async () => {
    const chatId = await server.createChat();
    // Tokens 400 ms apart, keep-alive every 200 ms: the reader, ahead of the log, gets pings while the run goes on.
    const run = await server.startRun(chatId, { steps: 1, tokens: 3, delayMs: 400 });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream?after=1000`));
    expect(stream).toMatchObject({ events: [], done: true });
    const pings = stream.comments
      .filter((comment) => comment.startsWith('ping '))
      .map((ping) => Number(ping.slice(5)));
    expect(pings.length).toBeGreaterThan(0);
    const lastSeq = await server.outrun.log.lastSeq(run.id);
    for (const ping of pings) {
      expect(ping).toBeGreaterThan(0);
      expect(ping).toBeLessThanOrEqual(lastSeq);
    }
  });

  it('ends a failing model step as failed with its reason, keeping the steps before it', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 3, tokens: 3, failAtStep: 2 });
    const settled = await server.waitForRun(run.id);
    expect(settled.status).toBe('failed');
    expect(settled.error).toMatchObject({ code: 'model_error' });

    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(streamedText(stream.events)).toBe(scriptedText(1, 3));
    // A failed run's stream ends `error` (the model's own message), then the terminal `data-run`.
    expect(stream.events.slice(-2).map((event) => event.chunk.type)).toEqual(['error', 'data-run']);
    expect(stream.events.at(-2)!.chunk.errorText).toBe(settled.error!.message);
    expect(stream.events.at(-1)!.chunk).toMatchObject({ type: 'data-run', data: { status: 'failed' } });
    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    expect(latest.body.message.status).toBe('error');
  });

  it('ends a run succeeded when the model called a tool the run does not have and went on after the tool error', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 2, tokens: 1, tool: 'nope' });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'succeeded', stepCount: 2, error: null });

    // The SDK told the model the tool is unavailable, as the call's result; the stream shows it so.
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    const types = stream.events.map((event) => event.chunk.type);
    expect(types).not.toContain('error');
    const toolError = stream.events.find((event) =>
      ['tool-input-error', 'tool-output-error'].includes(event.chunk.type),
    );
    expect(toolError?.chunk.errorText).toContain('nope');
    expect(streamedText(stream.events)).toBe(scriptedText(2, 1));
    expect(stream.events.at(-1)!.chunk).toMatchObject({ type: 'data-run', data: { status: 'succeeded' } });
    const latest = await server.api(`/v1/chats/${chatId}/runs/latest`);
    expect(latest.body.message.status).toBe('completed');
    expect(latest.body.message.parts).toContainEqual(
      expect.objectContaining({ type: 'tool-nope', state: 'output-error' }),
    );
  });

  it('ends a run succeeded when its agent has no echo tool and the script calls it', async () => {
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'no echo', tools: [{ name: 'current_time' }] },
    });
    expect(agent.status).toBe(201);
    const chat = await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
    const chatId = chat.body.chat.id as string;
    const run = await server.startRun(chatId, { steps: 2, tokens: 2 });
    const settled = await server.waitForRun(run.id);
    expect(settled).toMatchObject({ status: 'succeeded', stepCount: 2, error: null });
    const stream = await collectStream(await server.fetch(`/v1/runs/${run.id}/stream`));
    expect(stream.events.some((event) => event.chunk.type === 'error')).toBe(false);
  });

  describe('with a keep-alive longer than any run here', () => {
    let quiet: TestServer;

    beforeAll(async () => {
      // Ten minutes: a stream that ends here was ended by its run's end, not by the re-read after a keep-alive.
      quiet = await startTestServer(kind, { config: { keepAliveMs: 600_000 } });
    });
    afterAll(async () => {
      await quiet?.close();
    });

    /**
     * Follows `runId` from `cursor` (with `?after=` or `Last-Event-ID`) once `ended` resolves: what the reader got
     * by the time the stream closed, or `'still open'` if it had not closed a few seconds after the run's end.
     */
    async function readAhead(
      runId: string,
      cursor: { after?: number; lastEventId?: number },
      ended: () => Promise<unknown>,
    ) {
      const controller = new AbortController();
      const query = cursor.after === undefined ? '' : `?after=${cursor.after}`;
      const headers: Record<string, string> =
        cursor.lastEventId === undefined ? {} : { 'last-event-id': String(cursor.lastEventId) };
      const response = await quiet.fetch(`/v1/runs/${runId}/stream${query}`, {
        headers,
        signal: controller.signal,
      });
      expect(response.status).toBe(200);
      // The reader is in before the run ends: its cursor is ahead of a live log.
      const current = await quiet.api(`/v1/runs/${runId}`);
      expect(['pending', 'running', 'waiting']).toContain(current.body.run.status);
      const reading = collectStream(response).catch(() => 'still open' as const);
      await ended();
      const giveUp = setTimeout(() => controller.abort(), 5_000);
      try {
        return await reading;
      } finally {
        clearTimeout(giveUp);
      }
    }

    it('ends a reader resumed past the end of a running run with just [DONE] when the run ends', async () => {
      const chatId = await quiet.createChat();
      const run = await quiet.startRun(chatId, { tokens: 20, delayMs: 100 });
      const stream = await readAhead(run.id, { lastEventId: 1000 }, () => quiet.waitForRun(run.id));
      expect(stream).toEqual({ events: [], done: true, comments: [] });
    });

    it('ends a reader resumed past the end of a waiting run with just [DONE] when the answered run ends', async () => {
      const agent = await quiet.api('/v1/agents', {
        method: 'POST',
        body: { name: 'careful', tools: [{ name: 'echo', needsApproval: true }] },
      });
      const chat = await quiet.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } });
      const run = await quiet.startRun(chat.body.chat.id as string, { steps: 2, tokens: 3, tool: true });
      const waiting = await quiet.waitForRun(run.id, (current) => current.status === 'waiting');
      const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!
        .approvalId;
      const stream = await readAhead(run.id, { after: 1000 }, async () => {
        const answered = await quiet.api(`/v1/runs/${run.id}/approvals`, {
          method: 'POST',
          body: { approvalId, approved: true },
        });
        expect(answered.status).toBe(200);
        expect(await quiet.waitForRun(run.id)).toMatchObject({ status: 'succeeded' });
      });
      // The approval, the resumed step and the terminal event all went by behind the reader's cursor.
      expect(stream).toEqual({ events: [], done: true, comments: [] });
    });
  });
});
