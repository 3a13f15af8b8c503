import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../errors.ts';
import { assertTimeZone, nextCronTime } from './schedule-time.ts';

describe('nextCronTime', () => {
  it('reads the expression in its time zone, across a daylight saving change', () => {
    const winter = nextCronTime({
      cron: '0 9 * * *',
      timeZone: 'Europe/Paris',
      after: new Date('2026-01-15T12:00:00Z'),
    });
    expect(winter.toISOString()).toBe('2026-01-16T08:00:00.000Z');
    const summer = nextCronTime({
      cron: '0 9 * * *',
      timeZone: 'Europe/Paris',
      after: new Date('2026-07-15T12:00:00Z'),
    });
    expect(summer.toISOString()).toBe('2026-07-16T07:00:00.000Z');
  });

  it('fires a time the clocks repeat once, and a time they skip an hour later (docs/triggers.md)', () => {
    const timeZone = 'America/New_York';
    const repeated = { cron: '30 1 * * *', timeZone };
    const first = nextCronTime({ ...repeated, after: new Date('2026-10-31T12:00:00Z') });
    expect(first.toISOString()).toBe('2026-11-01T05:30:00.000Z');
    // 01:30 comes again at 06:30 UTC, after the fall-back: no second fire that day.
    expect(nextCronTime({ ...repeated, after: first }).toISOString()).toBe('2026-11-02T06:30:00.000Z');
    const skipped = nextCronTime({ cron: '30 2 * * *', timeZone, after: new Date('2026-03-07T12:00:00Z') });
    expect(skipped.toISOString()).toBe('2026-03-08T07:30:00.000Z');
  });

  it('answers the first due time strictly after the given time, however many were missed', () => {
    const next = nextCronTime({
      cron: '*/5 * * * *',
      timeZone: 'UTC',
      after: new Date('2026-03-01T10:17:30Z'),
    });
    expect(next.toISOString()).toBe('2026-03-01T10:20:00.000Z');
  });

  it('names the cron field when the expression does not parse', () => {
    expect(() => nextCronTime({ cron: '0 25 * * *', timeZone: 'UTC', after: new Date() })).toThrow(
      InvalidRequestError,
    );
    expect(() => nextCronTime({ cron: 'every day', timeZone: 'UTC', after: new Date() })).toThrow(/^cron:/);
  });

  it('refuses a cron of other than 5 fields, or 6 with seconds, however the library would read it', () => {
    for (const cron of ['* * * * * * *', '0 0 9 * * * 2030', '* * * *', '@daily']) {
      expect(() => nextCronTime({ cron, timeZone: 'UTC', after: new Date() }), cron).toThrow(/^cron:/);
    }
    const after = new Date('2026-03-01T10:17:30Z');
    expect(nextCronTime({ cron: '  */5\t* * *  * ', timeZone: 'UTC', after }).toISOString()).toBe(
      '2026-03-01T10:20:00.000Z',
    );
    expect(nextCronTime({ cron: '15 */5 * * * *', timeZone: 'UTC', after }).toISOString()).toBe(
      '2026-03-01T10:20:15.000Z',
    );
  });

  it('names the timezone field for a zone that does not exist', () => {
    expect(() => assertTimeZone('Europe/Paris')).not.toThrow();
    expect(() => assertTimeZone('Mars/Olympus')).toThrow(/^timezone:/);
  });
});
