/**
 * Runs every benchmark at modest sizes (`--quick`), one after another, on PGlite and, when `DATABASE_URL` is
 * set (as in CI), on PostgreSQL too. `npm run bench`. Each benchmark runs in its own process, on this Node.
 * `paced-load` runs once (its targets name their own stores and skip what this machine lacks); `scale-out`
 * runs once when PostgreSQL is in the stores (it needs PostgreSQL and Redis), and `round-trips` too (it starts
 * a PostgreSQL server of its own, so it needs the server's binaries).
 *
 *   npx tsx bench/all.ts [--store pglite|postgres|both] [--full]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { findPostgresBin } from '../test/support/own-postgres.ts';

const BENCHMARKS = [
  'event-log-throughput',
  'delivery-latency',
  'fan-out',
  'resume-latency',
  'cpu-per-token',
  'concurrent-runs',
  'storage',
  'idle-cpu',
  'lone-stream',
];

const { values } = parseArgs({
  options: { store: { type: 'string' }, full: { type: 'boolean', default: false } },
});
const stores =
  values.store === 'both'
    ? ['pglite', 'postgres']
    : values.store
      ? [values.store]
      : process.env.DATABASE_URL
        ? ['pglite', 'postgres']
        : ['pglite'];

// Without a redis-server binary, the topology benchmarks use the Redis of REDIS_URL (as in CI), under a key prefix of their own.
const redisArgs =
  spawnSync('redis-server', ['--version']).status !== 0 && process.env.REDIS_URL
    ? ['--redis-url', process.env.REDIS_URL]
    : [];

const failed: string[] = [];
const run = (name: string, args: string[], label: string) => {
  const script = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
  const result = spawnSync(
    process.execPath,
    ['--import', import.meta.resolve('tsx'), script, ...args, ...(values.full ? [] : ['--quick'])],
    { stdio: 'inherit' },
  );
  if (result.status !== 0) failed.push(label);
};
for (const store of stores) {
  for (const name of BENCHMARKS) run(name, ['--store', store], `${name} (${store})`);
}
run('paced-load', redisArgs, 'paced-load');
if (stores.includes('postgres')) run('scale-out', redisArgs, 'scale-out');
// Counts statements on a PostgreSQL server of its own: needs the server's binaries, not just DATABASE_URL.
if (stores.includes('postgres') && findPostgresBin()) run('round-trips', [], 'round-trips');
if (failed.length > 0) {
  console.error(`\nFailed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
