import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultPoint } from '../src/faults.ts';
import type { DatabaseHandle } from '../src/store/database.ts';
import { IdempotencyKeys, type IdempotencyClaim } from '../src/triggers/idempotency.ts';
import { openTestDatabase, seedMember, STORE_KINDS } from './support/databases.ts';
import { collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';
import { pollUntil } from './support/wait.ts';

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

  it('stores a chat creation’s answer with the chat: a request whose answer fails leaves no chat, and its retry makes one', async () => {
    // The database refuses the first stored answer, once, as if the process had died between the chat's commit
    // and its key's answer: a sequence counts the tries, as it is not rolled back with the failed write.
    const { db } = server.outrun;
    await sql`create sequence chat_answer_tries`.execute(db);
    await sql`create or replace function fail_chat_answer_once() returns trigger language plpgsql as $$
      begin
        if new.key = 'chat-answer' and new.response is not null and nextval('chat_answer_tries') = 1 then
          raise exception 'the answer was lost (simulated)';
        end if;
        return new;
      end $$`.execute(db);
    await sql`create trigger fail_chat_answer_once before update on idempotency_keys
      for each row execute function fail_chat_answer_once()`.execute(db);
    try {
      const title = `answered-${kind}`;
      const create = () =>
        server.api('/v1/chats', {
          method: 'POST',
          body: { title },
          headers: { 'idempotency-key': 'chat-answer' },
        });
      const chatsTitled = async () =>
        (await db.selectFrom('chats').select('id').where('title', '=', title).execute()).map((row) => row.id);
      expect((await create()).status).toBe(500);
      expect(await chatsTitled()).toEqual([]);
      const retried = await create();
      expect(retried.status).toBe(201);
      expect(await chatsTitled()).toEqual([retried.body.chat.id]);
      const again = await create();
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.body.chat.id).toBe(retried.body.chat.id);
    } finally {
      await sql`drop trigger fail_chat_answer_once on idempotency_keys`.execute(db);
      await sql`drop function fail_chat_answer_once()`.execute(db);
      await sql`drop sequence chat_answer_tries`.execute(db);
    }
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

  it('scopes a key to its caller: two users of a workspace each start their own run with one key', async () => {
    const aliceKey = await server.createUser(`alice-${kind}@example.com`);
    const bobKey = await server.createUser(`bob-${kind}@example.com`);
    const workspace = await server.api('/v1/admin/workspaces', { method: 'POST', body: { name: 'Other' } });
    const carol = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: workspace.body.workspace.id, email: `carol-${kind}@example.com` },
    });
    const carolKey = carol.body.apiKey as string;
    const body = { input: { text: script({ steps: 1, tokens: 2 }) } };
    const headers = { 'idempotency-key': 'order-42' };
    const start = async (key: string) => {
      const chatId = await server.createChat(key);
      const response = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body, headers, key });
      return { chatId, response };
    };

    const alice = await start(aliceKey);
    const bob = await start(bobKey);
    const carolStart = await start(carolKey);
    for (const { chatId, response } of [alice, bob, carolStart]) {
      expect(response.status).toBe(201);
      expect(response.headers.get('idempotent-replayed')).toBeNull();
      expect(response.body.run.chatId).toBe(chatId);
      expect(await countRuns(chatId)).toBe(1);
    }
    expect(new Set([alice, bob, carolStart].map(({ response }) => response.body.run.id)).size).toBe(3);

    // Each caller's key still answers its own first request, and only that.
    const replayed = await server.api(`/v1/chats/${bob.chatId}/runs`, {
      method: 'POST',
      body,
      headers,
      key: bobKey,
    });
    expect(replayed.status).toBe(201);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(replayed.body.run.id).toBe(bob.response.body.run.id);
    const reused = await server.api(`/v1/chats/${alice.chatId}/runs`, {
      method: 'POST',
      body: { input: { text: script({ steps: 2, tokens: 2 }) } },
      headers,
      key: aliceKey,
    });
    expect(reused.status).toBe(422);
    expect(reused.body.error.code).toBe('idempotency_key_reused');
    expect(await countRuns(alice.chatId)).toBe(1);
  });

  it('answers a retry with the first run when the first request stopped right after its run committed', async () => {
    const { faults } = server.outrun;
    const chatId = await server.createChat();
    const body = JSON.stringify({ input: { text: script({ steps: 1, tokens: 3 }) } });
    const headers = { 'content-type': 'application/json', 'idempotency-key': 'stopped-after-commit' };
    const post = (accept?: string) =>
      server.fetch(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body,
        headers: accept ? { ...headers, accept } : headers,
      });
    // The first request stops where a process killed after the run's begin committed would have died.
    let resume = () => {};
    const stopped = new Promise<void>((resolve) => (resume = resolve));
    const hitsBefore = faults.hits(FaultPoint.afterBegin);
    faults.armTimes(FaultPoint.afterBegin, 1, () => stopped);
    const first = post();
    try {
      await pollUntil(
        () => faults.hits(FaultPoint.afterBegin),
        (hits) => hits > hitsBefore,
      );
      const runs = await server.outrun.db
        .selectFrom('runs')
        .select('id')
        .where('chat_id', '=', chatId)
        .execute();
      expect(runs).toHaveLength(1);
      const runId = runs[0]!.id;
      // The key's answer committed with the run.
      const stored = await server.outrun.db
        .selectFrom('idempotency_keys')
        .select('response')
        .where('key', '=', 'stopped-after-commit')
        .executeTakeFirstOrThrow();
      expect(stored.response).toMatchObject({ status: 201, body: { run: { id: runId } } });

      const retried = await post();
      expect(retried.status).toBe(201);
      expect(retried.headers.get('idempotent-replayed')).toBe('true');
      expect(((await retried.json()) as { run: { id: string } }).run.id).toBe(runId);
      const streamed = await post('text/event-stream');
      expect(streamed.status).toBe(200);
      expect(streamed.headers.get('x-outrun-run-id')).toBe(runId);
      expect(streamed.headers.get('idempotent-replayed')).toBe('true');
      resume();
      const replay = await collectStream(streamed);
      expect(replay.done).toBe(true);
      expect(replay.events[0]!.seq).toBe(1);
      expect(((await (await first).json()) as { run: { id: string } }).run.id).toBe(runId);
      expect(await countRuns(chatId)).toBe(1);
    } finally {
      resume();
      faults.clear(FaultPoint.afterBegin);
      await first.catch(() => {});
    }
  });
  it('creates an autostart chat with its first run or not at all: a start that fails before commit leaves no chat', async () => {
    const { faults, db } = server.outrun;
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'Starts at once', autostart: { text: script({ steps: 1, tokens: 2 }) } },
    });
    const agentId = agent.body.agent.id as string;
    const chatsOfAgent = async () =>
      (await db.selectFrom('chats').select('id').where('agent_id', '=', agentId).execute()).map(
        (row) => row.id,
      );
    const create = () =>
      server.api('/v1/chats', {
        method: 'POST',
        body: { agentId },
        headers: { 'idempotency-key': 'starts-at-once' },
      });
    // The run's transaction fails after its writes, as a process dying before commit would leave it.
    faults.armTimes(FaultPoint.startBeforeCommit, 1, () => {
      throw new Error('the start failed before commit (simulated)');
    });
    try {
      expect((await create()).status).toBe(500);
    } finally {
      faults.clear(FaultPoint.startBeforeCommit);
    }
    expect(await chatsOfAgent(), 'no chat, not even a deleted one').toEqual([]);

    const retried = await create();
    expect(retried.status).toBe(201);
    expect(retried.body.run).toMatchObject({ trigger: 'autostart', chatId: retried.body.chat.id });
    expect(await chatsOfAgent()).toEqual([retried.body.chat.id]);
    expect(await countRuns(retried.body.chat.id)).toBe(1);
    expect((await server.waitForRun(retried.body.run.id)).status).toBe('succeeded');
  });

  it('answers a retried chat creation with its autostart run when the first request stopped after the run began', async () => {
    const { faults } = server.outrun;
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'Greeter', autostart: { text: script({ steps: 1, tokens: 2 }) } },
    });
    expect(agent.status).toBe(201);
    const create = () =>
      server.api('/v1/chats', {
        method: 'POST',
        body: { agentId: agent.body.agent.id },
        headers: { 'idempotency-key': 'greet-once' },
      });
    let resume = () => {};
    const stopped = new Promise<void>((resolve) => (resume = resolve));
    const hitsBefore = faults.hits(FaultPoint.afterBegin);
    faults.armTimes(FaultPoint.afterBegin, 1, () => stopped);
    const first = create();
    try {
      await pollUntil(
        () => faults.hits(FaultPoint.afterBegin),
        (hits) => hits > hitsBefore,
      );
      const retried = await create();
      expect(retried.status).toBe(201);
      expect(retried.headers.get('idempotent-replayed')).toBe('true');
      expect(retried.body.run).toMatchObject({ trigger: 'autostart', chatId: retried.body.chat.id });
      resume();
      const answered = await first;
      expect(answered.body.chat.id).toBe(retried.body.chat.id);
      expect(answered.body.run.id).toBe(retried.body.run.id);
      expect(await countRuns(retried.body.chat.id)).toBe(1);
    } finally {
      resume();
      faults.clear(FaultPoint.afterBegin);
      await first.catch(() => {});
    }
  });
});

