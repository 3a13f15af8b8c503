import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createPostgresDatabase } from './support/databases.ts';
import { ADMIN_KEY, client, serverProcesses } from './support/durable-store.ts';
import { runUntilExit } from './support/server-process.ts';
import { pollUntil } from './support/wait.ts';

/** A refused start exits by itself long before this; a start the lock does not stop would run on. */
const REFUSED_EXIT_LIMIT_MS = 30_000;
const REFUSAL =
  'DATABASE_URL: another Outrun server runs on this database (its session is PostgreSQL backend';

/**
 * A server on PostgreSQL without Redis believes itself alone: at start it takes every active run as its own.
 * The instance lock (src/store/instance-lock.ts) holds a second such server off the database, and such a
 * server off a database servers with Redis use, as the data directory lock does for PGlite.
 */
describe.skipIf(!process.env.DATABASE_URL)('the instance lock on PostgreSQL', () => {
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
    expect(refused.output).toContain('set REDIS_URL on every instance');
    expect(refused.output, 'the refusal is not a connection failure').not.toContain('could not connect');
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

  it('takes the lock again after losing its connection, and exits if another took it meanwhile', async () => {
    const database = await createPostgresDatabase();
    cleanups.push(database.drop);
    const env = { DATABASE_URL: database.url, REDIS_URL: '', OUTRUN_ADMIN_KEY: ADMIN_KEY };
    const server = await start(env);
    const admin = new pg.Client({ connectionString: database.url });
    admin.on('error', () => {});
    await admin.connect();
    // Ended before the database is dropped.
    cleanups.unshift(() => admin.end());
    // The database ends the lock's session, as a restart or a network failure would.
    const endLockSession = async () => {
      const { rows } = await admin.query<{ ended: boolean }>(
        `select pg_terminate_backend(pid) as ended from pg_stat_activity
          where datname = current_database() and application_name = 'outrun instance lock'`,
      );
      expect(rows).toEqual([{ ended: true }]);
    };
    const holders = async () =>
      (
        await admin.query<{ mode: string }>(
          `select l.mode from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.granted and a.application_name = 'outrun instance lock'`,
        )
      ).rows.map((row) => row.mode);

    await endLockSession();
    await pollUntil(
      async () => server.output(),
      (output) => output.includes('took the instance lock again'),
      { timeoutMs: 15_000 },
    );
    expect(await holders()).toEqual(['ExclusiveLock']);
    expect((await client(server.url).json('/v1/me')).status).toBe(200);

    // Again, and this time another session takes the lock first (as a second server starting then would):
    // two servers would run as if alone, so this one stops.
    await endLockSession();
    await admin.query('select pg_advisory_lock($1, $2)', [0x4f555452, 1]);
    expect((await server.exited).code).toBe(1);
    expect(server.output()).toContain('another server took the instance lock while this one lost it');
  });

  it.skipIf(!process.env.REDIS_URL)(
    'refuses a server without Redis on a database a server with Redis uses; another with Redis starts',
    async () => {
      const database = await createPostgresDatabase();
      cleanups.push(database.drop);
      const redis = { REDIS_URL: process.env.REDIS_URL!, OUTRUN_REDIS_PREFIX: `lock-${Date.now()}` };
      const env = { DATABASE_URL: database.url, OUTRUN_ADMIN_KEY: ADMIN_KEY };
      await start({ ...env, ...redis });

      const alone = await runUntilExit({ ...env, REDIS_URL: '' }, { killAfterMs: REFUSED_EXIT_LIMIT_MS });
      expect(alone.code, alone.output).toBe(1);
      expect(alone.output).toContain(REFUSAL);
      expect(alone.output).not.toContain('outrun is ready');
      // A second server with Redis shares the database as ever.
      await start({ ...env, ...redis });
    },
  );
});
