/**
 * Server CPU per 1,000 streamed tokens: Outrun (every chunk persisted to the event log, then delivered over
 * SSE) against the floor, a plain `streamText` → `pipeUIMessageStreamToResponse` server on bare node:http
 * with no auth and no persistence (bench/support/plain-pipe-server.ts). Same scripted model, same scripts.
 *
 *   npx tsx bench/cpu-per-token.ts [--store pglite|postgres] [--quick] [--rounds N]
 *
 * Each server runs alone in a child process; its CPU time (process.cpuUsage, user + system) is read over IPC
 * before and after each scenario, so the client's work is excluded. Outrun runs are started and read in one
 * request (`POST /v1/chats/:id/runs` with `Accept: text/event-stream`); chats are created beforehand. A
 * scenario ends when every stream has sent `data: [DONE]`, which Outrun sends after the run is settled.
 * On PostgreSQL, the CPU of the database backends is shown separately (PGlite runs inside the server).
 * A second table gives the fixed cost of a run: one-token runs one after another, CPU and wall time per run.
 * With `--store postgres` both tables also show the durable floor (bench/support/durable-pipe-server.ts: the
 * plain pipe plus a group-committed PostgreSQL log, each chunk delivered once its insert has committed), on its
 * own server process and database, with the CPU of its PostgreSQL backends.
 *
 * With `--rounds N` every server is measured N times, each round beginning with the next one in turn, and the
 * tables give medians: each ratio the median of the rounds' own ratios, with a table of each round's. On this
 * 2-core guest one run's ratios moved by up to half from one minute to the next (docs/benchmarks.md), more
 * than most changes they are meant to show.
 */
