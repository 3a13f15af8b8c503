import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { runUntilExit, startServerProcess, type ServerProcess } from './support/server-process.ts';
import { script } from './support/sse.ts';
import { pollUntil } from './support/wait.ts';

const ADMIN_KEY = 'data-dir-lock-admin-key-0123456789';
/** A refused start exits by itself long before this; a start the lock does not stop would run on. */
const REFUSED_EXIT_LIMIT_MS = 30_000;

function client(url: string) {
  const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
  const json = async (path: string, method = 'GET', body?: unknown) => {
    const response = await fetch(url + path, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    return (await response.json()) as any;
  };
  return {
    json,
    /** Starts a scripted run in a new chat; resolves with its id once it is running. */
    async startRun(options: Parameters<typeof script>[0]): Promise<string> {
      const chatId = (await json('/v1/chats', 'POST', {})).chat.id as string;
      const runId = (await json(`/v1/chats/${chatId}/runs`, 'POST', { input: { text: script(options) } })).run
        .id as string;
      await pollUntil(
        () => json(`/v1/runs/${runId}`),
        (body) => body.run.status === 'running',
      );
      return runId;
    },
    run: async (runId: string) => (await json(`/v1/runs/${runId}`)).run,
  };
}

describe('the data directory lock', () => {
  const processes: ServerProcess[] = [];
  let dataDir: string;
  let env: Record<string, string>;
  const start = async () => {
    const server = await startServerProcess(env);
    processes.push(server);
    return server;
  };

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'outrun-lock-'));
    // A copy of a migrated data directory starts in well under a second; a fresh one runs initdb first.
    cpSync(inject('pgliteTemplateDir'), dataDir, { recursive: true });
    // Embedded mode: no PostgreSQL or Redis, whatever the test run has.
    env = { OUTRUN_DATA_DIR: dataDir, DATABASE_URL: '', REDIS_URL: '', OUTRUN_ADMIN_KEY: ADMIN_KEY };
  });

  afterEach(async () => {
    for (const server of processes.splice(0)) {
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await server.exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses a second process on a data directory in use, naming the directory and the holder, and leaves its run alone', async () => {
    const first = await start();
    const api = client(first.url);
    // About six seconds: it runs on while both refused starts come and go.
    const runId = await api.startRun({ tokens: 200, delayMs: 30 });

    for (const command of ['serve', 'migrate'] as const) {
      const refused = await runUntilExit(env, { command, killAfterMs: REFUSED_EXIT_LIMIT_MS });
      expect(refused.signal, `${command} ran on:\n${refused.output}`).toBeNull();
      expect(refused.code, refused.output).toBe(1);
      expect(refused.output).toContain(
        `OUTRUN_DATA_DIR: the data directory ${dataDir} is in use by another Outrun process (pid ${first.child.pid},`,
      );
      // Nothing ran against the database: no sweep handed the first process's run to this one.
      expect(refused.output).not.toMatch(/outrun is ready|database is up to date/);
      expect(await api.run(runId)).toMatchObject({ attempt: 1 });
    }

    const run = await pollUntil(
      () => api.run(runId),
      (current) => current.status !== 'running',
    );
    expect(run).toMatchObject({ status: 'succeeded', attempt: 1, error: null });
  });

  it('starts on a data directory whose holder was killed with kill -9, and resumes its run', async () => {
    const first = await start();
    const runId = await client(first.url).startRun({ tokens: 100, delayMs: 30 });
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    expect(existsSync(join(dataDir, 'outrun.lock')), 'the killed process left its lock').toBe(true);

    // First a start on a port in use: it fails naming PORT before it takes over the run the crash left.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((taken.address() as AddressInfo).port);
      for (let attempt = 0; attempt < 2; attempt++) {
        const refused = await runUntilExit({ ...env, PORT: port }, { killAfterMs: REFUSED_EXIT_LIMIT_MS });
        expect(refused.code, refused.output).toBe(1);
        expect(refused.output).toContain(`PORT: 127.0.0.1:${port} is already in use`);
        expect(refused.output).not.toMatch(/run resumed|handed back|ended a run/);
      }
    } finally {
      taken.close();
    }

    // The crash cost the run one execution; the refused starts none.
    const second = await start();
    const run = await pollUntil(
      () => client(second.url).run(runId),
      (current) => current.status !== 'running' && current.status !== 'pending',
    );
    expect(run).toMatchObject({ status: 'succeeded', attempt: 2, error: null });
  });

  it('removes its lock when it shuts down', async () => {
    const server = await start();
    expect(existsSync(join(dataDir, 'outrun.lock'))).toBe(true);
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    expect(existsSync(join(dataDir, 'outrun.lock'))).toBe(false);
  });
});
