/**
 * Issue 10's goals over several scorecard passes: each goal's ratio in each pass (ratios taken within a pass,
 * where every target ran in the same minutes), their median, and whether the median meets the goal; then the
 * same ratios for the durable floor (the plain pipe plus a group-committed PostgreSQL log), which says whether
 * a goal is in reach of any server that delivers only what is durable.
 *
 *   npx tsx bench/goals.ts bench/passes/<pass>/scorecard [more scorecard directories…]
 *
 * Reads what `bench/scorecard.sh DIR` wrote (bench/support/scorecard-figures.ts); runs nothing. Node 24 unless
 * a row says Node 20; PostgreSQL unless it says PGlite.
 */
import { basename, dirname } from 'node:path';
import {
  readPass,
  type CpuRatios,
  type PacedFigures,
  type PassFigures,
} from './support/scorecard-figures.ts';
import { median } from './support/stats.ts';
import { formatNumber, printTable, type Cell } from './support/table.ts';

const directories = process.argv.slice(2);
if (directories.length === 0 || directories.some((arg) => arg.startsWith('-'))) {
  console.error('usage: npx tsx bench/goals.ts SCORECARD_DIRECTORY [SCORECARD_DIRECTORY…]');
  process.exit(2);
}
const passes = directories.map(readPass);

/** A goal's figure: its value in a pass (NaN when the pass lacks it) and the bound it must keep. */
interface Goal {
  goal: string;
  figure: string;
  /** `at most` the bound, or `at least`. */
  sense: 'at most' | 'at least';
  bound: number;
  value: (pass: PassFigures) => number;
}

const ratio = (numerator: number | undefined, denominator: number | undefined) =>
  numerator === undefined || denominator === undefined ? Number.NaN : numerator / denominator;

const SCENARIOS: [keyof CpuRatios, string][] = [
  ['oneStream', 'one stream'],
  ['tenStreams', '10 streams'],
  ['pacedHundred', '100 paced runs of 100 tokens'],
];

function cpuGoals(node: '24' | '20', store: 'postgres' | 'pglite' | 'floor'): Goal[] {
  const label = { postgres: 'PostgreSQL', pglite: 'PGlite', floor: 'the floor' }[store];
  const goals: Goal[] = SCENARIOS.map(([scenario, name]) => ({
    goal: '3',
    figure: `CPU per token ÷ the pipe's, ${label}, Node ${node}, ${name}`,
    sense: 'at most',
    bound: 1.2,
    value: (pass) => pass.cpu[node][store][scenario],
  }));
  // paced-load's lone stream: every token a commit of its own (cpu-per-token's streams are not paced).
  goals.push({
    goal: '3',
    figure: `the same, one run alone at 50 tokens/s (paced-load; idle work included), ${label}, Node ${node}`,
    sense: 'at most',
    bound: 1.2,
    value: (pass) => pass.paced[node][store]?.loneStreamCpu ?? Number.NaN,
  });
  return goals;
}

/** Goals 1, 2a and 2b: a figure of the paced wave, its bound and which way it must keep it. */
const PACED_GOALS: [
  goal: string,
  figure: string,
  sense: Goal['sense'],
  bound: number,
  key: keyof PacedFigures,
][] = [
  ['1', 'first token p50 at 100 starts', 'at most', 2, 'ttftP50'],
  ['1', 'first token p99 at 100 starts', 'at most', 1.5, 'ttftP99'],
  ['2a', 'schedule latency p99 at 100 runs', 'at most', 1, 'scheduleP99'],
  ['2b', 'runs completed of 500 in 40 s', 'at least', 1, 'completedOf500'],
];

/** Goals 1, 2a and 2b for one target of the paced wave, ÷ the pipe's in the same pass. */
function pacedGoals(target: 'postgres' | 'floor', node: '24' | '20'): Goal[] {
  const suffix = node === '24' ? '' : `, Node ${node}`;
  return PACED_GOALS.map(([goal, figure, sense, bound, key]) => ({
    goal,
    figure: `${figure} ÷ the pipe's${suffix}`,
    sense,
    bound,
    value: (pass) => ratio(pass.paced[node][target]?.[key], pass.paced[node].pipe?.[key]),
  }));
}

