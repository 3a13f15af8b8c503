import { CompiledQuery, type Compilable } from 'kysely';

/** Stands for the value of `key` while a shape is compiled. */
class Placeholder {
  constructor(readonly key: string) {}
}

interface Template {
  sql: string;
  /** Per parameter: a placeholder, bound per call, or a constant the builder wrote into the statement. */
  parameters: readonly unknown[];
}

/**
 * One statement of a hot path, built and compiled by Kysely once per shape, then executed with each call's
 * values bound in place. A run's start is one long statement (three inserts, a lock, the chat's touch, its
 * history); building and compiling it with Kysely cost about 0.15 ms of the server's CPU a run, more than
 * binding its values (`bench/cpu-per-token.ts`, the fixed cost of a run, says what a run costs in all).
 *
 * `compile(shape, values, build)` calls `build` only the first time it sees `shape`, with a placeholder in
 * place of each value of `values`. So `build` must take everything that varies between calls from its
 * argument and pass it into the statement unexamined; what decides the statement's structure (which joins,
 * how many rows) goes into `shape` instead, and `build` may read that from its closure. A constant the
 * builder writes itself (`step_count: 0`) is kept from the first build.
 */
export class StatementShapes<V extends Record<string, unknown>> {
  readonly #templates = new Map<string, Template>();

  compile<R>(shape: string, values: V, build: (values: V) => Compilable<R>): CompiledQuery<R> {
    let template = this.#templates.get(shape);
    if (!template) {
      const placeholders = Object.fromEntries(Object.keys(values).map((key) => [key, new Placeholder(key)]));
      const compiled = build(placeholders as V).compile();
      template = { sql: compiled.sql, parameters: compiled.parameters };
      this.#templates.set(shape, template);
    }
    return CompiledQuery.raw(
      template.sql,
      template.parameters.map((parameter) =>
        parameter instanceof Placeholder ? bound(values, parameter.key) : parameter,
      ),
    ) as CompiledQuery<R>;
  }
}

function bound(values: Record<string, unknown>, key: string): unknown {
  if (!(key in values)) throw new Error(`The statement's shape takes "${key}", which this call lacks.`);
  return values[key];
}
