import { z } from 'zod';
import { InvalidRequestError } from '../errors.ts';
import { isId, type IdKind } from '../ids.ts';

/** Parses `value` with `schema`; a mismatch becomes a 400 `invalid_request` naming each bad field. */
export function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  return schema.parse(value);
}

/**
 * The body of a route that takes none: nothing, or an empty object. Any field is refused (400
 * `invalid_request`) before the route acts, as a route with a body refuses a field it does not know.
 */
export const NoBody = z.object({}).strict().optional();

/** Checks a path id's shape; a malformed id is a 400 `invalid_id` (a well-formed unknown one is a 404 later). */
export function requireId(kind: IdKind, value: string): string {
  if (!isId(kind, value))
    throw new InvalidRequestError(`"${value.slice(0, 80)}" is not a ${kind} id.`, {}, 'invalid_id');
  return value;
}

export const PaginationQuery = (defaultLimit: number, maxLimit: number) =>
  z.object({
    limit: z.coerce.number().int().min(1).max(maxLimit).default(defaultLimit),
    cursor: z.string().min(1).max(100).optional(),
  });

/** The largest event sequence number: the column is a 32-bit `integer`. */
export const MAX_SEQUENCE = 2_147_483_647;

/** A sequence number in `?after=` or `Last-Event-ID`: an integer from 0 to `MAX_SEQUENCE`. */
export function parseSequence(value: unknown, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const text = String(value).trim();
  const sequence = /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!(sequence <= MAX_SEQUENCE)) {
    throw new InvalidRequestError(
      `${name} must be an event sequence number: an integer from 0 to ${MAX_SEQUENCE}.`,
      {},
      'invalid_cursor',
    );
  }
  return sequence;
}
