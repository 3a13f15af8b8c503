/**
 * Resume latency: a reader reconnects to a finished run of 10,000 events with `Last-Event-ID: N` and reads
 * the rest; how long until its first event, and until the whole remainder (through `data: [DONE]`).
 *
 *   npx tsx bench/resume-latency.ts [--store pglite|postgres] [--quick]
 *
 * The server runs in a child process; the reader in this process opens a fresh TCP connection per attempt
 * (as a reconnecting browser does), so the times include connect, auth, the ownership check, the replay
 * reads (a first page of 100 events, then pages of 1,000) and the SSE writes. N = 0, 5,000 and 9,990, repeated;
 * p50/p99/max.
 *
 * With `BENCH_REDIS_URL` set and `--store postgres`, a second Outrun process shares the database and Redis (the
 * scale-out deployment): the run executes on the first, and the same reconnects go to both, so the table also
 * shows a resume on another instance than the one that ran the run (its bus subscription is a Redis round trip).
 */
import { BenchApi } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { launchServer, type ServerProcess } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
import { Sample } from './support/stats.ts';
import { createBenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const args = parseBenchArgs();
const RUN_EVENTS = 10_000;
const resumePoints = [0, 5000, 9990];
const repeats = args.quick ? 10 : 50;

const script = (tokens: number) => JSON.stringify({ script: { steps: 1, tokens, delayMs: 0, tool: false } });

const store = await createBenchStore(args.store);
printHeader('resume-latency', {
  store: store.description,
  run: `${RUN_EVENTS} events (scripted model, one step), ${repeats} reconnects per point, reader in the benchmark process`,
});

const redisUrl = process.env.BENCH_REDIS_URL;
const twoInstances = Boolean(redisUrl) && args.store === 'postgres';

const rows: Cell[][] = [];
try {
  // Each process runs the worker too; the second one starts only after the run has finished (below).
  const server = await launchServer({ mode: 'outrun', store });
  let other: ServerProcess | undefined;
  try {
    const api = new BenchApi(server.url);
    const streamUrl = (runId: string, url = server.url) => `${url}/v1/runs/${runId}/stream`;

    // A short run tells how many events a run has beyond its text deltas.
    const probe = await api.startRun(await api.createChat(), script(5));
    await api.waitForRun(probe.id);
    const overhead = (await streamSse({ url: streamUrl(probe.id), headers: api.authorization() })).lastId - 5;

    const run = await api.startRun(await api.createChat(), script(RUN_EVENTS - overhead));
    await api.waitForRun(run.id);
    const whole = await streamSse({ url: streamUrl(run.id), headers: api.authorization() });
    if (whole.lastId !== RUN_EVENTS || !whole.done) {
      throw new Error(`the benchmark run has ${whole.lastId} events, expected ${RUN_EVENTS}`);
    }

    const targets = [{ label: twoInstances ? 'same' : '–', url: server.url }];
    if (twoInstances) {
      other = await launchServer({ mode: 'outrun', store });
      targets.push({ label: 'other', url: other.url });
    }

    for (const after of resumePoints) {
      for (const target of targets) {
        const first = new Sample();
        const all = new Sample();
        for (let attempt = 0; attempt < repeats; attempt++) {
          let firstId = -1;
          const result = await streamSse({
            url: streamUrl(run.id, target.url),
            headers: { ...api.authorization(), 'last-event-id': String(after) },
            onEvent(id) {
              if (firstId === -1) firstId = id;
            },
          });
          if (firstId !== after + 1 || result.events !== RUN_EVENTS - after || !result.done) {
            throw new Error(
              `resume after ${after}: first ${firstId}, ${result.events} events, done ${result.done}`,
            );
          }
          first.add(result.firstEventAt! - result.sentAt);
          all.add(result.endedAt - result.sentAt);
        }
        const firstSummary = first.summary();
        const allSummary = all.summary();
        rows.push([
          target.label,
          after,
          RUN_EVENTS - after,
          firstSummary.p50,
          firstSummary.p99,
          firstSummary.max,
          allSummary.p50,
          allSummary.p99,
          allSummary.max,
          (RUN_EVENTS - after) / (allSummary.p50 / 1000),
        ]);
        console.log(
          `Last-Event-ID ${after} (${target.label} instance): first event p50 ${firstSummary.p50.toFixed(2)} ms, all p50 ${allSummary.p50.toFixed(2)} ms`,
        );
      }
    }
  } finally {
    await other?.close();
    await server.close();
  }
} finally {
  await store.cleanup();
}

printTable({
  title: `resume-latency — ${args.store}, ${process.version}, run of ${RUN_EVENTS} events, ${repeats} reconnects each`,
  columns: [
    'instance',
    'Last-Event-ID',
    'events sent',
    'first p50 ms',
    'first p99 ms',
    'first max ms',
    'all p50 ms',
    'all p99 ms',
    'all max ms',
    'replay events/s',
  ],
  rows,
  digits: [0, 0, 0, 2, 2, 2, 2, 2, 2, 0],
  notes: [
    '`first`: request sent → first event received; `all`: request sent → `data: [DONE]` received.',
    twoInstances
      ? '`same`: the instance that ran the run; `other`: a second instance on the same PostgreSQL and Redis.'
      : 'One embedded instance (set BENCH_REDIS_URL with --store postgres to add a second instance).',
  ],
});
