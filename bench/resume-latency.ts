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
 *
 * A second table resumes a run IN PROGRESS, side by side with target B (the AI SDK pipe plus `resumable-stream`
 * on Redis, the only baseline that can resume): a paced run (scripted model, 5 ms per token) is followed by one
 * reader, and meanwhile readers reconnect 50 events behind the live edge (Outrun: `Last-Event-ID`; B:
 * `resumeExistingStream` with the characters read so far skipped) and are closed at their first event; as many
 * reconnects on an earlier stream of their own warm the new servers up first, not counted. Each
 * reconnect is checked to start at exactly the next event. Outrun is also resumed as `useChat({ resume: true })`
 * does (`GET /v1/ui/chats/:chatId/stream`: the chat's active run, replayed from its first event). B runs on two
 * processes sharing a Redis (started by
 * the benchmark, or BENCH_REDIS_URL's), so it too has a same and an other instance; it is skipped, with a
 * message, when `resumable-stream` or Redis is missing.
 *
 * With `BENCH_NETWORK_DELAY_MS=N`, every server reaches PostgreSQL and Redis through a proxy that holds each
 * chunk N ms each way (bench/support/delay-proxy.ts): the stores as they are in a deployment, across a network,
 * where a resume's round trips to them count for more than on loopback.
 *
 * With `BENCH_PROFILE_DIR=dir`, the first server is profiled while it answers 2,000 more resumes after 9,990
 * (`dir/resume-latency-<store>-after-9990.cpuprofile`), and the last Outrun instance (the other one, with two)
 * while it answers 1,000 reconnects to a live run, 50 behind (`…-live-other.cpuprofile`).
 */
import { BenchApi } from './support/api.ts';
import { parseBenchArgs } from './support/args.ts';
import { printHeader } from './support/environment.ts';
import { networkDelayMs, startDelayProxy, type DelayProxy } from './support/delay-proxy.ts';
import { createBenchRedis } from './support/redis-server.ts';
import { importResumableStream } from './support/resumable-pipe-server.ts';
import { launchServer, type ServerProcess } from './support/server-process.ts';
import { streamSse } from './support/sse-client.ts';
import { Sample, wallNow } from './support/stats.ts';
import { createBenchStore } from './support/store.ts';
import { printTable, type Cell } from './support/table.ts';

const args = parseBenchArgs();
const RUN_EVENTS = 10_000;
const resumePoints = [0, 5000, 9990];
const repeats = args.quick ? 10 : 50;

const script = (tokens: number, delayMs = 0) =>
  JSON.stringify({ script: { steps: 1, tokens, delayMs, tool: false } });

/** The live table: how far behind the live edge a reader reconnects, and the run's pace. */
const LIVE_BEHIND = 50;
const LIVE_DELAY_MS = 5;
/** Events the first reader waits for before the first reconnect. */
const LIVE_WARM_EVENTS = 200;
/** Reconnects to each instance on a stream of their own before the measured ones (`measureLiveTarget`). */
const LIVE_WARM_RESUMES = repeats;
/** Resumes of the finished run, and of a live one, inside the profile windows (with BENCH_PROFILE_DIR). */
const PROFILED_RESUMES = 2000;
const PROFILED_LIVE_RESUMES = 1000;

const delayMs = networkDelayMs();
const proxies: DelayProxy[] = [];
/** `env` with its stores' addresses behind a delay proxy each, with `BENCH_NETWORK_DELAY_MS`. */
async function acrossNetwork(env: Record<string, string>): Promise<Record<string, string>> {
  if (delayMs === undefined) return env;
  const proxied = { ...env };
  for (const key of ['DATABASE_URL', 'REDIS_URL']) {
    if (!proxied[key]) continue;
    const proxy = await startDelayProxy(proxied[key], delayMs);
    proxies.push(proxy);
    proxied[key] = proxy.rewrite(proxied[key]);
  }
  return proxied;
}
/** An Outrun server's environment on `benchStore` (and Redis with BENCH_REDIS_URL), across the network if asked. */
const outrunEnv = (benchStore: { env: Record<string, string> }) =>
  acrossNetwork({ ...benchStore.env, REDIS_URL: process.env.BENCH_REDIS_URL ?? '' });
const network =
  delayMs === undefined ? 'loopback' : `stores behind a proxy holding each chunk ${delayMs} ms each way`;

const store = await createBenchStore(args.store);
printHeader('resume-latency', {
  store: store.description,
  network,
  run: `${RUN_EVENTS} events (scripted model, one step), ${repeats} reconnects per point, reader in the benchmark process`,
});

const redisUrl = process.env.BENCH_REDIS_URL;
const twoInstances = Boolean(redisUrl) && args.store === 'postgres';

const rows: Cell[][] = [];
try {
  // Each process runs the worker too; the second one starts only after the run has finished (below).
  const server = await launchServer({ mode: 'outrun', store, env: await outrunEnv(store) });
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
      other = await launchServer({ mode: 'outrun', store, env: await outrunEnv(store) });
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
    // With BENCH_PROFILE_DIR: a CPU profile of the server alone while it answers resumes after 9,990, one after
    // another, each on a fresh connection (the reader's CPU is this process's, not in the profile).
    if (process.env.BENCH_PROFILE_DIR) {
      await server.profile('start');
      for (let attempt = 0; attempt < PROFILED_RESUMES; attempt++) {
        const result = await streamSse({
          url: streamUrl(run.id),
          headers: { ...api.authorization(), 'last-event-id': String(RUN_EVENTS - 10) },
        });
        if (result.events !== 10 || !result.done) throw new Error(`profiled resume: ${result.events} events`);
      }
      await server.profile('stop', `resume-latency-${args.store}-after-${RUN_EVENTS - 10}`);
    }
  } finally {
    await other?.close();
    await server.close();
  }
} finally {
  await store.cleanup();
}

const liveRows: Cell[][] = [];
try {
  await measureLive();
} finally {
  await Promise.all(proxies.map((proxy) => proxy.close()));
}

printTable({
  title: `resume-latency — ${args.store}, ${process.version}, ${network}, run of ${RUN_EVENTS} events, ${repeats} reconnects each`,
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

printTable({
  title: `resume-latency — a run in progress, ${args.store}, ${process.version}, ${network}, ${repeats} reconnects per instance`,
  columns: ['target', 'instance', 'first p50 ms', 'first p99 ms', 'first max ms'],
  rows: liveRows,
  digits: [0, 0, 2, 2, 2],
  notes: [
    `A paced run (${LIVE_DELAY_MS} ms per token) followed by one reader; meanwhile a reader reconnects ` +
      `${LIVE_BEHIND} events behind the live edge, on each instance in turn, and is closed at its first event ` +
      '(request sent → first event received, on a fresh connection), after as many reconnects not counted on a ' +
      'stream of their own (the servers are new). Outrun reconnects with `Last-Event-ID` (and, `useChat resume`, ' +
      "to its chat's resume endpoint, which replays the active run from its first event); " +
      'B (the AI SDK pipe plus `resumable-stream` on Redis) with `resumeExistingStream`, skipping the characters ' +
      'read so far. `same`: the process that runs the stream; `other`: a second process on the same database ' +
      'and Redis.',
  ],
});

/** One stream in progress, followed by a reader, and how to reconnect to it behind that reader. */
interface LiveStream {
  /** Events the first reader has received so far, and whether the stream has ended. */
  received(): number;
  ended(): boolean;
  /** Reconnects to `url`'s instance after the reader's `index`-th event; resolves at the first event (ms). */
  resume(url: string, index: number): Promise<number>;
  /** Ends the stream and waits for the reader. */
  close(): Promise<void>;
}

/** The live table's rows: Outrun on this store (and a second instance with Redis), then B. */
async function measureLive(): Promise<void> {
  await measureOutrunLive();
  await measureResumableLive();
}

/** Outrun: a run on the first instance; reconnects with `Last-Event-ID` to it and to the second, if any. */
async function measureOutrunLive(): Promise<void> {
  const liveStore = await createBenchStore(args.store);
  try {
    const env = await outrunEnv(liveStore);
    const first = await launchServer({ mode: 'outrun', store: liveStore, env });
    const second = twoInstances ? await launchServer({ mode: 'outrun', store: liveStore, env }) : undefined;
    try {
      const api = new BenchApi(first.url);
      /** A live stream resumed with `Last-Event-ID`, or as useChat resumes it (its chat's, from the first event). */
      const opener =
        (useChat: boolean) =>
        async (tokens: number): Promise<LiveStream> => {
          const chatId = await api.createChat();
          const run = await api.startRun(chatId, script(tokens, LIVE_DELAY_MS));
          const ids: number[] = [];
          let readerEnded = false;
          const reader = streamSse({
            url: `${first.url}/v1/runs/${run.id}/stream`,
            headers: api.authorization(),
            onEvent: (id) => void ids.push(id),
          });
          const markEnded = () => void (readerEnded = true);
          reader.then(markEnded, markEnded);
          return {
            received: () => ids.length,
            ended: () => readerEnded,
            resume(url, index) {
              if (useChat) {
                return firstEventMs(
                  { url: `${url}/v1/ui/chats/${chatId}/stream`, headers: api.authorization() },
                  (id) => id === 1,
                );
              }
              const after = ids[index - 1]!;
              return firstEventMs(
                {
                  url: `${url}/v1/runs/${run.id}/stream`,
                  headers: { ...api.authorization(), 'last-event-id': String(after) },
                },
                (id) => id === after + 1,
              );
            },
            async close() {
              const stop = await fetch(`${first.url}/v1/runs/${run.id}/stop`, {
                method: 'POST',
                headers: api.authorization(),
              });
              if (!stop.ok) throw new Error(`stopping the live run answered ${stop.status}`);
              await reader;
            },
          };
        };
      const instances = [{ label: second ? 'same' : '–', url: first.url }];
      if (second) instances.push({ label: 'other', url: second.url });
      await measureLiveTarget('Outrun', opener(false), instances);
      await measureLiveTarget('Outrun, useChat resume', opener(true), instances);
      // With BENCH_PROFILE_DIR: a CPU profile of the last instance (the other one, with two) while it answers
      // reconnects to a live run, 50 behind.
      if (process.env.BENCH_PROFILE_DIR) {
        const instance = instances.at(-1)!;
        const profiled = second ?? first;
        const live = await opener(false)(tokensFor(PROFILED_LIVE_RESUMES, 1));
        await profiled.profile('start');
        await reconnect('Outrun, profiled', live, [instance], PROFILED_LIVE_RESUMES);
        await profiled.profile('stop', `resume-latency-${args.store}-live-${second ? 'other' : 'same'}`);
      }
    } finally {
      await second?.close();
      await first.close();
    }
  } finally {
    await liveStore.cleanup();
  }
}

/** B: a stream on the first of two pipe processes sharing a Redis; `resumeExistingStream` on both. */
async function measureResumableLive(): Promise<void> {
  try {
    await importResumableStream();
  } catch (error) {
    console.log(`B skipped: ${error instanceof Error ? error.message : String(error)}`);
    return;
  }
  let redis;
  try {
    redis = await createBenchRedis({ sharedUrl: redisUrl });
  } catch (error) {
    console.log(`B skipped: no Redis (${error instanceof Error ? error.message : String(error)})`);
    return;
  }
  try {
    const env = await acrossNetwork({ REDIS_URL: redis.url, BENCH_REDIS_PREFIX: redis.prefix });
    const first = await launchServer({ mode: 'resumable', env });
    const second = await launchServer({ mode: 'resumable', env });
    try {
      const open = async (tokens: number): Promise<LiveStream> => {
        // The pipe's frames are `data: <json>\n\n`: the characters before each event, for `skip`.
        const offsets: number[] = [0];
        const data: string[] = [];
        let streamId = '';
        let readerEnded = false;
        const reader = streamSse({
          url: `${first.url}/chat`,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ text: script(tokens, LIVE_DELAY_MS) }),
          onOpen: (headers) => (streamId = String(headers['x-stream-id'])),
          onEvent(_id, text) {
            data.push(text);
            offsets.push(offsets.at(-1)! + 'data: '.length + text.length + 2);
          },
        });
        const markEnded = () => void (readerEnded = true);
        reader.then(markEnded, markEnded);
        return {
          received: () => data.length,
          ended: () => readerEnded,
          resume: (url, index) =>
            firstEventMs(
              { url: `${url}/chat/${streamId}/stream?skip=${offsets[index]!}` },
              (_id, text) => text === data[index],
            ),
          // The pipe cannot be stopped: its stream runs to its end.
          async close() {
            await reader;
          },
        };
      };
      await measureLiveTarget('B: A + resumable-stream', open, [
        { label: 'same', url: first.url },
        { label: 'other', url: second.url },
      ]);
    } finally {
      await second.close();
      await first.close();
    }
  } finally {
    await redis.close();
  }
}

/**
 * The servers were started for this table, and a fresh process's first requests are its slowest: first
 * `LIVE_WARM_RESUMES` reconnects to each instance on a stream of their own, not counted, then `repeats` on a
 * new stream, counted. A stream of its own, because `resumable-stream` sends a reconnect everything its stream
 * has had so far (then skips what the reader had), so its cost grows with the stream's length: reconnects later
 * in the same stream would measure that, not the warm-up.
 */
async function measureLiveTarget(
  target: string,
  open: (tokens: number) => Promise<LiveStream>,
  instances: { label: string; url: string }[],
): Promise<void> {
  await reconnect(
    target,
    await open(tokensFor(LIVE_WARM_RESUMES, instances.length)),
    instances,
    LIVE_WARM_RESUMES,
  );
  const samples = await reconnect(
    target,
    await open(tokensFor(repeats, instances.length)),
    instances,
    repeats,
  );
  for (const [index, instance] of instances.entries()) {
    const summary = samples[index]!.summary();
    liveRows.push([target, instance.label, summary.p50, summary.p99, summary.max]);
    console.log(`${target}, live, ${instance.label} instance: first event p50 ${summary.p50.toFixed(2)} ms`);
  }
}

/** Enough tokens for `count` reconnects (a few ms each, 20 ms apart) to each instance, with room to spare. */
function tokensFor(count: number, instances: number): number {
  return Math.ceil((count * instances * 60 + 3_000) / LIVE_DELAY_MS);
}

/** Reconnects `count` times to each instance in turn, `LIVE_BEHIND` events behind the reader; closes `live`. */
async function reconnect(
  target: string,
  live: LiveStream,
  instances: { label: string; url: string }[],
  count: number,
): Promise<Sample[]> {
  while (live.received() < LIVE_WARM_EVENTS) {
    if (live.ended()) throw new Error(`${target}: the live stream ended before ${LIVE_WARM_EVENTS} events`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const samples = instances.map(() => new Sample());
  for (let attempt = 0; attempt < count; attempt++) {
    for (const [index, instance] of instances.entries()) {
      samples[index]!.add(await live.resume(instance.url, live.received() - LIVE_BEHIND));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  if (live.ended())
    throw new Error(`${target}: the live stream ended before the reconnects did; make it longer`);
  await live.close();
  return samples;
}

/** Opens `options`' stream, closes it at its first event, and returns request sent → first event (ms). */
async function firstEventMs(
  options: { url: string; headers?: Record<string, string> },
  isExpected: (id: number, data: string) => boolean,
): Promise<number> {
  const controller = new AbortController();
  let first: { id: number; data: string; at: number } | undefined;
  const sentAt = wallNow();
  await streamSse({
    ...options,
    signal: controller.signal,
    onEvent(id, data, receivedAt) {
      if (first) return;
      first = { id, data, at: receivedAt };
      controller.abort();
    },
  }).catch((error: unknown) => {
    // Closing the connection at the first event may end the request with an error: expected.
    if (!first) throw error;
  });
  if (!first || !isExpected(first.id, first.data)) {
    throw new Error(
      `a reconnect to ${options.url} started at ${first ? `${first.id} ${first.data}` : 'nothing'}`,
    );
  }
  return first.at - sentAt;
}
