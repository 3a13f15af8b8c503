import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { RunUsage } from '../protocol/run.ts';
import { SCRIPTED_MODEL_ID } from './providers.ts';

/** What a model costs, in US dollars per million tokens. */
export interface ModelPrice {
  inputPerMillion: number;
  outputPerMillion: number;
}

/** Built-in prices (DESIGN §6): the scripted model costs $1 per million input and $2 per million output tokens. */
const BUILT_IN_PRICES: Readonly<Record<string, ModelPrice>> = {
  [SCRIPTED_MODEL_ID]: { inputPerMillion: 1, outputPerMillion: 2 },
};

const PricesFile = z.record(
  z.string().min(1),
  z.object({ inputPerMillion: z.number().min(0), outputPerMillion: z.number().min(0) }).strict(),
);

/** Model prices: the built-in ones, overridden and extended by `OUTRUN_MODEL_PRICES`. */
export class ModelPrices {
  readonly #prices: Map<string, ModelPrice>;

  constructor(extra: Record<string, ModelPrice> = {}) {
    this.#prices = new Map(Object.entries({ ...BUILT_IN_PRICES, ...extra }));
  }

  /** Reads the prices file named by `OUTRUN_MODEL_PRICES`; a bad file fails start-up naming the variable. */
  static fromFile(path: string | undefined): ModelPrices {
    if (!path) return new ModelPrices();
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (error) {
      throw new Error(`OUTRUN_MODEL_PRICES: cannot read ${path} as JSON (${(error as Error).message}).`);
    }
    const result = PricesFile.safeParse(parsed);
    if (!result.success) {
      throw new Error(
        `OUTRUN_MODEL_PRICES: ${path} must map model ids to {"inputPerMillion", "outputPerMillion"}: ${result.error.issues[0]?.message}`,
      );
    }
    return new ModelPrices(result.data);
  }

  /** The model's price, or null when it has none. */
  of(model: string): ModelPrice | null {
    return this.#prices.get(model) ?? null;
  }
}

/**
 * A sum of US dollars as a person reads it: to the picodollar, without the binary float's tail (so $0.00015,
 * not $0.00015000000000000001). For what the API shows; sums are kept unrounded.
 */
export function roundUsd(value: number): number {
  return Math.round(value * 1e12) / 1e12;
}

/** What `usage` costs at `price`, in US dollars. */
export function costOf(usage: RunUsage, price: ModelPrice | null): number {
  if (!price) return 0;
  return (
    ((usage.inputTokens ?? 0) * price.inputPerMillion + (usage.outputTokens ?? 0) * price.outputPerMillion) /
    1_000_000
  );
}
