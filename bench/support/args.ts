import { parseArgs } from 'node:util';
import type { StoreKind } from './store.ts';

export interface BenchArgs {
  /** Which store the server or the event log runs on. @default 'pglite' */
  store: StoreKind;
  /** Modest sizes (what `npm run bench` uses): a quick smoke run rather than the documented figures. */
  quick: boolean;
}

/** Reads `--store pglite|postgres` and `--quick` from the command line. */
export function parseBenchArgs(): BenchArgs {
  const { values } = parseArgs({
    options: {
      store: { type: 'string', default: 'pglite' },
      quick: { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
  const store = values.store;
  if (store !== 'pglite' && store !== 'postgres') {
    throw new Error(`--store must be pglite or postgres, not "${store}"`);
  }
  return { store, quick: values.quick ?? false };
}
