/**
 * Reads a scorecard's output (the directory `bench/scorecard.sh` writes: one Markdown file per step) back into
 * the figures issue 10's goals are judged by, so that `bench/goals.ts` can put several passes side by side.
 * Every figure is read from a table the benchmark itself printed; nothing is recomputed here but the ratios.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A Markdown table as a benchmark printed it: the `### ` title above it, its header and its rows. */
export interface PrintedTable {
  title: string;
  header: string[];
  rows: string[][];
}

/** Every table in `text` under its `### ` title (the first table after each title). */
export function printedTables(text: string): PrintedTable[] {
  const tables: PrintedTable[] = [];
  let title: string | null = null;
  let current: PrintedTable | null = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('### ')) {
      title = line.slice(4).trim();
      current = null;
    } else if (line.startsWith('|') && title !== null) {
      const cells = line
        .slice(1, line.lastIndexOf('|'))
        .split('|')
        .map((cell) => cell.trim());
      if (!current) {
        current = { title, header: cells, rows: [] };
        tables.push(current);
      } else if (!cells.every((cell) => /^:?-+:?$/.test(cell))) current.rows.push(cells);
    } else if (current && line.trim() !== '') {
      // The notes under a table end it.
      title = null;
      current = null;
    }
  }
  return tables;
}

/** A number as a table prints it (`1,234.5`); NaN for `–` or anything else. */
export function printedNumber(cell: string | undefined): number {
  if (cell === undefined) return Number.NaN;
  const text = cell.replaceAll(',', '').replaceAll('*', '').trim();
  return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
}

/** The cell of the row whose first cell is `row` (or satisfies it), in column `column`. */
export function cellOf(
  table: PrintedTable,
  row: string | ((cells: string[]) => boolean),
  column: string,
): string | undefined {
  const index = table.header.indexOf(column);
  if (index === -1) return undefined;
  const match = typeof row === 'string' ? (cells: string[]) => cells[0] === row : row;
  return table.rows.find(match)?.[index];
}

/** A step's output, or null when the pass has no such step (an older scorecard, a step that failed). */
function readStep(directory: string, step: string): string | null {
  try {
    return readFileSync(join(directory, `${step}.txt`), 'utf8');
  } catch {
    return null;
  }
}

function tableIn(text: string | null, titleStart: string): PrintedTable | null {
  return text === null
    ? null
    : (printedTables(text).find((table) => table.title.startsWith(titleStart)) ?? null);
}

/** `a / b` as printed for two figures in one cell (`13.5 / 62.5`, `466 / 500`). */
function pair(cell: string | undefined): [number, number] {
  const [first, second] = (cell ?? '').split('/');
  return [printedNumber(first), printedNumber(second)];
}

/** The figures of one target in the paced-load summary. */
export interface PacedFigures {
  ttftP50: number;
  ttftP99: number;
  scheduleP99: number;
  completedOf500: number;
  /** One run of 1,000 tokens at 50 tokens/s alone: CPU of every process it uses ÷ the pipe's (`total / A`). */
  loneStreamCpu: number;
}

/** The CPU per token of one store, ÷ the plain pipe's on the same Node, for cpu-per-token's three scenarios. */
export interface CpuRatios {
  oneStream: number;
  tenStreams: number;
  pacedHundred: number;
}

/** What one scorecard pass measured, per Node version (`24`, `20`), NaN where the pass has no figure. */
export interface PassFigures {
  directory: string;
  /** The most CPU time the hypervisor took in any step (`log.txt`), % ; NaN when the log does not say. */
  maxStealPercent: number;
  paced: Record<'24' | '20', Partial<Record<PacedTarget, PacedFigures>>>;
  cpu: Record<'24' | '20', { postgres: CpuRatios; floor: CpuRatios; pglite: CpuRatios }>;
  /** A run in progress resumed 50 behind: first event p50 (ms). */
  resume: Record<
    '24' | '20',
    { same: number; other: number; bSame: number; bOther: number; pgliteSame: number }
  >;
  /** Extra CPU per reader-token ÷ the bare floor's, PostgreSQL, Node 24. */
  fanOut: number;
  /** Stored bytes of a finished 1,000-token run ÷ its text, PostgreSQL, Node 24. */
  storage: { scripted: number; prose: number };
  /** Delivered tokens/s by the number of processes. */
  scaleOut: Map<number, number>;
}

export const PACED_TARGETS = {
  pipe: 'A: AI SDK pipe',
  resumable: 'B: A + resumable-stream',
  floor: 'D: A + durable PostgreSQL log (floor)',
  postgres: 'Outrun, PostgreSQL',
  pglite: 'Outrun, PGlite',
} as const;
export type PacedTarget = keyof typeof PACED_TARGETS;

const CPU_SCENARIOS: Record<keyof CpuRatios, string> = {
  oneStream: 'one stream at a time',
  tenStreams: '10 concurrent streams',
  pacedHundred: '100 paced streams (20 ms/token)',
};

