import { parseArgs } from 'node:util';
import type { StoreKind } from './store.ts';

export interface BenchArgs {
  /** Which store the server or the event log runs on. @default 'pglite' */
  store: StoreKind;
  /** Modest sizes (what `npm run bench` uses): a quick smoke run rather than the documented figures. */
  quick: boolean;
  /** `--runs N`, for the benchmarks that take it; undefined when not given. */
  runs?: number;
  /** `--rounds N`, for the benchmarks that take it; undefined when not given. */
  rounds?: number;
}

/**
 * Reads `--store pglite|postgres` and `--quick` from the command line, and `--runs N` and `--rounds N` for a
 * benchmark that takes them (`withRuns`, `withRounds`); any other option is refused.
 */
export function parseBenchArgs(options: { withRuns?: boolean; withRounds?: boolean } = {}): BenchArgs {
  const { values } = parseArgs({
    options: {
      store: { type: 'string', default: 'pglite' },
      quick: { type: 'boolean', default: false },
      ...(options.withRuns ? { runs: { type: 'string' as const } } : {}),
      ...(options.withRounds ? { rounds: { type: 'string' as const } } : {}),
    },
    allowPositionals: false,
  });
  const store = values.store;
  if (store !== 'pglite' && store !== 'postgres') {
    throw new Error(`--store must be pglite or postgres, not "${store}"`);
  }
  const counts = values as { runs?: string; rounds?: string };
  return {
    store,
    quick: values.quick ?? false,
    runs: positiveInteger('--runs', counts.runs),
    rounds: positiveInteger('--rounds', counts.rounds),
  };
}

function positiveInteger(option: string, given: string | undefined): number | undefined {
  if (given === undefined) return undefined;
  const value = Number(given);
  if (!(Number.isInteger(value) && value > 0)) {
    throw new Error(`${option} must be a positive integer, not "${given}"`);
  }
  return value;
}
