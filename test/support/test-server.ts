import pino from 'pino';
import { createOutrun, type CreateOutrunOptions, type Outrun } from '../../src/app.ts';
import { MemoryBus } from '../../src/bus/memory-bus.ts';
import { MemoryQueue } from '../../src/queue/memory-queue.ts';
import type { Config } from '../../src/config.ts';
import type { RunObject } from '../../src/runs/run-object.ts';
import { isTerminalStatus } from '../../src/runs/run-status.ts';
import { openTestDatabase, type StoreKind } from './databases.ts';
import { script } from './sse.ts';
import { pollUntil } from './wait.ts';

export const ADMIN_KEY = 'test-admin-key-0123456789';

export interface ApiResponse<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
}

export interface TestServer {
  outrun: Outrun;
  url: string;
  /** A JSON request as the admin (or with `key`). */
  api<T = Record<string, any>>(
    path: string,
    options?: {
      method?: string;
      body?: unknown;
      key?: string | null;
      headers?: Record<string, string>;
      raw?: string;
    },
  ): Promise<ApiResponse<T>>;
  /** A raw fetch with the admin key. */
  fetch(path: string, init?: RequestInit & { key?: string }): Promise<Response>;
  createChat(key?: string): Promise<string>;
  /** Starts a scripted run; returns the run. */
  startRun(chatId: string, scriptOptions: Parameters<typeof script>[0], key?: string): Promise<RunObject>;
  /** Polls until the run is terminal (or `until` says so). */
  waitForRun(runId: string, until?: (run: RunObject) => boolean, key?: string): Promise<RunObject>;
  /** A second user in the admin's workspace, with their key. */
  createUser(email: string): Promise<string>;
  close(): Promise<void>;
}

/** Boots a real Outrun server on a fresh database of `kind`, listening on a random loopback port. */
export async function startTestServer(
  kind: StoreKind,
  options: Omit<CreateOutrunOptions, 'database' | 'config'> & {
    config?: Partial<Config>;
    /** PostgreSQL: the pool's size and how long a statement waits for one of its connections. */
    pool?: { poolSize?: number; connectTimeoutMs?: number };
  } = {},
): Promise<TestServer> {
  const { pool, ...outrunOptions } = options;
  const database = await openTestDatabase(kind, pool);
  // Embedded mode unless a test passes its own bus and queue, whatever REDIS_URL the test run has.
  const outrun = await createOutrun({
    bus: new MemoryBus(),
    queue: new MemoryQueue({ concurrency: options.config?.workerConcurrency }),
    singleInstance: true,
    ...outrunOptions,
    database,
    logger: options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    config: { port: 0, host: '127.0.0.1', adminKey: ADMIN_KEY, keepAliveMs: 15_000, ...options.config },
  });
  await outrun.start();
  const url = await outrun.listen();

  const server: TestServer = {
    outrun,
    url,
    async api(path, request = {}) {
      const key = request.key === undefined ? ADMIN_KEY : request.key;
      const headers: Record<string, string> = { ...request.headers };
      if (key !== null) headers.authorization = `Bearer ${key}`;
      let body: string | undefined = request.raw;
      if (request.body !== undefined) {
        body = JSON.stringify(request.body);
        headers['content-type'] ??= 'application/json';
      } else if (body !== undefined) headers['content-type'] ??= 'application/json';
      const response = await fetch(url + path, { method: request.method ?? 'GET', headers, body });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : null, headers: response.headers };
    },
    fetch(path, init = {}) {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${init.key ?? ADMIN_KEY}`);
      return fetch(url + path, { ...init, headers });
    },
    async createChat(key) {
      const response = await server.api<{ chat: { id: string } }>('/v1/chats', {
        method: 'POST',
        body: { title: 'test' },
        key,
      });
      if (response.status !== 201) throw new Error(`create chat: ${response.status}`);
      return response.body.chat.id;
    },
    async startRun(chatId, scriptOptions, key) {
      const response = await server.api<{ run: RunObject }>(`/v1/chats/${chatId}/runs`, {
        method: 'POST',
        body: { input: { text: script(scriptOptions) } },
        key,
      });
      if (response.status !== 201)
        throw new Error(`start run: ${response.status} ${JSON.stringify(response.body)}`);
      return response.body.run;
    },
    async waitForRun(runId, until = (run) => isTerminalStatus(run.status), key) {
      return pollUntil(
        async () => (await server.api<{ run: RunObject }>(`/v1/runs/${runId}`, { key })).body.run,
        until,
      );
    },
    async createUser(email) {
      const me = await server.api<{ workspace: { id: string } }>('/v1/me');
      const response = await server.api<{ apiKey: string }>('/v1/admin/users', {
        method: 'POST',
        body: { workspaceId: me.body.workspace.id, email },
      });
      if (response.status !== 201) throw new Error(`create user: ${response.status}`);
      return response.body.apiKey;
    },
    async close() {
      await outrun.close({ graceMs: 0 });
      await database.close();
    },
  };
  return server;
}

/**
 * Another Outrun instance on a test server's database, with a bus and a queue of its own (so it executes the
 * runs it begins), listening on a free port. The caller closes it.
 */
export async function startOtherInstance(server: TestServer): Promise<{ outrun: Outrun; url: string }> {
  const outrun = await createOutrun({
    database: server.outrun.database,
    logger: pino({ level: 'silent' }),
    bus: new MemoryBus(),
    queue: new MemoryQueue(),
    singleInstance: false,
    config: { port: 0, host: '127.0.0.1', adminKey: ADMIN_KEY },
  });
  await outrun.start();
  return { outrun, url: await outrun.listen() };
}
