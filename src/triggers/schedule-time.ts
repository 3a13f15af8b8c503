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
 * The first due time of `cron` strictly after `after`, read in `timeZone` (wall-clock times that a daylight
 * saving change skips or repeats are croner's to resolve). Throws a 400 naming `cron` when the expression does
 * not parse or never comes due again.
 */
export function nextCronTime(options: { cron: string; timeZone: string; after: Date }): Date {
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
