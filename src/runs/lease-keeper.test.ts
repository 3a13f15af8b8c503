import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../clock.ts';
import { LeaseKeeper } from './lease-keeper.ts';
import type { RunService } from './run-service.ts';

/** A RunService stand-in that records heartbeats and answers from a table of lease states. */
function fakeRuns(answer: (runId: string) => { stopRequested: boolean } | undefined) {
  const beats: { runs: { runId: string; epoch: number }[]; leaseExpiresAt: Date }[] = [];
  const runs = {
    heartbeatMany: async (options: { runs: { runId: string; epoch: number }[]; leaseExpiresAt: Date }) => {
      beats.push(options);
      const result = new Map<string, { stopRequested: boolean }>();
      for (const run of options.runs) {
        const state = answer(run.runId);
        if (state) result.set(run.runId, state);
      }
      return result;
    },
  } as unknown as RunService;
  return { runs, beats };
}

describe('LeaseKeeper', () => {
  it('renews every held lease in one statement, to the clock’s now plus a lease', async () => {
    const clock = new ManualClock(new Date('2026-12-01T12:00:00Z'));
    const { runs, beats } = fakeRuns(() => ({ stopRequested: false }));
    const keeper = new LeaseKeeper({
      runs,
      owner: 'me',
      leaseMs: 30_000,
      clock,
      logger: pino({ level: 'silent' }),
      onLost: () => expect.unreachable(),
      onStopRequested: () => expect.unreachable(),
    });
    keeper.hold('run_a', 3);
    keeper.hold('run_b', 7);
    clock.advance(10_000);
    await keeper.renew();
    keeper.stop();
    expect(beats).toEqual([
      {
        runs: [
          { runId: 'run_a', epoch: 3 },
          { runId: 'run_b', epoch: 7 },
        ],
        owner: 'me',
        leaseExpiresAt: new Date('2026-12-01T12:00:40Z'),
      },
    ]);
  });

  it('reports a lost lease and a stop recorded on the row, and forgets dropped runs', async () => {
    const { runs } = fakeRuns((runId) =>
      runId === 'run_stop'
        ? { stopRequested: true }
        : runId === 'run_ok'
          ? { stopRequested: false }
          : undefined,
    );
    const lost: string[] = [];
    const stopped: string[] = [];
    const keeper = new LeaseKeeper({
      runs,
      owner: 'me',
      logger: pino({ level: 'silent' }),
      onLost: (runId) => lost.push(runId),
      onStopRequested: (runId) => stopped.push(runId),
    });
    keeper.hold('run_ok', 1);
    keeper.hold('run_stop', 1);
    keeper.hold('run_gone', 1);
    await keeper.renew();
    keeper.drop('run_ok');
    keeper.drop('run_stop');
    keeper.drop('run_gone');
    await keeper.renew();
    keeper.stop();
    expect(lost).toEqual(['run_gone']);
    expect(stopped).toEqual(['run_stop']);
  });

  it('keeps going when a renewal fails', async () => {
    let fail = true;
    const runs = {
      heartbeatMany: async () => {
        if (fail) throw new Error('connection terminated');
        return new Map([['run_a', { stopRequested: false }]]);
      },
    } as unknown as RunService;
    const keeper = new LeaseKeeper({
      runs,
      owner: 'me',
      logger: pino({ level: 'silent' }),
      onLost: () => expect.unreachable(),
      onStopRequested: () => expect.unreachable(),
    });
    keeper.hold('run_a', 1);
    await keeper.renew();
    fail = false;
    await keeper.renew();
    keeper.stop();
  });

  it('renews once at a time: a tick while a renewal waits is skipped, not stacked', async () => {
    vi.useFakeTimers();
    try {
      let release!: () => void;
      const blocked = new Promise<void>((resolve) => (release = resolve));
      let calls = 0;
      const runs = {
        heartbeatMany: async () => {
          calls += 1;
          await blocked;
          return new Map([['run_a', { stopRequested: false }]]);
        },
      } as unknown as RunService;
      const keeper = new LeaseKeeper({
        runs,
        owner: 'me',
        leaseMs: 300,
        logger: pino({ level: 'silent' }),
        onLost: () => expect.unreachable(),
        onStopRequested: () => expect.unreachable(),
      });
      keeper.hold('run_a', 1);
      await vi.advanceTimersByTimeAsync(1_000); // ten ticks, the first renewal still waiting
      expect(calls).toBe(1);
      release();
      await vi.advanceTimersByTimeAsync(100);
      expect(calls).toBe(2);
      keeper.stop();
    } finally {
      vi.useRealTimers();
    }
  });
});
