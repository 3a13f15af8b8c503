import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../src/store/database.ts';
import { createPostgresDatabase, STORE_KINDS, type StoreKind } from './support/databases.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import { collectStream, script, scriptedText, streamedText } from './support/sse.ts';
import { pollUntil } from './support/wait.ts';

const ADMIN_KEY = 'crash-test-admin-key-0123456789';

/** A store that outlives server processes: a PGlite data directory, or a PostgreSQL database. */
async function durableStore(
  kind: StoreKind,
): Promise<{ env: Record<string, string>; cleanup: () => Promise<void> }> {
  if (kind === 'pglite') {
    const dataDir = mkdtempSync(join(tmpdir(), 'outrun-crash-'));
    // A copy of a migrated data directory starts in well under a second; a fresh one runs initdb first.
    cpSync(inject('pgliteTemplateDir'), dataDir, { recursive: true });
    // DATABASE_URL is cleared: the child would otherwise inherit the test run's PostgreSQL.
    return {
      env: { OUTRUN_DATA_DIR: dataDir, DATABASE_URL: '' },
      cleanup: async () => rmSync(dataDir, { recursive: true, force: true }),
    };
  }
  const database = await createPostgresDatabase();
  return { env: { DATABASE_URL: database.url }, cleanup: database.drop };
}

function client(url: string) {
  const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
  return {
    async json(path: string, method = 'GET', body?: unknown) {
      const response = await fetch(url + path, {
        method,
        headers,
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: response.status, body: (await response.json()) as any };
    },
    stream(path: string) {
      return fetch(url + path, { headers });
    },
  };
}

describe.each(STORE_KINDS)('crash and restart on %s', (kind) => {
  const processes: ServerProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  const start = async (env: Record<string, string>) => {
    // Single-instance mode: no Redis, whatever the test run has.
    const server = await startServerProcess({ OUTRUN_ADMIN_KEY: ADMIN_KEY, REDIS_URL: '', ...env });
    processes.push(server);
    return server;
  };

  afterEach(async () => {
    for (const server of processes.splice(0)) {
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await server.exited;
    }
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  it('settles a run killed mid-stream by kill -9 as aborted/server_restarted on restart, and the chat works', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const first = await start(store.env);
    const api = client(first.url);
    const chat = await api.json('/v1/chats', 'POST', { title: 'crash' });
    const chatId = chat.body.chat.id as string;
    const started = await api.json(`/v1/chats/${chatId}/runs`, 'POST', {
      input: { text: script({ steps: 3, tokens: 40, delayMs: 10 }) },
    });
    const runId = started.body.run.id as string;
    // Let it finish a step, so there is durable progress to keep.
    await pollUntil(
      () => api.json(`/v1/runs/${runId}`),
      (response) => response.body.run.stepCount >= 1,
    );
    const seen = await collectStream(await api.stream(`/v1/runs/${runId}/stream`), { stopAfter: 20 });

    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = await start(store.env);
    const again = client(second.url);
    const run = (await again.json(`/v1/runs/${runId}`)).body.run;
    expect(run).toMatchObject({ status: 'aborted', error: { code: 'server_restarted' } });
    expect(run.stepCount).toBeGreaterThanOrEqual(1);

    // The stream replays everything that was durable, the first events exactly as seen before the crash.
    const replay = await collectStream(await again.stream(`/v1/runs/${runId}/stream`));
    expect(replay.done).toBe(true);
    expect(replay.events.slice(0, seen.events.length)).toEqual(seen.events);
    expect(replay.events.map((event) => event.seq)).toEqual(replay.events.map((_, index) => index + 1));
    expect(replay.events.map((event) => event.chunk.type).slice(-2)).toEqual(['abort', 'data-run']);
    const text = streamedText(replay.events);
    expect(scriptedText(3, 40).startsWith(text)).toBe(true);
    expect(text.length).toBeGreaterThanOrEqual(scriptedText(1, 40).length);

    // The assistant message was rebuilt from the log: its text is exactly what was streamed.
    const latest = (await again.json(`/v1/chats/${chatId}/runs/latest`)).body;
    expect(latest.message.status).toBe('aborted');
    const messageText = latest.message.parts
      .filter((part: { type: string }) => part.type === 'text')
      .map((part: { text: string }) => part.text)
      .join('');
    expect(messageText).toBe(text);

    const next = await again.json(`/v1/chats/${chatId}/runs`, 'POST', {
      input: { text: script({ steps: 1, tokens: 2 }) },
    });
    expect(next.status).toBe(201);
    const finished = await pollUntil(
      () => again.json(`/v1/runs/${next.body.run.id}`),
      (response) => response.body.run.status === 'succeeded',
    );
    expect(finished.body.run.status).toBe('succeeded');
  });

  it('settles a run whose process died inside the settle transaction', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const first = await start({ ...store.env, OUTRUN_FAULTS: 'run.settle.before-commit:exit' });
    const api = client(first.url);
    const chatId = (await api.json('/v1/chats', 'POST', {})).body.chat.id as string;
    const runId = (
      await api.json(`/v1/chats/${chatId}/runs`, 'POST', { input: { text: script({ tokens: 3 }) } })
    ).body.run.id as string;
    const exit = await first.exited;
    expect(exit.code).toBe(137);

    const second = await start(store.env);
    const run = (await client(second.url).json(`/v1/runs/${runId}`)).body.run;
    expect(run).toMatchObject({ status: 'aborted', error: { code: 'server_restarted' } });
    const replay = await collectStream(await client(second.url).stream(`/v1/runs/${runId}/stream`));
    expect(streamedText(replay.events)).toBe(scriptedText(1, 3));
    expect(replay.events.filter((event) => event.chunk.type === 'data-run').at(-1)!.chunk).toMatchObject({
      data: { status: 'aborted' },
    });
  });

  it('on SIGTERM settles active runs as aborted/server_shutdown after the grace period, and exits cleanly', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const server = await start({ ...store.env, OUTRUN_SHUTDOWN_GRACE_MS: '300' });
    const api = client(server.url);
    const chatId = (await api.json('/v1/chats', 'POST', {})).body.chat.id as string;
    const runId = (
      await api.json(`/v1/chats/${chatId}/runs`, 'POST', {
        input: { text: script({ tokens: 2000, delayMs: 10 }) },
      })
    ).body.run.id as string;
    await pollUntil(
      () => api.json(`/v1/runs/${runId}`),
      (response) => response.body.run.status === 'running',
    );
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);

    const database = await createDatabase({
      databaseUrl: store.env.DATABASE_URL || undefined,
      dataDir: store.env.OUTRUN_DATA_DIR,
    });
    try {
      const run = await database.db
        .selectFrom('runs')
        .selectAll()
        .where('id', '=', runId)
        .executeTakeFirstOrThrow();
      expect(run.status).toBe('aborted');
      expect(run.error).toMatchObject({ code: 'server_shutdown' });
      const message = await database.db
        .selectFrom('messages')
        .select('status')
        .where('id', '=', run.assistant_message_id!)
        .executeTakeFirstOrThrow();
      expect(message.status).toBe('aborted');
    } finally {
      await database.close();
    }
  });
});
