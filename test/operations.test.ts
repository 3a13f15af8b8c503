import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthService } from '../src/auth/auth-service.ts';
import { openTestDatabase } from './support/databases.ts';
import { OUTRUN_CLI_ARGS } from './support/server-process.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

describe('operations', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('pglite', { logger: pino({ level: 'silent' }) });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers /healthz and /readyz without a key', async () => {
    expect(await (await fetch(`${server.url}/healthz`)).json()).toEqual({ status: 'ok' });
    expect(await (await fetch(`${server.url}/readyz`)).json()).toEqual({ status: 'ready' });
  });

  // Node's default (511) overflowed under a flood of 1,000 connections in 2 s on a busy loop; the kernel then
  // dropped connections that came back by TCP retransmit seconds later. `ss` shows a listener's backlog as its
  // Send-Q; the kernel caps it at net.core.somaxconn.
  it.skipIf(!existsSync('/usr/bin/ss') && !existsSync('/bin/ss'))(
    'listens with a backlog that holds a flood of connections',
    async () => {
      const port = new URL(server.url).port;
      const { stdout } = await promisify(execFile)('ss', ['-ltnH', `sport = :${port}`]);
      const sendQueue = Number(stdout.trim().split(/\s+/)[2]);
      const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
      expect(sendQueue).toBe(Math.min(4096, somaxconn));
    },
  );

  it('exposes run metrics in Prometheus text', async () => {
    const chatId = await server.createChat();
    await server.waitForRun((await server.startRun(chatId, { steps: 1, tokens: 2 })).id);
    const response = await fetch(`${server.url}/metrics`);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(text).toMatch(/^outrun_runs_started_total \d+/m);
    expect(text).toMatch(/^outrun_runs_settled_total\{status="succeeded"\} [1-9]\d*/m);
    for (const name of [
      'outrun_active_runs',
      'outrun_events_appended_total',
      'outrun_event_append_batch_size_bucket',
      'outrun_compaction_queue',
      'outrun_settle_retries_total',
      'outrun_sweeps_total',
      'outrun_stream_readers',
    ]) {
      expect(text).toContain(name);
    }
    // Node's default metrics, started by this first scrape.
    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);
  });
});

describe('admin key seeding', () => {
  it('generates an admin key once when none is configured, and registers a configured one idempotently', async () => {
    const database = await openTestDatabase('pglite');
    try {
      const auth = new AuthService(database.db);
      const first = await auth.seedAdmin({});
      expect(first.generatedKey).toMatch(/^or_/);
      expect((await auth.seedAdmin({})).generatedKey).toBeNull();
      expect(await auth.authenticate(first.generatedKey!)).toMatchObject({ role: 'owner' });

      await auth.seedAdmin({ adminKey: 'configured-admin-key-123' });
      await auth.seedAdmin({ adminKey: 'configured-admin-key-123' });
      const caller = await auth.authenticate('configured-admin-key-123');
      expect(caller.userId).toBe(first.userId);
      const keys = await database.db.selectFrom('api_keys').select('id').execute();
      expect(keys).toHaveLength(2);

      // The owner retired the configured key: a restart with it set does not bring it back, and says so.
      const { keyId } = caller;
      await auth.revokeApiKey(caller, keyId!);
      const again = await auth.seedAdmin({ adminKey: 'configured-admin-key-123' });
      expect(again.adminKeyRevokedAt).toBeInstanceOf(Date);
      await expect(auth.authenticate('configured-admin-key-123')).rejects.toMatchObject({ status: 401 });
      expect((await auth.seedAdmin({ adminKey: 'another-admin-key-456' })).adminKeyRevokedAt).toBeNull();
    } finally {
      await database.close();
    }
  });
});

describe('outrun migrate', () => {
  it('creates the schema in a new data directory and exits', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'outrun-migrate-'));
    try {
      const { stdout } = await promisify(execFile)(process.execPath, [...OUTRUN_CLI_ARGS, 'migrate'], {
        env: {
          ...process.env,
          OUTRUN_DATA_DIR: dataDir,
          DATABASE_URL: '',
          REDIS_URL: '',
          LOG_LEVEL: 'info',
        },
      });
      expect(stdout).toContain('database is up to date');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
