import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, inject } from 'vitest';
import { createPostgresDatabase, type StoreKind } from './databases.ts';
import { startServerProcess, type ServerProcess } from './server-process.ts';
import { script } from './sse.ts';

/** The admin key the server processes of these tests are started with. */
export const ADMIN_KEY = 'crash-test-admin-key-0123456789';

/** A store that outlives server processes: a PGlite data directory, or a PostgreSQL database. */
export async function durableStore(
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

/** A client of a server process, as its admin. */
export function client(url: string) {
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
    /** Creates a chat (with `chat` as its body) and starts a scripted run in it. */
    async startRun(options: Parameters<typeof script>[0], chat: Record<string, unknown> = {}) {
      const chatId = (await this.json('/v1/chats', 'POST', chat)).body.chat.id as string;
      const started = await this.json(`/v1/chats/${chatId}/runs`, 'POST', {
        input: { text: script(options) },
      });
      return { chatId, runId: started.body.run.id as string };
    },
  };
}

/**
 * The server processes of a test file, in single-instance mode (no Redis, whatever the test run has) with the
 * admin key: `start` starts one; after each test every one still running is killed with SIGKILL, then what
 * the test pushed on `cleanups` runs (its stores, its receivers).
 */
export function serverProcesses(): {
  start: (env: Record<string, string>) => Promise<ServerProcess>;
  cleanups: (() => Promise<void>)[];
} {
  const processes: ServerProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const server of processes.splice(0)) {
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await server.exited;
    }
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  const start = async (env: Record<string, string>) => {
    const server = await startServerProcess({ OUTRUN_ADMIN_KEY: ADMIN_KEY, REDIS_URL: '', ...env });
    processes.push(server);
    return server;
  };
  return { start, cleanups };
}
