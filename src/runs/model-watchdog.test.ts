import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { modelIdleMessage, ModelWatchdog } from './model-watchdog.ts';

describe('ModelWatchdog', () => {
  let watchdog: ModelWatchdog | undefined;
  /** The run's stream: the last sequence number appended. */
  let seq = 0;
  let cuts = 0;
  const cut = () => {
    cuts += 1;
    return true;
  };
  beforeEach(() => {
    vi.useFakeTimers();
    seq = 0;
    cuts = 0;
  });
  afterEach(() => {
    watchdog?.stop();
    vi.useRealTimers();
  });

  it('cuts a silent call after its idle time, never before, and at most an eighth later', () => {
    watchdog = new ModelWatchdog(800, () => seq, cut);
    vi.advanceTimersByTime(799);
    expect(watchdog.fired).toBe(false);
    vi.advanceTimersByTime(100);
    expect(watchdog.fired).toBe(true);
    expect(cuts).toBe(1);
    expect(watchdog.message).toBe('The model sent nothing for 800 ms; the call was ended.');
    // Once: the timer is gone.
    vi.advanceTimersByTime(10_000);
    expect(cuts).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('has not fired when the run was already being stopped for another reason', () => {
    watchdog = new ModelWatchdog(
      800,
      () => seq,
      () => false,
    );
    vi.advanceTimersByTime(900);
    expect(watchdog.fired).toBe(false);
  });

  it('counts the silence from the last chunk', () => {
    watchdog = new ModelWatchdog(800, () => seq, cut);
    for (let elapsed = 0; elapsed < 5_000; elapsed += 500) {
      vi.advanceTimersByTime(500);
      seq += 1;
    }
    expect(watchdog.fired).toBe(false);
    // The last chunk came 30 ms after a tick: the call is cut between 800 and 900 ms after it.
    vi.advanceTimersByTime(30);
    seq += 1;
    vi.advanceTimersByTime(799);
    expect(watchdog.fired).toBe(false);
    vi.advanceTimersByTime(101);
    expect(watchdog.fired).toBe(true);
  });

  it('does not count the time a hold is taken (a tool executing), and counts afresh from its release', () => {
    watchdog = new ModelWatchdog(800, () => seq, cut);
    const release = watchdog.hold();
    vi.advanceTimersByTime(10_000);
    expect(watchdog.fired).toBe(false);
    release();
    release(); // a second release changes nothing
    vi.advanceTimersByTime(799);
    expect(watchdog.fired).toBe(false);
    vi.advanceTimersByTime(101);
    expect(watchdog.fired).toBe(true);
  });

  it('waits for every hold to be released', () => {
    watchdog = new ModelWatchdog(800, () => seq, cut);
    const first = watchdog.hold();
    const second = watchdog.hold();
    first();
    vi.advanceTimersByTime(5_000);
    expect(watchdog.fired).toBe(false);
    second();
    vi.advanceTimersByTime(900);
    expect(watchdog.fired).toBe(true);
  });

  it('never fires once stopped', () => {
    watchdog = new ModelWatchdog(800, () => seq, cut);
    watchdog.stop();
    vi.advanceTimersByTime(10_000);
    expect(watchdog.fired).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('says whole seconds as seconds, anything else in milliseconds', () => {
    expect(modelIdleMessage(600_000)).toBe('The model sent nothing for 600 s; the call was ended.');
    expect(modelIdleMessage(1_999)).toBe('The model sent nothing for 1999 ms; the call was ended.');
  });
});
