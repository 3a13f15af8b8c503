import { parseArgs } from 'node:util';
import type { StoreKind } from './store.ts';

export interface BenchArgs {
  /** Which store the server or the event log runs on. @default 'pglite' */
  store: StoreKind;
  /** Modest sizes (what `npm run bench` uses): a quick smoke run rather than the documented figures. */
  quick: boolean;
  /** `--runs N`, for the benchmarks that take it; undefined when not given. */
  runs?: number;
}

/**
 * Reads `--store pglite|postgres` and `--quick` from the command line, and `--runs N` for a benchmark that takes
 * it (`withRuns`); any other option is refused.
 */
export function parseBenchArgs(options: { withRuns?: boolean } = {}): BenchArgs {
  const { values } = parseArgs({
    options: {
      store: { type: 'string', default: 'pglite' },
      quick: { type: 'boolean', default: false },
      ...(options.withRuns ? { runs: { type: 'string' as const } } : {}),
    },
    allowPositionals: false,
  });
  const store = values.store;
  if (store !== 'pglite' && store !== 'postgres') {
    throw new Error(`--store must be pglite or postgres, not "${store}"`);
  }
  const given = (values as { runs?: string }).runs;
  const runs = given === undefined ? undefined : Number(given);
  if (runs !== undefined && !(Number.isInteger(runs) && runs > 0)) {
    throw new Error(`--runs must be a positive integer, not "${given}"`);
  }
  return { store, quick: values.quick ?? false, runs };
}
