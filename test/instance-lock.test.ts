import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createPostgresDatabase } from './support/databases.ts';
import { ADMIN_KEY, client, serverProcesses } from './support/durable-store.ts';
import { runUntilExit } from './support/server-process.ts';
import { pollUntil } from './support/wait.ts';

/** A refused start exits by itself long before this; a start the lock does not stop would run on. */
const REFUSED_EXIT_LIMIT_MS = 30_000;
const REFUSAL = 'DATABASE_URL: another Outrun server runs on this database without REDIS_URL';

/**
 * A server on PostgreSQL without Redis believes itself alone: at start it takes every active run as its own.
 * The single-instance lock (src/store/instance-lock.ts) holds a second such server off the database, as the
 * data directory lock does for PGlite.
 */
describe.skipIf(!process.env.DATABASE_URL)('the single-instance lock on PostgreSQL', () => {
  const { start, cleanups } = serverProcesses();

  it('refuses a second server without Redis, leaves the first one’s run alone, and lets a restart in after a kill -9', async () => {
    const database = await createPostgresDatabase();
    cleanups.push(database.drop);
    const env = { DATABASE_URL: database.url, REDIS_URL: '', OUTRUN_ADMIN_KEY: ADMIN_KEY };
    const first = await start(env);
    const api = client(first.url);
    // About six seconds: it runs on while the refused start comes and goes (or most of that).
    const { runId } = await api.startRun({ tokens: 200, delayMs: 30 });
    await pollUntil(
      async () => (await api.json(`/v1/runs/${runId}`)).body.run,
      (run) => run.status === 'running',
    );

    const refused = await runUntilExit(env, { killAfterMs: REFUSED_EXIT_LIMIT_MS });
    expect(refused.signal, `the second server ran on:\n${refused.output}`).toBeNull();
    expect(refused.code, refused.output).toBe(1);
    expect(refused.output).toContain(REFUSAL);
    expect(refused.output).toMatch(/its session is PostgreSQL backend \d+/);
    // Nothing ran against the database: no sweep handed the first server's run to the second.
    expect(refused.output).not.toMatch(/outrun is ready|handed back|run resumed/);
    const after = (await api.json(`/v1/runs/${runId}`)).body.run;
    expect(after.attempt, 'the refused start took the run over').toBe(1);
    expect(['running', 'succeeded']).toContain(after.status);

    // PostgreSQL lets the lock go with the killed server's connection: a restart gets in and resumes a run the
    // kill cut.
    const { runId: cut } = await api.startRun({ tokens: 100, delayMs: 30 });
    await pollUntil(
      async () => (await api.json(`/v1/runs/${cut}`)).body.run,
      (run) => run.status === 'running',
    );
    first.child.kill('SIGKILL');
    await first.exited;
    const second = await start(env);
    const run = await pollUntil(
      async () => (await client(second.url).json(`/v1/runs/${cut}`)).body.run,
      (current) => current.status !== 'running' && current.status !== 'pending',
      { timeoutMs: 30_000 },
    );
    expect(run).toMatchObject({ status: 'succeeded', attempt: 2, error: null });
  });

  it('takes the lock again after losing its connection, and keeps a second server out', async () => {
    const database = await createPostgresDatabase();
    cleanups.push(database.drop);
    const env = { DATABASE_URL: database.url, REDIS_URL: '', OUTRUN_ADMIN_KEY: ADMIN_KEY };
    const server = await start(env);

    // The database ends the lock's session, as a restart or a network failure would.
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ ended: boolean }>(
        `select pg_terminate_backend(pid) as ended from pg_stat_activity
          where datname = current_database() and application_name = 'outrun single-instance lock'`,
      );
      expect(rows).toEqual([{ ended: true }]);
    } finally {
      await admin.end();
    }
    await pollUntil(
      async () => server.output(),
      (output) => output.includes('took the single-instance lock again'),
      { timeoutMs: 15_000 },
    );

    const refused = await runUntilExit(env, { killAfterMs: REFUSED_EXIT_LIMIT_MS });
    expect(refused.code, refused.output).toBe(1);
    expect(refused.output).toContain(REFUSAL);
    // The server answers throughout.
    expect((await client(server.url).json('/v1/me')).status).toBe(200);
  });
});
