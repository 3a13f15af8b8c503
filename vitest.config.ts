import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: more workers only add PGlite start-up contention.
    maxWorkers: 2,
    pool: 'forks',
    // Tests poll the API far faster than a client would, and try many bad keys from one address; the
    // rate-limit tests turn the limits on themselves.
    env: { OUTRUN_RATE_LIMIT_PER_MINUTE: '0', OUTRUN_AUTH_FAILURES_PER_MINUTE: '0' },
    // expect.poll's default of 1 s is shorter than a Chromium page's first render while the rest of the suite
    // loads both cores (CI failed once on a schedule list that rendered later). A poll that passes still
    // returns at its first success; only a failing one waits the full 10 s.
    expect: { poll: { timeout: 10_000 } },
  },
});
