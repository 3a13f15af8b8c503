import { InvalidRequestError } from '../errors.ts';

/** A NUL character, or a UTF-16 surrogate without its partner: PostgreSQL stores neither in text or JSON. */
// eslint-disable-next-line no-control-regex -- NUL is exactly what this pattern looks for.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether `text` can be stored in a PostgreSQL `text` or `jsonb` column. */
export function isStorableText(text: string): boolean {
  return !UNSTORABLE.test(text);
}

/**
 * Refuses a parsed request value (a JSON body, a query string, path parameters) holding a string or key
 * PostgreSQL cannot store, with a 400 `invalid_request` naming the field (`input.parts.0.text`). Every
 * route gets this before its handler runs, so no such text reaches SQL and nothing is written.
 */
export function assertStorableText(value: unknown, where: string): void {
  const field = findUnstorable(value, []);
  if (field === null) return;
  const name = field.length ? field.join('.') : where;
  throw new InvalidRequestError(`${name} must not contain NUL characters or unpaired UTF-16 surrogates.`, {
    field: name,
    in: where,
  });
}

/** The path of the first unstorable string or key in `value`, or null. */
function findUnstorable(value: unknown, path: (string | number)[]): (string | number)[] | null {
  if (typeof value === 'string') return isStorableText(value) ? null : path;
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      const found = findUnstorable(value[index], [...path, index]);
      if (found) return found;
    }
    return null;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      if (!isStorableText(key)) return [...path, printable(key)];
      const found = findUnstorable(inner, [...path, key]);
      if (found) return found;
    }
  }
  return null;
}

/** A key as it can be shown in a message: unstorable characters escaped. */
function printable(key: string): string {
  return JSON.stringify(key.slice(0, 80)).slice(1, -1);
}
