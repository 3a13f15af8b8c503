/**
 * What a server costs while nothing happens: CPU time and wake-ups per second of an idle server process (and,
 * on PostgreSQL, of the database backends serving it), the plain pipe beside Outrun. An idle Outrun process
 * still polls (schedules, webhooks, the sweep), samples its event loop (admission, metrics) and keeps its
 * pool; each of those wakes the process, and on a virtual machine a wake-up is dear. It also counts in every
 * other benchmark's CPU: a lone paced stream runs 20 s, and its server's idle cost is in those 20 s.
 *
 *   npx tsx bench/idle-cpu.ts [--store pglite|postgres] [--quick]
 *
 * Each server runs in a child process (server-process.ts) with the benchmark's own sampling in it turned off
 * (`BENCH_SERVER_SAMPLING=off`: no RSS timer, no loop-delay histogram), answers one request (Outrun: a
 * one-token run, to its end; the pipe: one chat), as a server in service has, is left alone 45 s (the
 * garbage collection that follows a request dies down), then measured over 30 s (5 and 10 with `--quick`).
 * Outrun is then scraped once at `/metrics`, as Prometheus would (which starts Node's default metrics), and
 * measured again after the same pause. Wake-ups are the process's voluntary context switches, every
 * thread's (`/proc/<pid>/task/<tid>/status`): each is a thread that went to sleep with nothing to do and
 * was woken again. Outrun's configuration can be varied through the environment (`OUTRUN_…`), which the
 * servers inherit.
 */
import { BenchApi } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { voluntarySwitches } from './support/host-cpu.ts';
import { launchServer, type ServerProcess } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
import { createBenchStore, postgresBackendCpuMicros, type BenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const args = parseBenchArgs();
// V8 goes on collecting garbage for half a minute after the last request (its memory reducer): measured
// 3 s after one, an idle pipe used 11–15 ms of CPU a second, 45 s after it 0.3.
const settleMs = args.quick ? 5_000 : 45_000;
const measureMs = args.quick ? 10_000 : 30_000;

interface IdleCost {
  label: string;
  serverCpuMsPerS: number;
  databaseCpuMsPerS: number | null;
  wakeUpsPerS: number | null;
}

async function measureIdle(
  label: string,
  server: ServerProcess,
  serve: () => Promise<unknown>,
  store?: BenchStore,
): Promise<IdleCost> {
  await serve();
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const databaseUrl = store?.kind === 'postgres' ? store.env.DATABASE_URL : undefined;
  const cpuBefore = (await server.stats()).cpuMicros;
  const databaseBefore = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
  const switchesBefore = voluntarySwitches(server.pid);
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, measureMs));
  const seconds = (performance.now() - started) / 1000;
  const cpuAfter = (await server.stats()).cpuMicros;
  const databaseAfter = databaseUrl ? await postgresBackendCpuMicros(databaseUrl) : null;
  const switchesAfter = voluntarySwitches(server.pid);
  return {
    label,
    serverCpuMsPerS: (cpuAfter - cpuBefore) / 1000 / seconds,
    databaseCpuMsPerS:
      databaseBefore !== null && databaseAfter !== null
        ? (databaseAfter - databaseBefore) / 1000 / seconds
        : null,
    wakeUpsPerS:
      switchesBefore !== null && switchesAfter !== null ? (switchesAfter - switchesBefore) / seconds : null,
  };
}

const quiet = { BENCH_SERVER_SAMPLING: 'off' };
const script = JSON.stringify({ script: { steps: 1, tokens: 1, tool: false } });

/** One chat request to the plain pipe, read to its end. */
async function chatOnce(server: ServerProcess): Promise<void> {
  const result = await streamSse({
    url: `${server.url}/chat`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: script }),
  });
  if (!result.done) throw new Error('the pipe did not finish its one chat');
}
const store = await createBenchStore(args.store);
printHeader('idle-cpu', {
  store: store.description,
  measured: `${measureMs / 1000} s per server, ${settleMs / 1000} s after it is ready`,
});
const results: IdleCost[] = [];
try {
  const pipe = await launchServer({ mode: 'plain', env: quiet });
  try {
    results.push(await measureIdle('A: AI SDK pipe', pipe, () => chatOnce(pipe)));
  } finally {
    await pipe.close();
  }
  const outrun = await launchServer({ mode: 'outrun', store, env: quiet });
  try {
    const api = new BenchApi(outrun.url);
    const label = `Outrun, ${store.kind === 'postgres' ? 'PostgreSQL' : 'PGlite'}`;
    const oneRun = async () => api.waitForRun((await api.startRun(await api.createChat(), script)).id);
    results.push(await measureIdle(label, outrun, oneRun, store));
    // Node's default metrics start at the first scrape (their event-loop histogram samples every 10 ms).
    const scrape = async () => {
      const response = await fetch(`${outrun.url}/metrics`);
      if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
      await response.text();
    };
    results.push(await measureIdle(`${label}, after one /metrics scrape`, outrun, scrape, store));
  } finally {
    await outrun.close();
  }
} finally {
  await store.cleanup();
}

const rows: Cell[][] = results.map((result) => [
  result.label,
  result.serverCpuMsPerS,
  result.databaseCpuMsPerS,
  result.wakeUpsPerS,
]);
printTable({
  title: `idle-cpu — ${store.kind}, ${process.version}`,
  columns: ['server', 'server CPU ms/s', 'PostgreSQL CPU ms/s', 'server wake-ups/s'],
  rows,
  digits: [0, 2, 2, 0],
  notes: [
    "An idle server, nobody connected (the last row: once Prometheus has scraped it, which starts Node's default metrics): CPU time (user + system) per second of wall time, of the server process and of the PostgreSQL backends serving it (/proc, 10 ms ticks), and the voluntary context switches of all its threads per second. 10 ms of CPU a second is 1 % of a core.",
  ],
});
