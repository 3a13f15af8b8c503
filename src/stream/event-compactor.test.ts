import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Metrics } from '../metrics.ts';
import { EventCompactor } from './event-compactor.ts';
import type { CompactionResult, EventLog } from './event-log.ts';

/** An event log whose every batch takes `batchMs` and records when it ran. */
function slowLog(batchMs: number) {
  const batches: { runIds: string[]; startedAt: number; endedAt: number }[] = [];
  const log = {
    async compactMany(runIds: readonly string[]) {
      const startedAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, batchMs));
      batches.push({ runIds: [...runIds], startedAt, endedAt: performance.now() });
      return new Map<string, CompactionResult>(
        runIds.map((id) => [id, { compacted: true, events: 1, pages: 1 }]),
      );
    },
  } as unknown as EventLog;
  return { log, batches };
}

describe('EventCompactor', () => {
  // The pauses are measured on fake timers (performance.now() included), so they are exact: on a loaded
  // machine real timers fire late by tens of milliseconds (CI once saw a 5 ms pause take 70 ms).
  afterEach(() => vi.useRealTimers());

  /** Schedules `runIds`, lets the fake clock run until the compactor is idle, and returns each pause. */
  async function pausesAfter(batchMs: number, runIds: string[]) {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'performance'] });
    const { log, batches } = slowLog(batchMs);
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), sweepLimit: 1 });
    for (const runId of runIds) compactor.schedule(runId);
    const idle = compactor.idle();
    await vi.runAllTimersAsync();
    await idle;
    expect(batches.map((batch) => batch.runIds)).toEqual(runIds.map((runId) => [runId]));
    return batches.slice(1).map((batch, index) => batch.startedAt - batches[index]!.endedAt);
  }

  it('pauses after a batch three times as long as the batch took, so a backlog takes at most a quarter of the time', async () => {
    expect(await pausesAfter(40, ['run-a', 'run-b', 'run-c'])).toEqual([120, 120]);
  });

  it('pauses only briefly while more than four batches wait, so a backlog cannot grow without bound', async () => {
    const runIds = Array.from({ length: 7 }, (_, index) => `run-${index}`);
    // After the first and second batches, six and then five runs wait: more than four batches, so 5 ms.
    // From four waiting on, the pause is three times the batch again.
    expect(await pausesAfter(60, runIds)).toEqual([5, 5, 180, 180, 180, 180]);
  });

  it('ends its pause between two batches at once when closed', async () => {
    const { log, batches } = slowLog(200);
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), sweepLimit: 1 });
    for (const runId of ['run-a', 'run-b']) compactor.schedule(runId);
    while (batches.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    // The first batch took 200 ms, so the pause before the second is 600 ms.
    const closing = performance.now();
    await compactor.close();
    expect(performance.now() - closing).toBeLessThan(300);
    expect(batches.map((batch) => batch.runIds)).toEqual([['run-a']]);
  });

  it('shows how many runs wait for a batch in outrun_compaction_queue', async () => {
    const { log } = slowLog(20);
    const metrics = new Metrics();
    const queued = async () => (await metrics.compactionQueue.get()).values[0]?.value;
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), sweepLimit: 1, metrics });
    for (const runId of ['run-a', 'run-b', 'run-c']) compactor.schedule(runId);
    expect(await queued()).toBe(3);
    await compactor.idle();
    expect(await queued()).toBe(0);
  });
});
