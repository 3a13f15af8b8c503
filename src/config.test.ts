import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, unknownOutrunVariables } from './config.ts';

describe('loadConfig: admission settings', () => {
  it('defaults to a base of 100, a maximum of 1,000 and a 30 ms bound on the loop delay', () => {
    const config = loadConfig({});
    expect(config.workerBaseConcurrency).toBe(100);
    expect(config.workerConcurrency).toBe(1000);
    expect(config.workerMaxLoopDelayMs).toBe(30);
  });

  it('refuses a bad value, naming its variable', () => {
    const error = (() => {
      try {
        loadConfig({ OUTRUN_WORKER_BASE_CONCURRENCY: '0', OUTRUN_WORKER_MAX_LOOP_DELAY_MS: 'soon' });
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).toContain('OUTRUN_WORKER_BASE_CONCURRENCY:');
    expect(problems).toContain('OUTRUN_WORKER_MAX_LOOP_DELAY_MS:');
  });
});

describe('loadConfig: durations and blanks', () => {
  const problemsOf = (env: Record<string, string>) => {
    try {
      loadConfig(env);
    } catch (caught) {
      return (caught as ConfigError).problems;
    }
    return [];
  };

  it('refuses a timer longer than Node can wait, and a run wait too long to be a date', () => {
    for (const variable of [
      'OUTRUN_SWEEP_INTERVAL_MS',
      'OUTRUN_KEEP_ALIVE_MS',
      'OUTRUN_LEASE_MS',
      'OUTRUN_SHUTDOWN_GRACE_MS',
      'OUTRUN_STREAM_RECHECK_MS',
      'OUTRUN_SCHEDULE_POLL_INTERVAL_MS',
      'OUTRUN_WEBHOOK_POLL_INTERVAL_MS',
      'OUTRUN_DATABASE_CONNECT_TIMEOUT_MS',
    ]) {
      const [problem] = problemsOf({ [variable]: '3000000000' });
      expect(problem, variable).toMatch(new RegExp(`^${variable}: must be at most 2147483647`));
      expect(loadConfig({ [variable]: '2147483647' })).toBeTruthy();
    }
    expect(problemsOf({ OUTRUN_WAIT_TTL_MS: '9000000000000000' })[0]).toMatch(
      /^OUTRUN_WAIT_TTL_MS: must be at most/,
    );
  });

  it('lists the OUTRUN_ variables it does not read, to warn of a misspelt setting', () => {
    expect(
      unknownOutrunVariables({
        OUTRUN_LEASE_MSS: '100',
        OUTRUN_LEASE_MS: '100',
        OUTRUN_FAULTS: '',
        OUTRUN_COMPATIBLE_BASE_URL: 'http://127.0.0.1:11434/v1',
        OPENAI_API_KEY: 'x',
        OUTRUN_ADMIN_KEYS: 'x',
      }),
    ).toEqual(['OUTRUN_ADMIN_KEYS', 'OUTRUN_LEASE_MSS']);
  });

  it('reads a value of only spaces as unset, not as 0', () => {
    const config = loadConfig({ PORT: ' ', OUTRUN_SHUTDOWN_GRACE_MS: '  ' });
    expect(config.port).toBe(3000);
    expect(config.shutdownGraceMs).toBe(10_000);
  });

  it('names the variable once in a message that names it itself', () => {
    const [problem] = problemsOf({ OUTRUN_CORS_ORIGINS: 'https://a.example.com/' });
    expect(problem).toMatch(/^OUTRUN_CORS_ORIGINS: "https:\/\/a.example.com\/" is not an origin/);
  });
});

describe('loadConfig: the database pool', () => {
  it('defaults to 10 connections and reads OUTRUN_DATABASE_POOL_SIZE', () => {
    expect(loadConfig({}).databasePoolSize).toBe(10);
    expect(loadConfig({ OUTRUN_DATABASE_POOL_SIZE: '25' }).databasePoolSize).toBe(25);
  });

  it.each(['0', '2.5', 'many', '1001'])('refuses OUTRUN_DATABASE_POOL_SIZE=%s, naming it', (value) => {
    expect(() => loadConfig({ OUTRUN_DATABASE_POOL_SIZE: value })).toThrow(/OUTRUN_DATABASE_POOL_SIZE:/);
  });
});

describe('loadConfig: failed authentications and proxies', () => {
  it('limits 30 failed authentications a minute and trusts no proxy by default', () => {
    expect(loadConfig({})).toMatchObject({ authFailuresPerMinute: 30, trustProxy: false });
    expect(loadConfig({ OUTRUN_AUTH_FAILURES_PER_MINUTE: '0' }).authFailuresPerMinute).toBe(0);
  });

  it.each([
    ['false', false],
    ['true', true],
    ['10.0.0.1', ['10.0.0.1']],
    [' 10.0.0.0/8, loopback ,fd00::/8', ['10.0.0.0/8', 'loopback', 'fd00::/8']],
  ])('reads OUTRUN_TRUST_PROXY=%s', (value, expected) => {
    expect(loadConfig({ OUTRUN_TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });

  it.each(['1', 'yes', '10.0.0.0/33', '10.0.0.1/8/1', 'proxy.internal'])(
    'refuses OUTRUN_TRUST_PROXY=%s, naming it',
    (value) => {
      expect(() => loadConfig({ OUTRUN_TRUST_PROXY: value })).toThrow(/OUTRUN_TRUST_PROXY:/);
    },
  );

  it.each(['-1', '1.5', 'many'])('refuses OUTRUN_AUTH_FAILURES_PER_MINUTE=%s, naming it', (value) => {
    expect(() => loadConfig({ OUTRUN_AUTH_FAILURES_PER_MINUTE: value })).toThrow(
      /OUTRUN_AUTH_FAILURES_PER_MINUTE:/,
    );
  });
});

describe('loadConfig: webhook delivery retention', () => {
  it('keeps finished deliveries 30 days by default and reads OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS', () => {
    expect(loadConfig({}).webhookDeliveryRetentionDays).toBe(30);
    expect(loadConfig({ OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS: '7' }).webhookDeliveryRetentionDays).toBe(7);
  });

  it.each(['0', '-1', '1.5', 'never'])(
    'refuses OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS=%s, naming it',
    (value) => {
      expect(() => loadConfig({ OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS: value })).toThrow(
        /OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS:/,
      );
    },
  );
});

describe('loadConfig: event retention', () => {
  it('keeps events forever by default and reads OUTRUN_EVENT_RETENTION_DAYS', () => {
    expect(loadConfig({}).eventRetentionDays).toBeUndefined();
    expect(loadConfig({ OUTRUN_EVENT_RETENTION_DAYS: '30' }).eventRetentionDays).toBe(30);
  });

  it.each(['0', '-1', '1.5', 'never'])('refuses OUTRUN_EVENT_RETENTION_DAYS=%s, naming it', (value) => {
    expect(() => loadConfig({ OUTRUN_EVENT_RETENTION_DAYS: value })).toThrow(/OUTRUN_EVENT_RETENTION_DAYS:/);
  });
});
