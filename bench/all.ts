/**
 * Runs every benchmark at modest sizes (`--quick`), one after another, on PGlite and, when `DATABASE_URL` is
 * set (as in CI), on PostgreSQL too. `npm run bench`. Each benchmark runs in its own process, on this Node.
 *
 *   npx tsx bench/all.ts [--store pglite|postgres|both] [--full]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const BENCHMARKS = [
  'event-log-throughput',
  'delivery-latency',
  'fan-out',
  'resume-latency',
  'cpu-per-token',
  'concurrent-runs',
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

const failed: string[] = [];
for (const store of stores) {
  for (const name of BENCHMARKS) {
    const script = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
    const result = spawnSync(
      process.execPath,
      ['--import', import.meta.resolve('tsx'), script, '--store', store, ...(values.full ? [] : ['--quick'])],
      { stdio: 'inherit' },
    );
    if (result.status !== 0) failed.push(`${name} (${store})`);
  }
}
if (failed.length > 0) {
  console.error(`\nFailed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