const outrunGoals: Goal[] = [
  ...pacedGoals('postgres', '24'),
  ...pacedGoals('postgres', '20'),
  ...[2, 4].map((processes): Goal => ({
    goal: '2',
    figure: `scale-out: tokens/s delivered by ${processes} processes ÷ (${processes} × one's)`,
    sense: 'at least',
    bound: 0.9,
    value: (pass) => ratio(pass.scaleOut.get(processes), processes * (pass.scaleOut.get(1) ?? Number.NaN)),
  })),
  ...cpuGoals('24', 'postgres'),
  ...cpuGoals('20', 'postgres'),
  ...cpuGoals('24', 'pglite'),
  ...cpuGoals('20', 'pglite'),
  {
    goal: '4',
    figure: 'stored per finished 1,000-token run ÷ its text, scripted answer',
    sense: 'at most',
    bound: 3,
    value: (pass) => pass.storage.scripted,
  },
  {
    goal: '4',
    figure: 'stored per finished 1,000-token run ÷ its text, prose answer',
    sense: 'at most',
    bound: 3,
    value: (pass) => pass.storage.prose,
  },
  ...(['24', '20'] as const).flatMap((node): Goal[] => [
    {
      goal: '5a',
      figure: `resume of a run in progress, same instance, first event p50 (ms), Node ${node}`,
      sense: 'at most',
      bound: 5,
      value: (pass) => pass.resume[node].same,
    },
    {
      goal: '5a',
      figure: `the same, PGlite, Node ${node}`,
      sense: 'at most',
      bound: 5,
      value: (pass) => pass.resume[node].pgliteSame,
    },
    {
      goal: '5a',
      figure: `resume of a run in progress, other instance ÷ B's other instance, Node ${node}`,
      sense: 'at most',
      bound: 1,
      value: (pass) => ratio(pass.resume[node].other, pass.resume[node].bOther),
    },
  ]),
  {
    goal: '5b',
    figure: 'fan-out: extra CPU per reader-token ÷ the bare floor',
    sense: 'at most',
    bound: 2,
    value: (pass) => pass.fanOut,
  },
];

const floorGoals: Goal[] = [
  ...pacedGoals('floor', '24'),
  ...cpuGoals('24', 'floor'),
  ...cpuGoals('20', 'floor'),
];

const passName = (pass: PassFigures) => basename(dirname(pass.directory)) || pass.directory;

function goalRows(goals: Goal[]): Cell[][] {
  return goals.map((goal) => {
    const values = passes.map((pass) => goal.value(pass));
    const present = values.filter((value) => Number.isFinite(value));
    const middle = median(present);
    const met =
      present.length === 0
        ? '–'
        : (goal.sense === 'at most' ? middle <= goal.bound : middle >= goal.bound)
          ? 'yes'
          : 'no';
    const digits = 2;
    return [
      goal.goal,
      goal.figure,
      `${goal.sense === 'at most' ? '≤' : '≥'} ${goal.bound}`,
      ...values.map((value) => formatNumber(value, digits)),
      formatNumber(middle, digits),
      met,
    ];
  });
}

const columns = ['goal', 'figure', 'goal bound', ...passes.map(passName), 'median', 'met'];
console.log(`## Issue 10's goals over ${passes.length} scorecard pass${passes.length === 1 ? '' : 'es'}\n`);
for (const pass of passes) {
  const steal = Number.isFinite(pass.maxStealPercent) ? `${pass.maxStealPercent} %` : 'not recorded';
  console.log(`- ${passName(pass)} (${pass.directory}): the most CPU time stolen in any step: ${steal}`);
}
printTable({
  title: 'Outrun, each goal in each pass, ratios within the pass',
  columns,
  rows: goalRows(outrunGoals),
  notes: [
    'Each ratio is taken within a pass (every target measured in the same minutes); the median is of the passes’ ratios, and `met` says whether it keeps the goal’s bound. `–`: the pass has no such figure. Scale-out is judged as delivering at least 90 % of N times one process’s tokens/s.',
  ],
});
printTable({
  title: 'The durable floor (the pipe plus a group-committed PostgreSQL log), the same ratios',
  columns,
  rows: goalRows(floorGoals),
  notes: [
    'A goal the floor misses is one no server that delivers only durable events has met on this machine; one it meets and Outrun misses is Outrun’s own cost.',
  ],
});