import { BenchApi, forEachLimit } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { BENCH_ADMIN_KEY, launchServer, type ServerProcess } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
import { median } from './support/stats.ts';
import { createBenchStore, postgresBackendCpuMicros, type BenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

interface Scenario {
  label: string;
  runs: number;
  concurrency: number;
  tokens: number;
  delayMs: number;
  /** How long to go on counting after the last stream ended (the runs' background work: compaction). */
  tailMs?: number;
}

const args = parseBenchArgs({ withRounds: true });
const scenarios: Scenario[] = args.quick
  ? [
      { label: 'one stream at a time', runs: 5, concurrency: 1, tokens: 1000, delayMs: 0 },
      { label: '20 paced streams', runs: 20, concurrency: 20, tokens: 100, delayMs: 20 },
    ]
  : [
      { label: 'one stream at a time', runs: 20, concurrency: 1, tokens: 1000, delayMs: 0 },
      { label: '10 concurrent streams', runs: 40, concurrency: 10, tokens: 1000, delayMs: 0 },
      { label: '100 paced streams (20 ms/token)', runs: 100, concurrency: 100, tokens: 100, delayMs: 20 },
    ];

/**
 * The fixed cost of a run, apart from its tokens: one-token runs one after another (start, settle and
 * compaction; the pipe has only its request). Counted until 1.5 s after the last one, so compaction is in.
 */
const perRunScenario: Scenario = {
  label: 'one-token runs, one at a time',
  runs: args.quick ? 50 : 300,
  concurrency: 1,
  tokens: 1,
  delayMs: 0,
  tailMs: 1_500,
};

/**
 * Before any figure, each server runs long streams and short runs until its code is compiled: on Node 24 an
 * Outrun server's first 20 streams of 1,000 tokens cost it about twice what the ones after them did
 * (docs/benchmarks.md, "CPU per token in rounds, on servers warmed up").
 */
const warmUps: Scenario[] = [
  { label: 'warm-up', runs: args.quick ? 3 : 40, concurrency: 1, tokens: 1000, delayMs: 0 },
  { label: 'warm-up, one-token runs', runs: args.quick ? 5 : 50, concurrency: 1, tokens: 1, delayMs: 0 },
];

const script = (scenario: Scenario) =>
  JSON.stringify({ script: { steps: 1, tokens: scenario.tokens, delayMs: scenario.delayMs, tool: false } });

interface Result {
  cpuMs: number;
  databaseCpuMs: number | null;
  seconds: number;
}

const rounds = args.rounds ?? 1;
const store = await createBenchStore(args.store);
printHeader('cpu-per-token', {
  store: store.description,
  model: 'scripted (src/agent/scripted-model.ts), one step, no tool',
  rounds: String(rounds),
});

type Target = 'outrun' | 'plain' | 'durable';
const withFloor = args.store === 'postgres';
const targets: Target[] = withFloor ? ['outrun', 'plain', 'durable'] : ['outrun', 'plain'];
const targetNames: Record<Target, string> = {
  outrun: 'Outrun',
  plain: 'plain pipe',
  durable: 'durable floor',
};
/** Each scenario's results per target, one per round, in round order. */
const results = new Map<string, Record<Target, Result[]>>();

/** The warm-up, then every scenario on one server; each result is kept under `target`, in round order. */
async function measureScenarios(
  target: Target,
  round: number,
  measureOne: (scenario: Scenario, profileName: string) => Promise<Result>,
): Promise<void> {
  const prefix = rounds > 1 ? `round ${round + 1}, ` : '';
  const profileName = `${target === 'outrun' ? store.kind : target}${rounds > 1 ? `-round${round + 1}` : ''}`;
  for (const warmUp of warmUps) await measureOne(warmUp, profileName);
  for (const scenario of [...scenarios, perRunScenario]) {
    const result = await measureOne(scenario, profileName);
    const kept = results.get(scenario.label) ?? { outrun: [], plain: [], durable: [] };
    kept[target][round] = result;
    results.set(scenario.label, kept);
    const database =
      result.databaseCpuMs === null
        ? ''
        : ` + ${perThousand(result.databaseCpuMs, scenario).toFixed(1)} PostgreSQL`;
    console.log(
      `${prefix}${targetNames[target]}, ${scenario.label}: ${perThousand(result.cpuMs, scenario).toFixed(1)} ms CPU per 1,000 tokens${database}`,
    );
  }
}

/** One target's server, launched afresh, through every scenario. */
async function measureTarget(target: Target, round: number): Promise<void> {
  if (target === 'outrun') {
    const outrun = await launchServer({ mode: 'outrun', store });
    try {
      const api = new BenchApi(outrun.url);
      await measureScenarios(target, round, (scenario, name) =>
        runOutrunScenario(outrun, api, store, name, scenario),
      );
    } finally {
      await outrun.close();
    }
    return;
  }
  const floorStore = target === 'durable' ? await createBenchStore('postgres') : undefined;
  try {
    const server = await launchServer(
      floorStore ? { mode: 'durable', store: floorStore } : { mode: 'plain' },
    );
    try {
      await measureScenarios(target, round, (scenario, name) =>
        runPipeScenario(server, floorStore, name, scenario),
      );
    } finally {
      await server.close();
    }
  } finally {
    await floorStore?.cleanup();
  }
}

try {
  for (let round = 0; round < rounds; round++) {
    // Each round begins with the next target, so that no target is always the one measured right after a
    // server's start-up, or after whatever the machine did before the benchmark.
    for (let index = 0; index < targets.length; index++) {
      await measureTarget(targets[(index + round) % targets.length]!, round);
    }
  }
} finally {
  await store.cleanup();
}

/** Per round: the figure `of` gives for one scenario's results of that round. */
const perRound = (label: string, of: (round: Record<Target, Result>) => number | null): (number | null)[] => {
  const kept = results.get(label)!;
  return kept.outrun.map((_, round) =>
    of({ outrun: kept.outrun[round]!, plain: kept.plain[round]!, durable: kept.durable[round]! }),
  );
};
/** The median over the rounds of a figure (null where a round has none). */
const medianOf = (values: (number | null)[]): number | null =>
  values.some((value) => value === null) ? null : median(values as number[]);

const perToken = (scenario: Scenario) => ({
  cpu: (result: Result) => perThousand(result.cpuMs, scenario),
  database: (result: Result) =>
    result.databaseCpuMs === null ? null : perThousand(result.databaseCpuMs, scenario),
  /** (server + its PostgreSQL) ÷ the plain pipe's server, within one round. */
  ratio: (result: Result, plain: Result) =>
    result.databaseCpuMs === null ? null : (result.cpuMs + result.databaseCpuMs) / plain.cpuMs,
});

const rows: Cell[][] = scenarios.map((scenario) => {
  const of = perToken(scenario);
  const figure = (pick: (round: Record<Target, Result>) => number | null) =>
    medianOf(perRound(scenario.label, pick));
  const floor: Cell[] = withFloor
    ? [
        figure((round) => of.cpu(round.durable)),
        figure((round) => of.database(round.durable)),
        figure((round) => of.ratio(round.durable, round.plain)),
      ]
    : [];
  return [
    scenario.label,
    scenario.runs,
    scenario.tokens,
    figure((round) => of.cpu(round.outrun)),
    figure((round) => of.database(round.outrun)),
    figure((round) => of.cpu(round.plain)),
    figure((round) => round.outrun.cpuMs / round.plain.cpuMs),
    figure((round) => of.ratio(round.outrun, round.plain)),
    ...floor,
  ];
});
const ofRounds = rounds > 1 ? `, the median of ${rounds} rounds` : '';
printTable({
  title: `cpu-per-token — ${args.store}, ${process.version}${ofRounds}`,
  columns: [
    'scenario',
    'runs',
    'tokens/run',
    'Outrun ms/1k tok',
    'PostgreSQL ms/1k tok',
    'plain pipe ms/1k tok',
    'ratio',
    'ratio incl. PostgreSQL',
    ...(withFloor
      ? ['durable floor ms/1k tok', 'its PostgreSQL ms/1k tok', 'floor ratio incl. PostgreSQL']
      : []),
  ],
  rows,
  digits: [0, 0, 0, 1, 1, 1, 2, 2, ...(withFloor ? [1, 1, 2] : [])],
  notes: [
    'CPU is user + system time of the server process per 1,000 text deltas, including per-run work (start, ' +
      'settle) spread over the run’s tokens. `PostgreSQL` is the CPU of the database backends serving Outrun ' +
      '(PostgreSQL store only; PGlite’s work is inside the Outrun process). Target: ratio ≤ 2.',
    ...(withFloor
      ? [
          'Durable floor: the plain pipe plus a group-committed PostgreSQL log (bench/support/durable-pipe-server.ts), ' +
            'on its own database; `its PostgreSQL` is the CPU of that database’s backends. Floor ratio = ' +
            '(floor + its PostgreSQL) / plain pipe.',
        ]
      : []),
    ...(rounds > 1
      ? [
          `Each figure is the median of ${rounds} rounds; each ratio the median of the rounds’ own ratios (each ` +
            'round measures every server afresh, the first of them in turn).',
        ]
      : []),
  ],
});

if (rounds > 1) {
  const list = (values: (number | null)[]) =>
    values.map((value) => (value === null ? '–' : value.toFixed(2))).join(', ');
  printTable({
    title: `cpu-per-token — each round's ratio, ${args.store}, ${process.version}`,
    columns: [
      'scenario',
      store.kind === 'postgres' ? 'Outrun ÷ pipe incl. PostgreSQL' : 'Outrun ÷ pipe',
      ...(withFloor ? ['floor ÷ pipe incl. PostgreSQL'] : []),
    ],
    rows: scenarios.map((scenario) => {
      const of = perToken(scenario);
      return [
        scenario.label,
        list(
          perRound(scenario.label, (round) =>
            store.kind === 'postgres'
              ? of.ratio(round.outrun, round.plain)
              : round.outrun.cpuMs / round.plain.cpuMs,
          ),
        ),
        ...(withFloor
          ? [list(perRound(scenario.label, (round) => of.ratio(round.durable, round.plain)))]
          : []),
      ];
    }),
    digits: [0, 0, 0],
    notes: ['In round order.'],
  });
}

{
  const runs = perRunScenario.runs;
  const perRun = (pick: (round: Record<Target, Result>) => number | null) =>
    medianOf(perRound(perRunScenario.label, pick));
  const databasePerRun = (result: Result) =>
    result.databaseCpuMs === null ? null : result.databaseCpuMs / runs;
  const floor: Cell[] = withFloor
    ? [
        perRun((round) => round.durable.cpuMs / runs),
        perRun((round) => databasePerRun(round.durable)),
        perRun((round) => (round.durable.seconds * 1000) / runs),
      ]
    : [];
  printTable({
    title: `cpu-per-token — the fixed cost of a run, ${args.store}, ${process.version}${ofRounds}`,
    columns: [
      'scenario',
      'runs',
      'Outrun ms CPU/run',
      'PostgreSQL ms CPU/run',
      'plain pipe ms CPU/run',
      'Outrun ms wall/run',
      'plain pipe ms wall/run',
      ...(withFloor
        ? ['durable floor ms CPU/run', 'its PostgreSQL ms CPU/run', 'durable floor ms wall/run']
        : []),
    ],
    rows: [
      [
        perRunScenario.label,
        runs,
        perRun((round) => round.outrun.cpuMs / runs),
        perRun((round) => databasePerRun(round.outrun)),
        perRun((round) => round.plain.cpuMs / runs),
        perRun((round) => (round.outrun.seconds * 1000) / runs),
        perRun((round) => (round.plain.seconds * 1000) / runs),
        ...floor,
      ],
    ],
    digits: [0, 0, 2, 2, 2, 2, 2, ...(withFloor ? [2, 2, 2] : [])],
    notes: [
      'A run of one token, started and read in one request, then the next: what a run costs whatever its ' +
        'length (Outrun: authentication, the begin transaction, history, settle, step record, compaction; the ' +
        'pipe: its request; the durable floor: its request, the stream row’s insert and update, one batch ' +
        'insert). CPU counted until 1.5 s after the last run, so the runs’ compaction is in. ' +
        'Wall: request sent → `[DONE]` received.',
    ],
  });
}

function perThousand(cpuMs: number, scenario: Scenario): number {
  return (cpuMs / (scenario.runs * scenario.tokens)) * 1000;
}

async function runOutrunScenario(
  server: ServerProcess,
  api: BenchApi,
  benchStore: BenchStore,
  /** Names the profile (`BENCH_PROFILE_DIR`). */
  name: string,
  scenario: Scenario,
): Promise<Result> {
  const chats = await api.createChats(scenario.runs);
  const text = script(scenario);
  return measure(server, benchStore, name, scenario, (index) =>
    streamSse({
      url: `${server.url}/v1/chats/${chats[index]}/runs`,
      method: 'POST',
      headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ input: { text } }),
    }),
  );
}