function pacedFigures(text: string | null): Partial<Record<PacedTarget, PacedFigures>> {
  const table = tableIn(text, 'paced-load summary');
  const lone = tableIn(text, 'paced-load, one stream');
  const figures: Partial<Record<PacedTarget, PacedFigures>> = {};
  if (!table) return figures;
  for (const [target, column] of Object.entries(PACED_TARGETS) as [PacedTarget, string][]) {
    if (!table.header.includes(column)) continue;
    const row = (start: string) => cellOf(table, (cells) => cells[0]!.startsWith(start), column);
    const [ttftP50, ttftP99] = pair(row('time to first token p50 / p99 (ms), 100 runs'));
    const [completedOf500] = pair(row('runs completed in 40 s, 500 runs'));
    figures[target] = {
      ttftP50,
      ttftP99,
      scheduleP99: printedNumber(row('schedule latency p99 (ms), 100 runs')),
      completedOf500,
      loneStreamCpu: lone ? printedNumber(cellOf(lone, column, 'total / A')) : Number.NaN,
    };
  }
  return figures;
}

function cpuRatios(text: string | null, column: string): CpuRatios {
  const table = tableIn(text, 'cpu-per-token — ');
  const ratio = (scenario: string) => (table ? printedNumber(cellOf(table, scenario, column)) : Number.NaN);
  return {
    oneStream: ratio(CPU_SCENARIOS.oneStream),
    tenStreams: ratio(CPU_SCENARIOS.tenStreams),
    pacedHundred: ratio(CPU_SCENARIOS.pacedHundred),
  };
}

function resumeInProgress(text: string | null): Map<string, number> {
  const table = tableIn(text, 'resume-latency — a run in progress');
  const p50 = new Map<string, number>();
  for (const row of table?.rows ?? []) {
    p50.set(`${row[0]} / ${row[1]}`, printedNumber(row[table!.header.indexOf('first p50 ms')]));
  }
  return p50;
}

function resumeFigures(directory: string, node: '24' | '20'): PassFigures['resume']['24'] {
  const postgres = resumeInProgress(readStep(directory, `resume-pg${node}`));
  const pglite = resumeInProgress(readStep(directory, `resume-pglite${node}`));
  const of = (figures: Map<string, number>, key: string) => figures.get(key) ?? Number.NaN;
  return {
    same: of(postgres, 'Outrun / same'),
    other: of(postgres, 'Outrun / other'),
    bSame: of(postgres, 'B: A + resumable-stream / same'),
    bOther: of(postgres, 'B: A + resumable-stream / other'),
    // One PGlite process has no other instance: its row says `–`.
    pgliteSame: pglite.get('Outrun / –') ?? of(pglite, 'Outrun / same'),
  };
}

/** The most steal `log.txt` reports for a step (`… end HH:MM:SS rc 0, steal N % of the CPU time`). */
export function maxStealPercent(log: string | null): number {
  const steals = [...(log ?? '').matchAll(/steal (\d+(?:\.\d+)?) % of the CPU time/g)].map((match) =>
    Number(match[1]),
  );
  return steals.length === 0 ? Number.NaN : Math.max(...steals);
}

/** Reads every figure of one scorecard pass from its directory. */
export function readPass(directory: string): PassFigures {
  const step = (name: string) => readStep(directory, name);
  const cpu = (node: '24' | '20') => ({
    postgres: cpuRatios(step(`cpu-pg${node}`), 'ratio incl. PostgreSQL'),
    floor: cpuRatios(step(`cpu-pg${node}`), 'floor ratio incl. PostgreSQL'),
    pglite: cpuRatios(step(`cpu-pglite${node}`), 'ratio'),
  });
  const fanOut = tableIn(step('fanout-pg24'), 'fan-out');
  const storage = tableIn(step('storage-pg24'), 'storage — ');
  const scaleOut = tableIn(step('scaleout24'), 'scale-out');
  return {
    directory,
    maxStealPercent: maxStealPercent(step('log')),
    paced: { '24': pacedFigures(step('paced24')), '20': pacedFigures(step('paced20')) },
    cpu: { '24': cpu('24'), '20': cpu('20') },
    resume: { '24': resumeFigures(directory, '24'), '20': resumeFigures(directory, '20') },
    fanOut: fanOut
      ? printedNumber(cellOf(fanOut, (cells) => cells[0]!.startsWith('Outrun'), 'ratio to floor'))
      : Number.NaN,
    storage: {
      scripted: storage ? printedNumber(cellOf(storage, 'scripted', 'pages ×text')) : Number.NaN,
      prose: storage ? printedNumber(cellOf(storage, 'prose', 'pages ×text')) : Number.NaN,
    },
    scaleOut: new Map(
      (scaleOut?.rows ?? []).map((row) => [
        printedNumber(row[0]),
        printedNumber(row[scaleOut!.header.indexOf('delivered tok/s')]),
      ]),
    ),
  };
}
