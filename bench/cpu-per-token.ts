/**
 * Server CPU per 1,000 streamed tokens: Outrun (every chunk persisted to the event log, then delivered over
 * SSE) against the floor, a plain `streamText` → `pipeUIMessageStreamToResponse` server on bare node:http
 * with no auth and no persistence (bench/support/plain-pipe-server.ts). Same scripted model, same scripts.
 *
 *   npx tsx bench/cpu-per-token.ts [--store pglite|postgres] [--quick]
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
 */
import { BenchApi, forEachLimit } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { BENCH_ADMIN_KEY, launchServer, type ServerProcess } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
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

const args = parseBenchArgs();
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

const warmUp: Scenario = { label: 'warm-up', runs: 3, concurrency: 1, tokens: 1000, delayMs: 0 };

const script = (scenario: Scenario) =>
  JSON.stringify({ script: { steps: 1, tokens: scenario.tokens, delayMs: scenario.delayMs, tool: false } });

interface Result {
  cpuMs: number;
  databaseCpuMs: number | null;
  seconds: number;
}

const store = await createBenchStore(args.store);
printHeader('cpu-per-token', {
  store: store.description,
  model: 'scripted (src/agent/scripted-model.ts), one step, no tool',
});

const results = new Map<string, { outrun?: Result; plain?: Result; durable?: Result }>();
const withFloor = args.store === 'postgres';

/** The warm-up, then every scenario on one server, each result kept under `target` and printed. */
async function measureScenarios(
  target: 'outrun' | 'plain' | 'durable',
  label: string,
  measureOne: (scenario: Scenario) => Promise<Result>,
): Promise<void> {
  await measureOne(warmUp);
  for (const scenario of [...scenarios, perRunScenario]) {
    const result = await measureOne(scenario);
    results.set(scenario.label, { ...results.get(scenario.label), [target]: result });
    const database =
      result.databaseCpuMs === null
        ? ''
        : ` + ${perThousand(result.databaseCpuMs, scenario).toFixed(1)} PostgreSQL`;
    console.log(
      `${label}, ${scenario.label}: ${perThousand(result.cpuMs, scenario).toFixed(1)} ms CPU per 1,000 tokens${database}`,
    );
  }
}

try {
  const outrun = await launchServer({ mode: 'outrun', store });
  try {
    const api = new BenchApi(outrun.url);
    await measureScenarios('outrun', 'Outrun', (scenario) => runOutrunScenario(outrun, api, store, scenario));
  } finally {
    await outrun.close();
  }

  const plain = await launchServer({ mode: 'plain' });
  try {
    await measureScenarios('plain', 'plain pipe', (scenario) =>
      runPipeScenario(plain, undefined, 'plain', scenario),
    );
  } finally {
    await plain.close();
  }

  if (withFloor) {
    const floorStore = await createBenchStore('postgres');
    try {
      const durable = await launchServer({ mode: 'durable', store: floorStore });
      try {
        await measureScenarios('durable', 'durable floor', (scenario) =>
          runPipeScenario(durable, floorStore, 'durable', scenario),
        );
      } finally {
        await durable.close();
      }
    } finally {
      await floorStore.cleanup();
    }
  }
} finally {
  await store.cleanup();
}

const rows: Cell[][] = scenarios.map((scenario) => {
  const { outrun, plain, durable } = results.get(scenario.label)!;
  const outrunPer = perThousand(outrun!.cpuMs, scenario);
  const plainPer = perThousand(plain!.cpuMs, scenario);
  const floor: Cell[] = withFloor
    ? [
        perThousand(durable!.cpuMs, scenario),
        durable!.databaseCpuMs === null ? null : perThousand(durable!.databaseCpuMs, scenario),
        durable!.databaseCpuMs === null
          ? null
          : (perThousand(durable!.cpuMs, scenario) + perThousand(durable!.databaseCpuMs, scenario)) /
            plainPer,
      ]
    : [];
  return [
    scenario.label,
    scenario.runs,
    scenario.tokens,
    outrunPer,
    outrun!.databaseCpuMs === null ? null : perThousand(outrun!.databaseCpuMs, scenario),
    plainPer,
    outrunPer / plainPer,
    outrun!.databaseCpuMs === null
      ? null
      : (outrunPer + perThousand(outrun!.databaseCpuMs, scenario)) / plainPer,
    ...floor,
  ];
});
printTable({
  title: `cpu-per-token — ${args.store}, ${process.version}`,
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
  ],
});

{
  const { outrun, plain, durable } = results.get(perRunScenario.label)!;
  const runs = perRunScenario.runs;
  const database = outrun!.databaseCpuMs === null ? null : outrun!.databaseCpuMs / runs;
  const floor: Cell[] = withFloor
    ? [
        durable!.cpuMs / runs,
        durable!.databaseCpuMs === null ? null : durable!.databaseCpuMs / runs,
        (durable!.seconds * 1000) / runs,
      ]
    : [];
  printTable({
    title: `cpu-per-token — the fixed cost of a run, ${args.store}, ${process.version}`,
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
        outrun!.cpuMs / runs,
        database,
        plain!.cpuMs / runs,
        (outrun!.seconds * 1000) / runs,
        (plain!.seconds * 1000) / runs,
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
  scenario: Scenario,
): Promise<Result> {
  const chats = await api.createChats(scenario.runs);
  const text = script(scenario);
  return measure(server, benchStore, benchStore.kind, scenario, (index) =>
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
