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

/** What decides a statement's structure (which joins, how many rows): flags and names, never a value. */
export type Shape = Record<string, string | number | boolean>;

/**
 * One statement of a hot path, built and compiled by Kysely once per shape, then executed with each call's
 * values bound in place. A run's start is one long statement (three inserts, a lock, the chat's touch, its
 * history); building and compiling it with Kysely cost 0.13–0.15 ms of the server's CPU a start, binding its
 * values 0.02–0.04 (`bench/passes/2026-12-03-amd-epyc/begin-statement-cost.ts`).
 *
 * `compile(shape, values, build)` calls `build` only the first time it sees `shape` (compared by its fields),
 * with a placeholder in place of each value of `values`. So `build` takes its statement's structure from
 * `shape` alone and everything that varies between calls from `values`, which it passes into the statement
 * unexamined. A constant the builder writes itself (`step_count: 0`) is kept from the first build.
 */
export class StatementShapes<S extends Shape, V extends Record<string, unknown>> {
  readonly #templates = new Map<string, Template>();

  compile<R>(shape: S, values: V, build: (shape: S, values: V) => Compilable<R>): CompiledQuery<R> {
    const key = JSON.stringify(shape);
    let template = this.#templates.get(key);
    if (!template) {
      const placeholders = Object.fromEntries(
        Object.keys(values).map((name) => [name, new Placeholder(name)]),
      );
      const compiled = build(shape, placeholders as V).compile();
      template = { sql: compiled.sql, parameters: compiled.parameters };
      this.#templates.set(key, template);
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
