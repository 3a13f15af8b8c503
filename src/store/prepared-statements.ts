import { sql, type Kysely, type PostgresPool } from 'kysely';
import type pg from 'pg';

/**
 * Statements planned once per connection and executed by name: for the hottest statement, the group
 * commit's insert, which a paced model sends for every one or two events. Unprepared, the database parses
 * and plans it every time (on PGlite in this very thread: about three times the CPU of a prepared one).
 */
export interface PreparedStatements {
  /** Runs `text` (parameters `$1…`, all strings) as the prepared statement `name`. */
  execute<Row>(name: string, text: string, values: string[]): Promise<Row[]>;
}

/** PostgreSQL: `pg`'s named statements, which it prepares on each connection at first use. */
export function postgresPreparedStatements(pool: PostgresPool): PreparedStatements {
  return {
    async execute<Row>(name: string, text: string, values: string[]) {
      const client = (await pool.connect()) as unknown as pg.PoolClient;
      try {
        const result = await client.query({ name, text, values });
        return result.rows as Row[];
      } finally {
        client.release();
      }
    },
  };
}

/**
 * PGlite: SQL `PREPARE` once (its one session lives as long as the instance), then `EXECUTE`. `EXECUTE`
 * takes no bind parameters, so values go in as string literals: with `standard_conforming_strings` on
 * (checked once), doubling the single quotes is the whole quoting, and a backslash is an ordinary character.
 * Every statement goes through `db` (Kysely's PGlite dialect), which hands the one session to one caller at a
 * time: sent to PGlite directly, an insert could land inside another caller's open transaction and vanish
 * with its rollback after it was reported durable.
 */
export function pglitePreparedStatements(db: Kysely<unknown>): PreparedStatements {
  const prepared = new Map<string, Promise<void>>();
  const prepare = async (name: string, text: string) => {
    const setting = await sql<{
      on: string;
    }>`select current_setting('standard_conforming_strings') as on`.execute(db);
    if (setting.rows[0]?.on !== 'on') throw new Error('PGlite runs without standard_conforming_strings');
    const exists = await sql`select 1 from pg_prepared_statements where name = ${name}`.execute(db);
    if (exists.rows.length === 0) await sql.raw(`prepare ${name} as ${text}`).execute(db);
  };
  return {
    async execute<Row>(name: string, text: string, values: string[]) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`Not a statement name: ${name}`);
      let ready = prepared.get(name);
      if (!ready) {
        ready = prepare(name, text);
        prepared.set(name, ready);
        ready.catch(() => prepared.delete(name));
      }
      await ready;
      const literals = values.map((value) => `'${value.replaceAll("'", "''")}'`);
      const result = await sql.raw<Row>(`execute ${name}(${literals.join(', ')})`).execute(db);
      return result.rows;
    },
  };
}
