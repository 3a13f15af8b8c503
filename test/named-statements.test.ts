import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { Faults } from '../src/faults.ts';
import { Metrics } from '../src/metrics.ts';
import { createDatabase, type DatabaseHandle } from '../src/store/database.ts';
import { nameStatements } from '../src/store/named-statements.ts';
import { isDatabaseUnavailableError, isTransientDatabaseError } from '../src/store/transient.ts';
import { EventLog } from '../src/stream/event-log.ts';
import { finishRun, insertRunningRun } from './support/chat-rows.ts';
import { createPostgresDatabase, openTestDatabase, seedMember, STORE_KINDS } from './support/databases.ts';

const { DATABASE_URL } = process.env;

interface Prepared {
  statement: string;
  executions: number;
}

/** The statements prepared on the connection that runs this query, and how often each ran. */
const preparedOn = async (run: (text: string) => Promise<{ rows: unknown[] }>) =>
  (
    await run(
      `select statement, (generic_plans + custom_plans)::int as executions
       from pg_prepared_statements where name like 'outrun\\_%' order by statement`,
    )
  ).rows as Prepared[];

describe.each(STORE_KINDS)('named statements on %s', (kind) => {
  let handle: DatabaseHandle;
  let dropDatabase: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    if (kind === 'postgres') {
      const database = await createPostgresDatabase();
      dropDatabase = database.drop;
      // One connection, so every statement below meets the statements the earlier ones prepared (and the
      // compactions' look-up of what they prepared runs where they ran).
      handle = await createDatabase({ databaseUrl: database.url, poolSize: 1, migrate: false });
    } else {
      handle = await openTestDatabase('pglite');
    }
    await run('create table gadgets (id integer primary key, name text not null)');
    await run(`insert into gadgets values (1, 'one'), (2, 'two')`);
  });
  afterAll(async () => {
    await handle?.close();
    await dropDatabase?.();
  });

  const run = (text: string) => sql.raw(text).execute(handle.db);
  const gadgets = () => handle.db.selectFrom('gadgets' as never);
  const pid = async () =>
    (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(handle.db)).rows[0]!.pid;

  it('prepares a statement once per connection and then executes it by name, in and out of transactions', async () => {
    const byId = (id: number) =>
      gadgets()
        .select('name' as never)
        .where('id' as never, '=', id as never)
        .execute();
    expect(await byId(1)).toEqual([{ name: 'one' }]);
    for (let id = 2; id <= 4; id++) await byId(id);
    await handle.db.transaction().execute(async (tx) => {
      expect(
        await tx
          .selectFrom('gadgets' as never)
          .select('name' as never)
          .where('id' as never, '=', 2 as never)
          .execute(),
      ).toEqual([{ name: 'two' }]);
    });
    const prepared = await preparedOn(run);
    expect(prepared.filter((row) => row.statement.includes('from "gadgets"'))).toEqual([
      { statement: 'select "name" from "gadgets" where "id" = $1', executions: 5 },
    ]);
    // Transaction control and DDL are not prepared.
    expect(prepared.some((row) => /^(begin|commit|create)/i.test(row.statement))).toBe(false);
  });

  it('answers a select * whose table a migration changed under it: at once outside a transaction, on retry inside one', async () => {
    const all = () =>
      gadgets()
        .selectAll()
        .where('id' as never, '=', 1 as never)
        .execute();
    expect(await all()).toEqual([{ id: 1, name: 'one' }]);
    // A migration (on PostgreSQL, another instance's) changes the table under the prepared `select *`.
    await run(`alter table gadgets add column colour text not null default 'red'`);
    expect(await all()).toEqual([{ id: 1, name: 'one', colour: 'red' }]);

    // Inside a transaction the failed statement aborted it: the caller sees a transient, 503-worthy error
    // (on PostgreSQL the connection is discarded), and the transaction run again works.
    const inTransaction = () =>
      handle.db.transaction().execute((tx) =>
        tx
          .selectFrom('gadgets' as never)
          .selectAll()
          .execute(),
      );
    expect(await inTransaction()).toHaveLength(2);
    const before = await pid();
    await run(`alter table gadgets add column size integer not null default 3`);
    const error = await inTransaction().then(
      () => null,
      (failure: unknown) => failure,
    );
    expect(isTransientDatabaseError(error)).toBe(true);
    expect(isDatabaseUnavailableError(error)).toBe(true);
    expect(await inTransaction()).toEqual([
      { id: 1, name: 'one', colour: 'red', size: 3 },
      { id: 2, name: 'two', colour: 'red', size: 3 },
    ]);
    if (kind === 'postgres') expect(await pid()).not.toBe(before);
  });

  /** `count` finished runs with three events each. */
  async function finishedRuns(count: number): Promise<string[]> {
    const { workspaceId, userId } = await seedMember(handle.db);
    const runIds: string[] = [];
    for (let index = 0; index < count; index++) {
      const { runId } = await insertRunningRun(handle.db, { workspaceId, userId });
      await finishRun(handle.db, runId);
      await handle.db
        .insertInto('run_events')
        .values(
          [1, 2, 3].map((seq) => ({
            run_id: runId,
            seq,
            chunk: JSON.stringify({ type: 'text-delta', id: 't', delta: `${seq}` }),
          })),
        )
        .execute();
      runIds.push(runId);
    }
    return runIds;
  }

  it('prepares one text per statement whatever the number of runs a batch compacts', async () => {
    const log = new EventLog({
      db: handle.db,
      bus: new MemoryBus(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      faults: new Faults(),
    });
    const [one, ...three] = await finishedRuns(4);
    for (const batch of [[one!], three]) {
      const results = await log.compactMany(batch);
      expect([...results.values()].map((result) => result.compacted)).toEqual(batch.map(() => true));
    }
    const prepared = await preparedOn(run);
    // The lock and count of the runs, the read of their events, the insert of their pages, the delete and
    // mark: each one text that ran for both batches (a list of parameters made a text per length: two each).
    const compaction = [
      /^select "id", "status", "events_compacted_at"/,
      /^\s*select run_id, seq, chunk::text/,
      /^insert into "?run_event_pages/,
      /^with "deleted_rows" as \(delete from "run_events"/,
    ].map((shape) => prepared.filter((statement) => shape.test(statement.statement)));
    expect(compaction.map((texts) => texts.map((text) => text.executions))).toEqual([[2], [2], [2], [2]]);
    // Each run's page, cut from the one value the insert sent, holds that run's events.
    for (const runId of [one!, ...three]) {
      const events = await log.read({ runId, after: 0, limit: 10 });
      expect(events.map((event) => JSON.parse(event.data).delta)).toEqual(['1', '2', '3']);
    }
  });
});

describe.skipIf(!DATABASE_URL)('named statements on a PostgreSQL connection', () => {
  let database: { url: string; drop: () => Promise<void> };
  beforeAll(async () => {
    database = await createPostgresDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  it('keeps at most its limit of statements per connection and sends long parameter lists unnamed', async () => {
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      nameStatements(client, { limit: 3 });
      const results: unknown[] = [];
      for (let n = 1; n <= 5; n++) {
        const { rows } = await client.query(`select $1::int + ${n} as sum`, [n]);
        results.push(rows[0]);
      }
      expect(results).toEqual([1, 2, 3, 4, 5].map((n) => ({ sum: 2 * n })));
      const ids = Array.from({ length: 120 }, (_, index) => index);
      const list = ids.map((_, index) => `$${index + 1}::int`).join(', ');
      const { rows } = await client.query(`select count(*)::int as n from unnest(array[${list}])`, ids);
      expect(rows).toEqual([{ n: 120 }]);
      const prepared = await preparedOn((text) => client.query(text, []));
      expect(prepared.map((row) => row.statement)).toEqual([
        'select $1::int + 1 as sum',
        'select $1::int + 2 as sum',
        'select $1::int + 3 as sum',
      ]);
    } finally {
      await client.end();
    }
  });
});
