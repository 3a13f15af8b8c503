import { clockScript, dueTimeOf, emitTimeOf, sleepUntil } from './clock-model.ts';
import { readHostCpu, stealPercent } from './host-cpu.ts';
import { streamSse } from './sse-client.ts';
import { Sample, wallNow } from './stats.ts';
import type { CpuReading, Target } from './targets.ts';

/** Delay before the first start, so preparing the wave's timers is not inside it. */
const LEAD_MS = 50;
/** Errors kept (as examples) per wave. */
const ERRORS_KEPT = 5;

export interface PacedWaveOptions {
  runs: number;
  /** Text deltas per run. */
  tokens: number;
  /** Milliseconds between two deltas of a run (1000 / tokens per second). */
  delayMs: number;
  /** Starts are spread evenly over this long: run i starts at i × rampMs / runs. */
  rampMs: number;
  /** Every stream still open this long after the first start is cut, and counts as not completed. */
  deadlineMs: number;
  /**
   * A measurement window (ms after the first start) over which deltas, their schedule latency and CPU time are
   * also counted on their own: the steady state of a sustained load, without the ramp and the tail.
   */
  window?: { startMs: number; endMs: number };
}

/** CPU time (µs) used over an interval, by part. */
export interface CpuUse {
  servers: number[];
  database: number | null;
  redis: number | null;
}

export interface PacedWaveResult {
  runs: number;
  tokens: number;
  /** Request sent → first text delta received, per run that received one (ms). */
  timeToFirstToken: Sample;
  /** Per delta: received − due in the run's pacing schedule (clock offset subtracted), ms. */
  scheduleLatency: Sample;
  /** Per delta: emitted by the model − due (the server picking the token up late), ms. */
  emitLag: Sample;
  /**
   * `scheduleLatency` by when the delta was received: while runs start (until a second after the ramp), while
   * they end (from the first run's end, `tokens × delayMs` after the first start, on) and in between.
   */
  phases: { starting: Sample; steady: Sample; ending: Sample };
  /** Runs whose reader saw `data: [DONE]` before the deadline. */
  completed: number;
  /** Runs that never received a text delta (queued, failed or cut before their first token). */
  withoutFirstToken: number;
  /** Streams that failed (HTTP error, connection refused) rather than being cut at the deadline. */
  failed: number;
  errors: string[];
  deltas: number;
  /** First start → last stream end (or the deadline), ms. */
  elapsedMs: number;
  cpu: CpuUse;
  clientCpuMicros: number;
  /** The share (%) of the machine's CPU time the hypervisor gave to other guests over the wave (null off Linux). */
  stealPercent: number | null;
  window?: { ms: number; deltas: number; scheduleLatency: Sample; cpu: CpuUse; clientCpuMicros: number };
}

/** CPU time used between two readings. */
export function cpuBetween(before: CpuReading, after: CpuReading): CpuUse {
  return {
    servers: after.servers.map((micros, index) => micros - before.servers[index]!),
    database: before.database === null || after.database === null ? null : after.database - before.database,
    redis: before.redis === null || after.redis === null ? null : after.redis - before.redis,
  };
}

/** Everything serving the target: server processes + PostgreSQL backends + Redis (µs). */
export function totalCpu(use: CpuUse): number {
  return use.servers.reduce((sum, micros) => sum + micros, 0) + (use.database ?? 0) + (use.redis ?? 0);
}

/**
 * One wave of paced runs on `target`: `runs` runs started over `rampMs`, each streaming `tokens` deltas of the
 * clock model `delayMs` apart from when the model is called, each read by its own SSE connection in this
 * process. Every stream is bounded: all are cut at `deadlineMs` after the first start.
 */
