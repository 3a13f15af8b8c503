import { createHash } from 'node:crypto';
import type pg from 'pg';
import { isResultTypeChangeError } from './transient.ts';

/**
 * Most statements one connection keeps prepared. Statements of a run's hot path are few (about fifteen
 * shapes) and seen first; lists of parameters of any length (`in ($1, $2, …)`, multi-row `values`) make
 * more shapes, and past this many a connection sends the rest unnamed, so neither this process nor the
 * server keeps an unbounded number of plans.
 */
export const NAMED_STATEMENTS_PER_CONNECTION = 200;

/**
 * Statements with more parameters than this are sent unnamed: long lists, a shape per length. (A start's
 * insert, the longest fixed shape, has about fifty.)
 */
const MOST_PARAMETERS = 100;

/** The statements worth preparing: queries and writes, not transaction control or DDL. */
const PREPARABLE = /^\s*(select|insert|update|delete|with)\b/i;
const BEGINS = /^\s*(begin|start\s+transaction)\b/i;
const ENDS = /^\s*(commit|end|abort|rollback)\s*(;|$|\s+(work|transaction)\b)/i;

export interface NamedStatementsOptions {
  /** @default NAMED_STATEMENTS_PER_CONNECTION */
  limit?: number;
}

/**
 * The names one connection gives its statements: one per statement text, for queries and writes with at
 * most `MOST_PARAMETERS` parameters, up to the connection's limit; none for a text `forget` was called with
 * (a migration changed its table's columns under it: parsed afresh each time from then on).
 */
export class StatementNames {
  // Text → its statement name, or null: sent unnamed.
  readonly #names = new Map<string, string | null>();
  readonly #limit: number;

  constructor(options: NamedStatementsOptions = {}) {
    this.#limit = options.limit ?? NAMED_STATEMENTS_PER_CONNECTION;
  }

  /** The name to execute `text` by, or undefined: send it unnamed. */
  of(text: string, parameters: number): string | undefined {
    const known = this.#names.get(text);
    if (known !== undefined) return known ?? undefined;
    if (this.#names.size >= this.#limit || parameters > MOST_PARAMETERS || !PREPARABLE.test(text)) {
      return undefined;
    }
    const name = `outrun_${createHash('sha1').update(text).digest('hex')}`;
    this.#names.set(text, name);
    return name;
  }

  forget(text: string): void {
    this.#names.set(text, null);
  }
}

/**
 * Makes `client` send Kysely's statements (`query(text, values)`) as named statements: PostgreSQL parses
 * and plans each shape once per connection and then only binds and executes it. Parsing and planning are
 * about half of what the database spends on a short run's statements (`bench/round-trips.ts`).
 *
 * The plan stays right for every value: PostgreSQL plans a named statement for its values for its first
 * five executions and keeps doing so unless a generic plan costs no more (so a partial index that needs
 * the value is still used). A statement that fails because a migration changed a table's columns under
 * it is sent unnamed from then on, and run again at once when no transaction is open (it did nothing).
 * Inside a transaction, which the error aborted, it goes to the caller: it is transient (a transition is
 * retried) and means the database is unavailable for this request (503, and the connection is discarded).
 */
export function nameStatements(client: pg.ClientBase, options: NamedStatementsOptions = {}): void {
  const names = new StatementNames(options);
  let inTransaction = false;
  const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;

  (client as { query: unknown }).query = (...args: unknown[]) => {
    const [text, values] = args;
    if (typeof text !== 'string' || !Array.isArray(values) || args.length !== 2) return query(...args);
    if (BEGINS.test(text)) inTransaction = true;
    else if (ENDS.test(text)) inTransaction = false;
    const name = names.of(text, values.length);
    if (!name) return query(text, values);
    const openTransaction = inTransaction;
    return query({ name, text, values }).catch((error: unknown) => {
      if (!isResultTypeChangeError(error)) throw error;
      names.forget(text);
      if (!openTransaction) return query(text, values);
      throw error;
    });
  };
}
