import { describe, expect, it } from 'vitest';
import { captureLogger } from '../../test/support/logger.ts';
import { logPassFailure } from './transient.ts';

describe('logPassFailure', () => {
  it('warns while the database is unavailable and reports anything else as an error', () => {
    const { logger, records } = captureLogger();
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    logPassFailure(logger, refused, 'sweeping runs failed');
    logPassFailure(logger, new TypeError('x is undefined'), 'sweeping runs failed');
    expect(records.map((record) => [record.level, record.msg])).toEqual([
      [40, 'sweeping runs failed; the database is unavailable'],
      [50, 'sweeping runs failed'],
    ]);
  });
});
