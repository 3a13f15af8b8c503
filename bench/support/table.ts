/** A cell: numbers are formatted with `digits` decimals, strings are printed as they are. */
export type Cell = string | number | null | undefined;

/** Formats a number for a table: fixed decimals, thousands separated, `–` for missing values. */
export function formatNumber(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/**
 * Prints a Markdown table (so a result can be pasted into docs/benchmarks.md as it is), with a title line.
 * Numbers are right-aligned with `digits` decimals (per column when an array is given).
 */
export function printTable(options: {
  title: string;
  columns: string[];
  rows: Cell[][];
  digits?: number | number[];
  notes?: string[];
}): void {
  const { columns, rows } = options;
  const digitsOf = (index: number) =>
    Array.isArray(options.digits) ? (options.digits[index] ?? 1) : (options.digits ?? 1);
  const text = rows.map((row) =>
    row.map((cell, index) =>
      typeof cell === 'number' ? formatNumber(cell, digitsOf(index)) : (cell ?? '–'),
    ),
  );
  const numeric = columns.map((_, index) => rows.some((row) => typeof row[index] === 'number'));
  const widths = columns.map((column, index) =>
    Math.max(column.length, ...text.map((row) => row[index]!.length), 3),
  );
  const pad = (value: string, index: number) =>
    numeric[index] ? value.padStart(widths[index]!) : value.padEnd(widths[index]!);
  const line = (cells: string[]) => `| ${cells.map(pad).join(' | ')} |`;
  const rule = `| ${widths.map((width, index) => (numeric[index] ? `${'-'.repeat(width - 1)}:` : '-'.repeat(width))).join(' | ')} |`;
  console.log(`\n### ${options.title}\n`);
  console.log(line(columns));
  console.log(rule);
  for (const row of text) console.log(line(row));
  for (const note of options.notes ?? []) console.log(`\n${note}`);
  console.log('');
}
