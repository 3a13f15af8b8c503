import { InvalidRequestError } from '../errors.ts';

/** A NUL character, or a UTF-16 surrogate without its partner: PostgreSQL stores neither in text or JSON. */
// eslint-disable-next-line no-control-regex -- NUL is exactly what this pattern looks for.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether `text` can be stored in a PostgreSQL `text` or `jsonb` column. */
export function isStorableText(text: string): boolean {
  return !UNSTORABLE.test(text);
}

/**
 * The deepest nesting of arrays and objects a request value may have. `JSON.parse` takes any depth, but the
 * recursive walks a body goes through after it (this guard, validation, serialization) overflow the stack
 * at some thousands of levels, which would answer a 500; no request of the API comes near the limit
 * (useChat's messages, the deepest, nest about ten levels).
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Refuses a parsed request value (a JSON body, a query string, path parameters) holding a string or key
 * PostgreSQL cannot store, or a `__proto__` key, with a 400 `invalid_request` naming the field
 * (`input.parts.0.text`), or nesting arrays and objects deeper than `MAX_JSON_DEPTH`, with a 400
 * `invalid_json`. Every route gets this before its handler runs, so no such value reaches validation or SQL
 * and nothing is written.
 */
export function assertStorableText(value: unknown, where: string): void {
  const found = findProblem(value, 0);
  if (found === null) return;
  if (found.problem === 'too_deep') {
    throw new InvalidRequestError(
      `The ${where} nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels.`,
      { in: where },
      'invalid_json',
    );
  }
  const name = found.path.length ? found.path.join('.') : where;
  if (found.problem === 'prototype_key') {
    throw new InvalidRequestError(`${name}: \`__proto__\` is not allowed as a key.`, {
      field: name,
      in: where,
    });
  }
  throw new InvalidRequestError(`${name} must not contain NUL characters or unpaired UTF-16 surrogates.`, {
    field: name,
    in: where,
  });
}

type Problem = { problem: 'unstorable' | 'too_deep' | 'prototype_key'; path: (string | number)[] };

/**
 * The first unstorable string or key in `value`, or the first array or object past `MAX_JSON_DEPTH` (`depth`:
 * the arrays and objects around `value`), or null. The walk never goes deeper than the limit, and allocates
 * nothing while all is well: a problem's path is built on the way back up.
 */
function findProblem(value: unknown, depth: number): Problem | null {
  if (typeof value === 'string') return isStorableText(value) ? null : { problem: 'unstorable', path: [] };
  if (value === null || typeof value !== 'object') return null;
  if (depth >= MAX_JSON_DEPTH) return { problem: 'too_deep', path: [] };
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      const found = findProblem(value[index], depth + 1);
      if (found) {
        found.path.unshift(index);
        return found;
      }
    }
    return null;
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (!isStorableText(key)) return { problem: 'unstorable', path: [printable(key)] };
    // `JSON.parse` makes it an own key, but an assignment of it (`copy[key] = …`, as validation does) sets
    // the copy's prototype instead, so the field would vanish or, merged deeper, reach other objects.
    if (key === '__proto__') return { problem: 'prototype_key', path: [key] };
    const found = findProblem((value as Record<string, unknown>)[key], depth + 1);
    if (found) {
      found.path.unshift(key);
      return found;
    }
  }
  return null;
}

/** A key as it can be shown in a message: unstorable characters escaped. */
function printable(key: string): string {
  return JSON.stringify(key.slice(0, 80)).slice(1, -1);
}