/** The plain pipe (`benchStore` undefined) or the durable floor (its database in `benchStore`). */
async function runPipeScenario(
  server: ServerProcess,
  benchStore: BenchStore | undefined,
  name: string,
  scenario: Scenario,
): Promise<Result> {
  const body = JSON.stringify({ text: script(scenario) });
  return measure(server, benchStore, name, scenario, () =>
    streamSse({
      url: `${server.url}/chat`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    }),
  );
}

async function measure(
  server: ServerProcess,
  benchStore: BenchStore | undefined,
  /** Names the profile (`BENCH_PROFILE_DIR`). */
  name: string,
  scenario: Scenario,
  stream: (index: number) => ReturnType<typeof streamSse>,
): Promise<Result> {
  const databaseUrl = benchStore?.env.DATABASE_URL;
  const databaseBefore = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
  const before = await server.stats();
  await server.profile('start');
  const started = performance.now();
  await forEachLimit(
    Array.from({ length: scenario.runs }, (_, index) => index),
    scenario.concurrency,
    async (index) => {
      const result = await stream(index);
      if (!result.done) throw new Error(`a stream of "${scenario.label}" ended without [DONE]`);
    },
  );
  const seconds = (performance.now() - started) / 1000;
  if (scenario.tailMs) await new Promise((resolve) => setTimeout(resolve, scenario.tailMs));
  const after = await server.stats();
  await server.profile('stop', `cpu-per-token-${name}-${scenario.label.replace(/\W+/g, '-')}`);
  const databaseAfter = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
  return {
    cpuMs: (after.cpuMicros - before.cpuMicros) / 1000,
    databaseCpuMs:
      databaseBefore === null || databaseAfter === null ? null : (databaseAfter - databaseBefore) / 1000,
    seconds,
  };
}