export async function runPacedWave(target: Target, options: PacedWaveOptions): Promise<PacedWaveResult> {
  const { runs, tokens, delayMs, rampMs, deadlineMs, window } = options;
  const requests = await target.prepare(runs, clockScript({ tokens, delayMs }));
  const offset = target.clockOffset;
  const result: PacedWaveResult = {
    runs,
    tokens,
    timeToFirstToken: new Sample(),
    scheduleLatency: new Sample(),
    emitLag: new Sample(),
    phases: { starting: new Sample(), steady: new Sample(), ending: new Sample() },
    completed: 0,
    withoutFirstToken: 0,
    failed: 0,
    errors: [],
    deltas: 0,
    elapsedMs: 0,
    cpu: { servers: [], database: null, redis: null },
    clientCpuMicros: 0,
    stealPercent: null,
  };
  const windowLatency = new Sample();
  let windowDeltas = 0;

  const cut = new AbortController();
  const cpuBefore = await target.cpu();
  const clientBefore = process.cpuUsage();
  const hostBefore = readHostCpu();
  const firstStart = wallNow() + LEAD_MS;
  const deadline = firstStart + deadlineMs;
  const windowStart = window ? firstStart + window.startMs : Infinity;
  const windowEnd = window ? firstStart + window.endMs : -Infinity;
  const steadyFrom = firstStart + rampMs + 1000;
  const endingFrom = firstStart + tokens * delayMs;
  const deadlineTimer = setTimeout(() => cut.abort(), deadline - wallNow());
  const windowReadings = window
    ? Promise.all([
        readAt(windowStart, () => Promise.all([target.cpu(), process.cpuUsage()] as const)),
        readAt(windowEnd, () => Promise.all([target.cpu(), process.cpuUsage()] as const)),
      ])
    : null;

  let lastEnd = firstStart;
  const streams: Promise<void>[] = [];
  for (let index = 0; index < runs; index++) {
    await sleepUntil(firstStart + (index * rampMs) / runs);
    const request = requests[index]!;
    let firstDeltaAt: number | null = null;
    const sentAt = wallNow();
    const stream = streamSse({
      url: request.url,
      method: 'POST',
      headers: request.headers,
      body: request.body,
      signal: cut.signal,
      timeoutMs: deadlineMs + 60_000,
      onEvent(_id, data, receivedAt) {
        const emit = emitTimeOf(data);
        if (emit === null) return;
        const due = dueTimeOf(data)!;
        const late = receivedAt - (due - offset);
        result.deltas += 1;
        firstDeltaAt ??= receivedAt;
        result.scheduleLatency.add(late);
        result.emitLag.add(emit - due);
        const phase = receivedAt < steadyFrom ? 'starting' : receivedAt < endingFrom ? 'steady' : 'ending';
        result.phases[phase].add(late);
        if (receivedAt >= windowStart && receivedAt < windowEnd) {
          windowDeltas += 1;
          windowLatency.add(late);
        }
      },
    }).then(
      (outcome) => {
        lastEnd = Math.max(lastEnd, outcome.endedAt);
        if (outcome.done && outcome.endedAt <= deadline) result.completed += 1;
      },
      (error: Error) => {
        lastEnd = Math.max(lastEnd, wallNow());
        if (!cut.signal.aborted) {
          result.failed += 1;
          if (result.errors.length < ERRORS_KEPT) result.errors.push(error.message);
        }
      },
    );
    streams.push(
      stream.then(() => {
        if (firstDeltaAt === null) result.withoutFirstToken += 1;
        else result.timeToFirstToken.add(firstDeltaAt - sentAt);
      }),
    );
  }
  await Promise.all(streams);
  clearTimeout(deadlineTimer);
  const client = process.cpuUsage(clientBefore);
  result.stealPercent = stealPercent(hostBefore, readHostCpu());
  const cpuAfter = await target.cpu();
  result.elapsedMs = Math.min(lastEnd, deadline) - firstStart;
  result.cpu = cpuBetween(cpuBefore, cpuAfter);
  result.clientCpuMicros = client.user + client.system;
  if (window && windowReadings) {
    const [[targetStart, clientStart], [targetEnd, clientEnd]] = await windowReadings;
    result.window = {
      ms: window.endMs - window.startMs,
      deltas: windowDeltas,
      scheduleLatency: windowLatency,
      cpu: cpuBetween(targetStart, targetEnd),
      clientCpuMicros: clientEnd.user + clientEnd.system - clientStart.user - clientStart.system,
    };
  }
  return result;
}

async function readAt<T>(at: number, read: () => Promise<T>): Promise<T> {
  await sleepUntil(at);
  return read();
}
