import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

describe.each(STORE_KINDS)('Idempotency-Key on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  const countRuns = async (chatId: string) =>
    Number(
      (
        await server.outrun.db
          .selectFrom('runs')
          .select((eb) => eb.fn.countAll<string>().as('count'))
          .where('chat_id', '=', chatId)
          .executeTakeFirstOrThrow()
      ).count,
    );

  it('makes exactly one run from ten concurrent starts with one key, and answers each with it', async () => {
    const chatId = await server.createChat();
    const body = { input: { text: script({ steps: 1, tokens: 3, delayMs: 20 }) } };
    const responses = await Promise.all(
      Array.from({ length: 10 }, () =>
        server.api(`/v1/chats/${chatId}/runs`, {
          method: 'POST',
          body,
          headers: { 'idempotency-key': 'start-once' },
        }),
      ),
    );
    expect(responses.map((response) => response.status)).toEqual(Array(10).fill(201));
    const runIds = new Set(responses.map((response) => response.body.run.id));
    expect(runIds.size).toBe(1);
    expect(await countRuns(chatId)).toBe(1);
    expect(
      responses.filter((response) => response.headers.get('idempotent-replayed') === 'true'),
    ).toHaveLength(9);
  });

  it('answers 422 idempotency_key_reused for the same key with a different body, and creates nothing', async () => {
    const chatId = await server.createChat();
    const first = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 1, tokens: 2 }) } },
      headers: { 'idempotency-key': 'reused-key' },
    });
    expect(first.status).toBe(201);
    await server.waitForRun(first.body.run.id);
    const second = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 2, tokens: 2 }) } },
      headers: { 'idempotency-key': 'reused-key' },
    });
    expect(second.status).toBe(422);
    expect(second.body.error.code).toBe('idempotency_key_reused');
    expect(await countRuns(chatId)).toBe(1);
  });

  it('replays the first response after the run finished, with the same body in any key order', async () => {
    const chatId = await server.createChat();
    const text = script({ steps: 1, tokens: 2 });
    const first = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      raw: JSON.stringify({ input: { text }, model: 'scripted' }),
      headers: { 'idempotency-key': 'replay-me' },
    });
    expect(first.status).toBe(201);
    const finished = await server.waitForRun(first.body.run.id);
    expect(finished.status).toBe('succeeded');
    const replay = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      raw: JSON.stringify({ model: 'scripted', input: { text } }),
      headers: { 'idempotency-key': 'replay-me' },
    });
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body).toEqual(first.body);
    expect(await countRuns(chatId)).toBe(1);
  });

  it('answers a retried streaming start with the first run’s stream from event 1, and a JSON retry with {run}', async () => {
    const chatId = await server.createChat();
    const body = JSON.stringify({ input: { text: script({ steps: 2, tokens: 2 }) } });
    const headers = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      'idempotency-key': 'streamed',
    };
    const streamed = await server.fetch(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    expect(streamed.status).toBe(200);
    const runId = streamed.headers.get('x-outrun-run-id');
    expect(runId).toMatch(/^run_/);
    const first = await collectStream(streamed);

    const retried = await server.fetch(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    expect(retried.status).toBe(200);
    expect(retried.headers.get('content-type')).toContain('text/event-stream');
    expect(retried.headers.get('x-outrun-run-id')).toBe(runId);
    expect(retried.headers.get('idempotent-replayed')).toBe('true');
    const replayed = await collectStream(retried);
    expect(replayed.done).toBe(true);
    const plain = await collectStream(await server.fetch(`/v1/runs/${runId}/stream`));
    expect(replayed.events).toEqual(plain.events);
    expect(replayed.events).toEqual(first.events);
    expect(replayed.events[0]!.seq).toBe(1);

    const { accept: _, ...jsonHeaders } = headers;
    const json = await server.fetch(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body,
      headers: jsonHeaders,
    });
    expect(json.status).toBe(201);
    expect(json.headers.get('content-type')).toContain('application/json');
    expect(((await json.json()) as { run: { id: string } }).run.id).toBe(runId);
    expect(await countRuns(chatId)).toBe(1);
  });

  it('follows the run live when a streaming start is retried while the run still runs', async () => {
    const chatId = await server.createChat();
    const text = { steps: 1, tokens: 20, delayMs: 20 };
    const body = JSON.stringify({ input: { text: script(text) } });
    const headers = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      'idempotency-key': 'streamed-live',
    };
    // The first request's connection drops at once, as a client's would before it retries.
    const first = await server.fetch(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    const runId = first.headers.get('x-outrun-run-id');
    await collectStream(first, { stopAfter: 1 });
    const retried = await server.fetch(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    expect(retried.headers.get('x-outrun-run-id')).toBe(runId);
    const replayed = await collectStream(retried);
    expect(replayed.done).toBe(true);
    expect(replayed.events.map((event) => event.seq)).toEqual(replayed.events.map((_, index) => index + 1));
    expect(streamedText(replayed.events)).toBe(scriptedText(text.steps, text.tokens));
    expect(await countRuns(chatId)).toBe(1);
  });

  it('creates one chat per key on POST /v1/chats', async () => {
    const create = () =>
      server.api('/v1/chats', {
        method: 'POST',
        body: { title: 'once' },
        headers: { 'idempotency-key': 'chat-1' },
      });
    const [a, b] = await Promise.all([create(), create()]);
    const c = await create();
    expect([a.status, b.status, c.status]).toEqual([201, 201, 201]);
    expect(new Set([a.body.chat.id, b.body.chat.id, c.body.chat.id]).size).toBe(1);
  });

  it('releases the key when the first request fails, so a retry runs', async () => {
    const chatId = await server.createChat();
    const busy = await server.startRun(chatId, { steps: 1, tokens: 50, delayMs: 20 });
    const body = { input: { text: script({ steps: 1, tokens: 2 }) } };
    const headers = { 'idempotency-key': 'after-conflict' };
    const refused = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    expect(refused.status).toBe(409);
    await server.waitForRun(busy.id);
    const retried = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    expect(retried.status).toBe(201);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
  });

  it('refuses a key that is too long or not printable ASCII with a 400', async () => {
    const chatId = await server.createChat();
    const body = { input: { text: 'hello' } };
    for (const key of ['x'.repeat(256), 'tab\there']) {
      const response = await server.api(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body,
        headers: { 'idempotency-key': key },
      });
      expect(response.status).toBe(400);
      expect(response.body.error.message).toContain('Idempotency-Key');
    }
    expect(await countRuns(chatId)).toBe(0);
  });

  it('treats the same key from another user of the workspace as a different request', async () => {
    const aliceKey = await server.createUser(`alice-${kind}@example.com`);
    const chatId = await server.createChat(aliceKey);
    const body = { input: { text: script({ steps: 1, tokens: 2 }) } };
    const headers = { 'idempotency-key': 'shared-key' };
    const alice = await server.api(`/v1/chats/${chatId}/runs`, {
      method: 'POST',
      body,
      headers,
      key: aliceKey,
    });
    expect(alice.status).toBe(201);
    const other = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers });
    expect(other.status).toBe(422);
    expect(JSON.stringify(other.body)).not.toContain(alice.body.run.id);
  });
});
