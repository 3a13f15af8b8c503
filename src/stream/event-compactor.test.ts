import pino from 'pino';
import { describe, expect, it } from 'vitest';
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
  it('pauses after a batch three times as long as the batch took, so a backlog takes at most a quarter of the time', async () => {
    const { log, batches } = slowLog(40);
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), sweepLimit: 1 });
    for (const runId of ['run-a', 'run-b', 'run-c']) compactor.schedule(runId);
    await compactor.idle();
    expect(batches.map((batch) => batch.runIds)).toEqual([['run-a'], ['run-b'], ['run-c']]);
    for (let index = 1; index < batches.length; index++) {
      const previous = batches[index - 1]!;
      const took = previous.endedAt - previous.startedAt;
      // Timers fire no earlier than asked; a millisecond of slack for the clock's rounding.
      expect(batches[index]!.startedAt - previous.endedAt).toBeGreaterThanOrEqual(3 * took - 1);
    }
  });

  it('pauses only briefly while more than four batches wait, so a backlog cannot grow without bound', async () => {
    const { log, batches } = slowLog(60);
    const compactor = new EventCompactor({ log, logger: pino({ level: 'silent' }), sweepLimit: 1 });
    const runIds = Array.from({ length: 7 }, (_, index) => `run-${index}`);
    for (const runId of runIds) compactor.schedule(runId);
    await compactor.idle();
    expect(batches.map((batch) => batch.runIds)).toEqual(runIds.map((runId) => [runId]));
    const pauses = batches.slice(1).map((batch, index) => {
      const previous = batches[index]!;
      return { pause: batch.startedAt - previous.endedAt, took: previous.endedAt - previous.startedAt };
    });
    // After the first and second batches, six and then five runs wait: more than four batches.
    for (const { pause, took } of pauses.slice(0, 2)) expect(pause).toBeLessThan(took);
    // From four waiting on, the pause is three times the batch again. A timer may fire a few milliseconds
    // early against performance.now(): libuv counts whole milliseconds from the loop's cached time, which a
    // busy machine leaves stale (CI once saw 179.2 ms for 3 × 60.2); the brief pause is 5 ms, far below.
    for (const { pause, took } of pauses.slice(2)) expect(pause).toBeGreaterThanOrEqual(3 * took - 5);
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
