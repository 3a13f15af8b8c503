import { parse, protocol, type PGlite, type Results } from '@electric-sql/pglite';
import {
  CompiledQuery,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';
import { StatementNames } from './named-statements.ts';
import { isResultTypeChangeError } from './transient.ts';

/**
 * A Kysely dialect for PGlite, the embedded PostgreSQL. PGlite is one connection, so the driver hands it to
 * one Kysely connection at a time: a transaction holds it until commit or rollback, and other queries wait
 * in line (that is what a pool of size one does on a server database too).
 */
export class PGliteDialect implements Dialect {
  constructor(private readonly pglite: PGlite) {}

  createAdapter() {
    return new PostgresAdapter();
  }
  createDriver(): Driver {
    return new PGliteDriver(this.pglite);
  }
  createIntrospector(db: Kysely<unknown>) {
    return new PostgresIntrospector(db);
  }
  createQueryCompiler() {
    return new PostgresQueryCompiler();
  }
}

class PGliteDriver implements Driver {
  readonly #connection: PGliteConnection;
  #tail: Promise<void> = Promise.resolve();

  constructor(private readonly pglite: PGlite) {
    this.#connection = new PGliteConnection(pglite);
  }

  async init(): Promise<void> {
    await this.pglite.waitReady;
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    let release!: () => void;
    const previous = this.#tail;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    await previous;
    this.#connection.release = release;
    return this.#connection;
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    const isolation = settings.isolationLevel ? ` isolation level ${settings.isolationLevel}` : '';
    await connection.executeQuery(CompiledQuery.raw(`begin${isolation}`));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'));
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    (connection as PGliteConnection).release();
  }

  async destroy(): Promise<void> {
    // The owner of the PGlite instance closes it (see `createDatabase`).
  }
}

class PGliteConnection implements DatabaseConnection {
  release: () => void = () => {};
  readonly #names = new StatementNames();
  /** A named statement's parameter types (from its description), to serialize values as PGlite does. */
  readonly #parameterTypes = new Map<string, number[]>();

  constructor(private readonly pglite: PGlite) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    const text = compiledQuery.sql;
    const values = compiledQuery.parameters as unknown[];
    const result = await this.#query<R>(text, values);
    const affected = result.affectedRows;
    return {
      rows: result.rows,
      ...(affected !== undefined && /^\s*(insert|update|delete|merge)/i.test(text)
        ? { numAffectedRows: BigInt(affected) }
        : {}),
    };
  }

  async #query<R>(text: string, values: unknown[]): Promise<Results<R>> {
    const name = this.#names.of(text, values.length);
    if (!name) return this.pglite.query<R>(text, values);
    try {
      return await this.pglite.runExclusive(() => this.#executeNamed<R>(name, text, values));
    } catch (error) {
      if (!isResultTypeChangeError(error)) throw error;
      // A migration changed the columns under this statement: parsed afresh from now on; run again at
      // once unless the failure aborted the caller's transaction (then the caller retries it).
      this.#names.forget(text);
      if (this.pglite.isInTransaction()) throw error;
      return this.pglite.query<R>(text, values);
    }
  }

  /**
   * PGlite's `query` parses, describes and plans every statement, in six calls into the database. A named
   * statement is parsed once; then one call binds, executes and syncs it. Values are serialized as
   * `query` serializes them, by the parameter types the statement's description gave.
   */
  async #executeNamed<R>(name: string, text: string, values: unknown[]): Promise<Results<R>> {
    const { serialize } = protocol;
    let types = this.#parameterTypes.get(name);
    if (!types) {
      const described = await this.pglite.execProtocol(
        concat(serialize.parse({ name, text }), serialize.describe({ type: 'S', name }), serialize.sync()),
      );
      types = parse.parseDescribeStatementResults(described.messages);
      this.#parameterTypes.set(name, types);
    }
    const parameterTypes = types;
    const serialized = values.map((value, index) => {
      if (value === null || value === undefined) return null;
      const serializer = this.pglite.serializers[parameterTypes[index]!];
      return serializer ? serializer(value) : String(value);
    });
    const { messages } = await this.pglite.execProtocol(
      concat(
        serialize.bind({ statement: name, values: serialized }),
        serialize.describe({ type: 'P' }),
        serialize.execute({}),
        serialize.sync(),
      ),
    );
    return parse.parseResults(messages, this.pglite.parsers)[0] as Results<R>;
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('PGlite does not stream query results');
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}
