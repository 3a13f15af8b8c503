import { describe, expect, it } from 'vitest';
import { RunStatus } from '../protocol/run.ts';
import { Ending, InvalidTransitionError, Lifecycle, RUN_TRANSITIONS, canTransition } from './lifecycle.ts';
import { RUN_ERROR_MESSAGES, RunErrorCode } from './run-status.ts';

const STATUSES = Object.values(RunStatus);

/** The transitions DESIGN §2 draws, written out once more by hand: the table must match them exactly. */
const DRAWN = new Set([
  'queued→pending',
  'queued→aborted',
  'pending→running',
  'pending→aborted',
  'pending→failed',
  'running→pending',
  'running→waiting',
  'running→succeeded',
  'running→failed',
  'running→aborted',
  'waiting→pending',
  'waiting→aborted',
]);

describe('the run transition table', () => {
  for (const from of STATUSES) {
    for (const to of STATUSES) {
      const allowed = DRAWN.has(`${from}→${to}`);
      it(`${allowed ? 'allows' : 'refuses'} ${from} → ${to}`, async () => {
        expect(canTransition(from, to)).toBe(allowed);
        expect(RUN_TRANSITIONS[from].includes(to)).toBe(allowed);
        if (allowed) return;
        // Refused before anything is written: the transaction is never touched.
        const lifecycle = new Lifecycle({} as never);
        const untouchable = new Proxy({}, { get: () => expect.unreachable('the database was touched') });
        await expect(
          lifecycle.transitionIn(untouchable as never, { runId: 'run_x', to, from: [from] }),
        ).rejects.toBeInstanceOf(InvalidTransitionError);
      });
    }
  }

  it('lets nothing leave a terminal status', () => {
    for (const status of [RunStatus.succeeded, RunStatus.failed, RunStatus.aborted]) {
      expect(RUN_TRANSITIONS[status]).toEqual([]);
    }
  });
});

describe('endings', () => {
  it('carries status, error code, message and closing chunks from one table', () => {
    expect(Ending.succeeded()).toEqual({ status: 'succeeded', error: null, chunks: [] });
    expect(Ending.aborted(RunErrorCode.stopped)).toEqual({
      status: 'aborted',
      error: { code: 'stopped', message: RUN_ERROR_MESSAGES.stopped },
      chunks: [{ type: 'abort' }],
    });
    expect(Ending.aborted(RunErrorCode.stopped, { sendAbort: false }).chunks).toEqual([]);
    expect(Ending.failed(RunErrorCode.startFailed)).toEqual({
      status: 'failed',
      error: { code: 'start_failed', message: RUN_ERROR_MESSAGES.start_failed },
      chunks: [{ type: 'error', errorText: RUN_ERROR_MESSAGES.start_failed }],
    });
    expect(Ending.failed(RunErrorCode.modelError, { message: 'rate limited', sendError: false })).toEqual({
      status: 'failed',
      error: { code: 'model_error', message: 'rate limited' },
      chunks: [],
    });
  });

  it('has a message for every error code', () => {
    for (const code of Object.values(RunErrorCode)) expect(RUN_ERROR_MESSAGES[code]).toMatch(/\w/);
  });
});