describe.each(STORE_KINDS)('an Idempotency-Key claim on %s', (kind) => {
  let database: DatabaseHandle;

  beforeAll(async () => {
    database = await openTestDatabase(kind);
  });
  afterAll(async () => {
    await database?.close();
  });

  it('refuses the answer of a request whose claim another took as abandoned, and keeps the other’s claim', async () => {
    const { db } = database;
    const member = await seedMember(db);
    let offsetMs = 0;
    const keys = new IdempotencyKeys({ db, now: () => new Date(Date.now() + offsetMs) });
    const request = { ...member, key: 'slow', method: 'POST', path: '/v1/things', body: {} };
    const gate = () => {
      let open = () => {};
      const opened = new Promise<void>((resolve) => (open = resolve));
      return { open, opened };
    };
    const answering = (name: string, wait: Promise<void>) => async (claim: IdempotencyClaim | null) => {
      await wait;
      const response = { status: 201, body: { thing: name } };
      await db.transaction().execute((tx) => claim!.answerIn(tx, response));
      return response;
    };
    const claimedAt = () =>
      pollUntil(
        () => db.selectFrom('idempotency_keys').select('created_at').where('key', '=', 'slow').execute(),
        (rows) => rows.length === 1,
      );

    const slowGate = gate();
    const slow = keys.run(request, answering('slow', slowGate.opened));
    const [slowClaim] = await claimedAt();
    // A minute later the slow request's claim looks abandoned: a retry takes the key.
    offsetMs = 61_000;
    const retryGate = gate();
    const retry = keys.run(request, answering('retry', retryGate.opened));
    await pollUntil(claimedAt, (rows) => rows[0]!.created_at.getTime() !== slowClaim!.created_at.getTime());

    slowGate.open();
    await expect(slow).rejects.toMatchObject({ code: 'idempotency_key_in_progress' });
    retryGate.open();
    expect(await retry).toMatchObject({ status: 201, body: { thing: 'retry' }, replayed: false });
    const replayed = await keys.run(request, async () => {
      throw new Error('a replay runs nothing');
    });
    expect(replayed).toMatchObject({ status: 201, body: { thing: 'retry' }, replayed: true });
  });
});
