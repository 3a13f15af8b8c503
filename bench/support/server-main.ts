/**
 * The server process of a benchmark (started by `launchServer`): an Outrun instance, the plain
 * `streamText` → SSE pipe, that pipe with `resumable-stream`, that pipe with a minimal durable PostgreSQL log
 * (the durable floor), bare SSE writes, or the bare fan-out floor, on a random loopback port. It answers the benchmark over IPC with its own CPU time,
 * memory and event-loop delay, so the client's work is never counted as the server's.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { dirname } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { LanguageModel } from 'ai';
import pino from 'pino';
import { resolveModel } from '../../src/agent/providers.ts';
import { createOutrun } from '../../src/app.ts';
import { CLOCK_MODEL_ID, createClockModel, releaseClockGate } from './clock-model.ts';
import { startBareFanOutServer } from './bare-fan-out-server.ts';
import { startBareSseServer } from './bare-sse-server.ts';
import { startDurablePipeServer } from './durable-pipe-server.ts';
import { startPlainPipeServer } from './plain-pipe-server.ts';
import { startResumablePipeServer } from './resumable-pipe-server.ts';
import type { ChildMessage, ParentMessage, ServerMode } from './server-process.ts';
import { wallNow } from './stats.ts';

const clockModel = createClockModel();
const benchResolveModel = (modelId: string): LanguageModel =>
  modelId === CLOCK_MODEL_ID ? clockModel : resolveModel({ modelId });

const send = (message: ChildMessage) => process.send?.(message);

// The benchmark's own sampling, off for a benchmark of the server's idle cost (bench/idle-cpu.ts): each
// wakes the process (every 50 ms and every 5 ms).
const sampling = process.env.BENCH_SERVER_SAMPLING !== 'off';
let peakRss = process.memoryUsage.rss();
if (sampling) setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 50).unref();
const loopDelay = monitorEventLoopDelay({ resolution: 5 });
if (sampling) loopDelay.enable();
let utilizationSince = performance.eventLoopUtilization();

let close: () => Promise<void>;
let url: string;
const mode = process.env.BENCH_SERVER_MODE as ServerMode;
if (mode === 'plain') {
  const plain = await startPlainPipeServer({ resolveModel: benchResolveModel, defaultModel: 'scripted' });
  url = plain.url;
  close = () => new Promise((resolve) => plain.server.close(() => resolve()));
} else if (mode === 'durable') {
  const durable = await startDurablePipeServer({
    resolveModel: benchResolveModel,
    defaultModel: 'scripted',
    databaseUrl: process.env.DATABASE_URL!,
  });
  url = durable.url;
  close = () => durable.close();
} else if (mode === 'bare') {
  const bare = await startBareSseServer();
  url = bare.url;
  close = () => new Promise((resolve) => bare.server.close(() => resolve()));
} else if (mode === 'resumable') {
  const resumable = await startResumablePipeServer({
    resolveModel: benchResolveModel,
    defaultModel: 'scripted',
    redisUrl: process.env.REDIS_URL!,
    keyPrefix: process.env.BENCH_REDIS_PREFIX ?? 'outrun-bench',
  });
  url = resumable.url;
  close = () => resumable.close();
} else if (mode === 'bare-fan-out') {
  const bare = await startBareFanOutServer();
  url = bare.url;
  close = () => new Promise((resolve) => bare.server.close(() => resolve()));
} else {
  const outrun = await createOutrun({
    config: {
      port: 0,
      host: '127.0.0.1',
      adminKey: process.env.BENCH_ADMIN_KEY,
      logLevel: 'warn',
    },
    logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }),
    resolveModel: benchResolveModel,
  });
  await outrun.start();
  url = await outrun.listen();
  close = () => outrun.close({ graceMs: 0 });
}

process.on('message', (message: ParentMessage) => {
  switch (message.type) {
    case 'stats': {
      const cpu = process.cpuUsage();
      send({
        type: 'stats',
        id: message.id,
        cpuMicros: cpu.user + cpu.system,
        rss: process.memoryUsage.rss(),
        peakRss,
        loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
        loopDelayMaxMs: loopDelay.max / 1e6,
        loopUtilization: performance.eventLoopUtilization(utilizationSince).utilization,
      });
      if (message.reset) {
        peakRss = process.memoryUsage.rss();
        loopDelay.reset();
        utilizationSince = performance.eventLoopUtilization();
      }
      break;
    }
    case 'now':
      send({ type: 'now', id: message.id, now: wallNow() });
      break;
    case 'gate': {
      const at = wallNow();
      releaseClockGate(message.name, at);
      send({ type: 'gate', id: message.id, at });
      break;
    }
    case 'profile':
      void profile(message).then(() => send({ type: 'profile', id: message.id }));
      break;
    case 'close':
      void close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
      break;
  }
});

const inspector = new Session();
async function profile(message: Extract<ParentMessage, { type: 'profile' }>): Promise<void> {
  if (message.action === 'start') {
    inspector.connect();
    await inspector.post('Profiler.enable');
    await inspector.post('Profiler.start');
    return;
  }
  const { profile: result } = await inspector.post('Profiler.stop');
  inspector.disconnect();
  mkdirSync(dirname(message.path), { recursive: true });
  writeFileSync(message.path, JSON.stringify(result));
}

// The benchmark is gone (Ctrl-C, a crash): nothing will close this server, so it ends with its parent.
process.on('disconnect', () => process.exit(0));

send({ type: 'ready', url });
