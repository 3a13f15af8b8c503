import { Cron } from 'croner';
import { InvalidRequestError } from '../errors.ts';

/** A field-named 400, in the shape zod validation errors have (`issues: [{path, message}]`). */
export function invalidField(field: string, message: string): InvalidRequestError {
  return new InvalidRequestError(`${field}: ${message}`, { issues: [{ path: [field], message }] });
}

/** Throws a 400 naming `timezone` unless `timeZone` is an IANA zone this runtime knows. */
export function assertTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
  } catch {
    throw invalidField(
      'timezone',
      `unknown time zone "${timeZone}"; use an IANA name such as "Europe/Paris"`,
    );
  }
}

/**
 * The field counts a cron expression may have: minute, hour, day of month, month and day of week, or those
 * after a seconds field. Counted here rather than left to croner, which also reads 7 fields (a year last)
 * and nicknames such as `@daily`.
 */
const CRON_FIELD_COUNTS: readonly number[] = [5, 6];

/**
 * The first due time of `cron` strictly after `after`, read in `timeZone` (wall-clock times that a daylight
 * saving change skips or repeats are croner's to resolve). Throws a 400 naming `cron` when the expression has
 * other than 5 or 6 fields, does not parse, or never comes due again.
 */
export function nextCronTime(options: { cron: string; timeZone: string; after: Date }): Date {
  const fields = options.cron.split(/\s+/).filter((field) => field !== '');
  if (!CRON_FIELD_COUNTS.includes(fields.length)) {
    throw invalidField(
      'cron',
      `has ${fields.length} field${fields.length === 1 ? '' : 's'}; give 5 (minute hour day-of-month month day-of-week), or 6 with seconds first`,
    );
  }
  let next: Date | null;
  try {
    // `paused`: the expression is only evaluated here; croner never runs a timer for it.
    next = new Cron(options.cron, { timezone: options.timeZone, paused: true }).nextRun(options.after);
  } catch (error) {
    throw invalidField('cron', `does not parse: ${(error as Error).message}`);
  }
  if (!next) throw invalidField('cron', 'never comes due');
  return next;
}
