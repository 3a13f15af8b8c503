import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { BullMqQueue } from '../src/queue/bullmq-queue.ts';
import type { LoadAdmissionOptions } from '../src/queue/load-limit.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import { QueueClosedError, type QueueSlot, type RunJob, type RunQueue } from '../src/queue/queue.ts';
import { captureLogger } from './support/logger.ts';

const REDIS_URL = process.env.REDIS_URL;
/** BullMQ's key prefix for this file: parallel runs never meet, and cleanup deletes exactly these keys. */
const PREFIX = `outrun-test-queue-${randomBytes(4).toString('hex')}`;

type QueueKind = 'memory' | 'bullmq';
const QUEUE_KINDS: QueueKind[] = REDIS_URL ? ['memory', 'bullmq'] : ['memory'];

/** A promise the test resolves by hand. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

let queueCount = 0;
/** A queue name no other test uses, so jobs a test leaves behind never reach another. */
function uniqueQueueName(): string {
  return `runs-${++queueCount}`;
}

const open: RunQueue[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((queue) => queue.close()));
});

afterAll(async () => {
  if (!REDIS_URL) return;
  const admin = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${PREFIX}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await admin.del(...keys);
    } while (cursor !== '0');
  } finally {
    await admin.quit();
  }
});

describe.each(QUEUE_KINDS)('run queue conformance on %s', (kind) => {
  function createQueue(
    options: {
      concurrency?: number;
      load?: LoadAdmissionOptions;
      queueName?: string;
      logger?: pino.Logger;
    } = {},
  ) {
    const logger = options.logger ?? pino({ level: 'silent' });
    const queue =
      kind === 'memory'
        ? new MemoryQueue({ concurrency: options.concurrency, load: options.load, logger })
        : new BullMqQueue({
            url: REDIS_URL!,
            prefix: PREFIX,
            queueName: options.queueName ?? uniqueQueueName(),
            concurrency: options.concurrency,
            load: options.load,
            logger,
          });
    open.push(queue);
    return queue;
  }

  it('handles every enqueued job, whether enqueued before or after the worker started', async () => {
    const queue = createQueue();
    const handled: string[] = [];
    const runIds = Array.from({ length: 40 }, (_, index) => `run_every_${index}`);
    await Promise.all(runIds.slice(0, 20).map((runId) => queue.enqueue({ runId })));
    queue.process(async (job) => void handled.push(job.runId));
    await Promise.all(runIds.slice(20).map((runId) => queue.enqueue({ runId })));
    await vi.waitFor(() => expect(handled).toHaveLength(runIds.length), { timeout: 10_000 });
    expect([...handled].sort()).toEqual([...runIds].sort());
  });

  it('handles at most `concurrency` jobs at once', async () => {
    const queue = createQueue({ concurrency: 3 });
    const gates = new Map<string, ReturnType<typeof gate>>();
    const started: string[] = [];
    let active = 0;
    let mostActive = 0;
    queue.process(async (job) => {
      active += 1;
      mostActive = Math.max(mostActive, active);
      started.push(job.runId);
      const jobGate = gate();
      gates.set(job.runId, jobGate);
      await jobGate.opened;
      active -= 1;
    });
    const runIds = Array.from({ length: 10 }, (_, index) => `run_limit_${index}`);
    for (const runId of runIds) await queue.enqueue({ runId });
    await vi.waitFor(() => expect(started).toHaveLength(3));
    // Release one job at a time: each release makes room for exactly one more.
    for (let released = 0; released < runIds.length; released++) {
      const runId = started[released]!;
      gates.get(runId)!.open();
      const expected = Math.min(released + 4, runIds.length);
      await vi.waitFor(() => expect(started).toHaveLength(expected), { timeout: 10_000 });
    }
    expect(mostActive).toBe(3);
    expect([...started].sort()).toEqual([...runIds].sort());
  });

  it('waits on close for the running handlers and takes no new jobs', async () => {
    const queue = createQueue({ concurrency: 1 });
    const order: string[] = [];
    const running = gate();
    queue.process(async (job) => {
      order.push(`start ${job.runId}`);
      await running.opened;
      order.push(`end ${job.runId}`);
    });
    await queue.enqueue({ runId: 'run_close_a' });
    await queue.enqueue({ runId: 'run_close_b' });
    await vi.waitFor(() => expect(order).toEqual(['start run_close_a']));
    const closing = queue.close().then(() => order.push('closed'));
    // Give a close that did not wait every chance to resolve first.
    await sleep(200);
    running.open();
    await closing;
    expect(order).toEqual(['start run_close_a', 'end run_close_a', 'closed']);
    await expect(queue.enqueue({ runId: 'run_close_c' })).rejects.toThrow(QueueClosedError);
    await sleep(100);
    expect(order).toEqual(['start run_close_a', 'end run_close_a', 'closed']);
  });

  it('handles a run once while its job waits or runs, and again once that job has ended', async () => {
    const queue = createQueue({ concurrency: 1 });
    const handled: string[] = [];
    const running = gate();
    queue.process(async (job) => {
      handled.push(job.runId);
      if (handled.length === 1) await running.opened;
    });
    await queue.enqueue({ runId: 'run_dupe' });
    await queue.enqueue({ runId: 'run_dupe' });
    await vi.waitFor(() => expect(handled).toEqual(['run_dupe']));
    await queue.enqueue({ runId: 'run_dupe' });
    // FIFO with one slot: a duplicate that got in would be handled before this job.
    await queue.enqueue({ runId: 'run_dupe_barrier' });
    // BullMQ completes a job once dispatched: the duplicate is a job of its own, dropped by the worker that
    // takes it while the first handler runs there. Give it that moment.
    await sleep(300);
    running.open();
    await vi.waitFor(() => expect(handled).toEqual(['run_dupe', 'run_dupe_barrier']));
    // The first job has ended (its removal may trail the handler by a moment): enqueueing dispatches again.
    await vi.waitFor(async () => {
      await queue.enqueue({ runId: 'run_dupe' });
      expect(handled.filter((runId) => runId === 'run_dupe').length).toBeGreaterThanOrEqual(2);
    });
  });

  it('dispatches a run again for a new epoch while the job of its previous epoch still runs', async () => {
    const queue = createQueue({ concurrency: 2 });
    const handled: string[] = [];
    const stuck = gate();
    queue.process(async (job) => {
      handled.push(`${job.runId}@${job.epoch}`);
      if (job.epoch === 1) await stuck.opened;
    });
    await queue.enqueue({ runId: 'run_requeued', epoch: 1 });
    await vi.waitFor(() => expect(handled).toEqual(['run_requeued@1']));
    await queue.enqueue({ runId: 'run_requeued', epoch: 1 });
    await queue.enqueue({ runId: 'run_requeued', epoch: 3 });
    await vi.waitFor(() => expect(handled).toEqual(['run_requeued@1', 'run_requeued@3']));
    stuck.open();
  });

  it('keeps handling jobs after a handler throws, and logs the failure', async () => {
    const { logger, records } = captureLogger();
    const queue = createQueue({ concurrency: 1, logger });
    const handled: string[] = [];
    queue.process(async (job: RunJob) => {
      handled.push(job.runId);
      if (job.runId.startsWith('run_throws')) throw new Error('handler broke');
    });
    await queue.enqueue({ runId: 'run_throws_1' });
    await queue.enqueue({ runId: 'run_throws_2' });
    await queue.enqueue({ runId: 'run_fine' });
    await vi.waitFor(() => expect(handled).toEqual(['run_throws_1', 'run_throws_2', 'run_fine']));
    await vi.waitFor(() =>
      expect(
        records.filter((record) => record.msg === 'a run job failed').map((record) => record.runId),
      ).toEqual(['run_throws_1', 'run_throws_2']),
    );
    // A failed job has ended too: its run can be enqueued again.
    await queue.enqueue({ runId: 'run_throws_1' });
    await vi.waitFor(() => expect(handled).toHaveLength(4));
  });

  it('closes without a worker, and closing twice is harmless', async () => {
    const queue = createQueue();
    await queue.enqueue({ runId: 'run_never_handled' });
    await queue.close();
    await queue.close();
    await expect(queue.enqueue({ runId: 'run_late' })).rejects.toThrow(QueueClosedError);
  });

  it('admits jobs beyond its base only while the event loop keeps up, never beyond `concurrency`', async () => {
    let loopDelayMs = 100;
    const queue = createQueue({
      concurrency: 6,
      load: { base: 2, maxLoopDelayMs: 20, intervalMs: 50, readDelayMs: () => loopDelayMs },
    });
    const gates = new Map<string, ReturnType<typeof gate>>();
    const started: string[] = [];
    queue.process(async (job) => {
      const jobGate = gate();
      gates.set(job.runId, jobGate);
      started.push(job.runId);
      await jobGate.opened;
    });
    const runIds = Array.from({ length: 8 }, (_, index) => `run_load_${index}`);
    for (const runId of runIds) await queue.enqueue({ runId });
    await vi.waitFor(() => expect(started).toHaveLength(2));
    await sleep(300); // six readings over the bound: the base only
    expect(started).toHaveLength(2);

    loopDelayMs = 0; // the loop keeps up: the limit rises, and waiting jobs are admitted without a slot freeing
    await vi.waitFor(() => expect(started).toHaveLength(6), { timeout: 10_000 });
    await sleep(300);
    expect(started).toHaveLength(6); // `concurrency` holds

    loopDelayMs = 100; // over the bound again: the limit falls under what runs
    await sleep(300);
    for (const runId of started.slice(0, 2)) gates.get(runId)!.open();
    await sleep(300);
    expect(started).toHaveLength(6); // two slots freed, but four jobs still run: more than the base

    loopDelayMs = 0;
    await vi.waitFor(() => expect(started).toHaveLength(8), { timeout: 10_000 });
    for (const runId of started) gates.get(runId)!.open();
  });

  it('counts a reserved slot against `concurrency` until its task settles', async () => {
    const queue = createQueue({ concurrency: 2 });
    expect(queue.reserve!()).toBeNull(); // not a worker yet
    const started: string[] = [];
    const jobGate = gate();
    queue.process(async (job) => {
      started.push(job.runId);
      await jobGate.opened;
    });
    const first = await reserveSlot(queue);
    const second = await reserveSlot(queue);
    expect(queue.reserve!()).toBeNull();
    await queue.enqueue({ runId: 'run_slot_0' });
    await sleep(200);
    expect(started).toEqual([]); // both slots are reserved: the job waits
    first.release();
    await vi.waitFor(() => expect(started).toEqual(['run_slot_0']));
    const task = gate();
    second.run(() => task.opened);
    second.release(); // harmless after run: the slot stays taken until the task settles
    await queue.enqueue({ runId: 'run_slot_1' });
    await sleep(200);
    expect(started).toEqual(['run_slot_0']);
    task.open();
    await vi.waitFor(() => expect(started).toEqual(['run_slot_0', 'run_slot_1']));
    jobGate.open();
  });

  it('gives a freed slot to a waiting job before a start can reserve it, so jobs keep their turn', async () => {
    const queue = createQueue({ concurrency: 1 });
    const started: string[] = [];
    queue.process(async (job) => void started.push(job.runId));
    const held = await reserveSlot(queue);
    await queue.enqueue({ runId: 'run_turn_0' });
    await sleep(200); // the job is taken from the queue and waits for the slot
    held.release();
    expect(queue.reserve!()).toBeNull(); // in the same tick: the slot is the waiting job's
    await vi.waitFor(() => expect(started).toEqual(['run_turn_0']));
    // Once the job has ended and nothing waits, starts get slots again.
    (await reserveSlot(queue)).release();
  });

  it('waits on close for a task running in a reserved slot', async () => {
    const queue = createQueue({ concurrency: 1 });
    queue.process(async () => {});
    const task = gate();
    let ended = false;
    (await reserveSlot(queue)).run(async () => {
      await task.opened;
      ended = true;
    });
    const closing = queue.close();
    await sleep(100);
    expect(ended).toBe(false);
    task.open();
    await closing;
    expect(ended).toBe(true);
    expect(queue.reserve!()).toBeNull();
  });
});

describe.runIf(REDIS_URL)('BullMqQueue', () => {
  function createQueue(queueName: string, concurrency?: number): BullMqQueue {
    const queue = new BullMqQueue({
      url: REDIS_URL!,
      prefix: PREFIX,
      queueName,
      concurrency,
      logger: pino({ level: 'silent' }),
    });
    open.push(queue);
    return queue;
  }

  it('keeps waiting jobs in Redis for the next worker', async () => {
    const queueName = uniqueQueueName();
    const producer = createQueue(queueName);
    await producer.enqueue({ runId: 'run_kept_1' });
    await producer.enqueue({ runId: 'run_kept_2' });
    await producer.close();
    const worker = createQueue(queueName);
    const handled: string[] = [];
    worker.process(async (job) => void handled.push(job.runId));
    await vi.waitFor(() => expect([...handled].sort()).toEqual(['run_kept_1', 'run_kept_2']), {
      timeout: 10_000,
    });
  });

  it('hands each job to one worker among several', async () => {
    const queueName = uniqueQueueName();
    const workers = [createQueue(queueName, 2), createQueue(queueName, 2)];
    const handled: string[] = [];
    for (const worker of workers) {
      worker.process(async (job) => {
        handled.push(job.runId);
        await sleep(5);
      });
    }
    const runIds = Array.from({ length: 30 }, (_, index) => `run_shared_${index}`);
    for (const runId of runIds) await workers[index(runId) % 2]!.enqueue({ runId });
    await vi.waitFor(() => expect(handled).toHaveLength(runIds.length), { timeout: 10_000 });
    await sleep(100);
    expect([...handled].sort()).toEqual([...runIds].sort());
  });

  it('gives a job back to the queue when its worker stays full, for a worker with room', async () => {
    const queueName = uniqueQueueName();
    const full = createQueue(queueName, 1);
    const running = gate();
    const handledBy: string[] = [];
    full.process(async (job) => {
      handledBy.push(`full ${job.runId}`);
      await running.opened;
    });
    await full.enqueue({ runId: 'run_long' });
    await vi.waitFor(() => expect(handledBy).toEqual(['full run_long']));
    await full.enqueue({ runId: 'run_next' }); // taken by the full worker, which waits for its slot
    await sleep(200);
    const roomy = createQueue(queueName, 1);
    roomy.process(async (job) => void handledBy.push(`roomy ${job.runId}`));
    // Handed back within a second or so, while the full worker's run still runs.
    await vi.waitFor(() => expect(handledBy).toEqual(['full run_long', 'roomy run_next']), { timeout: 5000 });
    running.open();
  });

  it('refuses a second handler', () => {
    const queue = createQueue(uniqueQueueName());
    queue.process(async () => {});
    expect(() => queue.process(async () => {})).toThrow(/already has a handler/);
  });
});

function index(runId: string): number {
  return Number(runId.split('_').at(-1));
}

/** A slot from `reserve`, once the queue gives one (a BullMQ worker does after its first fetch finds no job). */
async function reserveSlot(queue: RunQueue): Promise<QueueSlot> {
  let slot: QueueSlot | null = null;
  await vi.waitFor(() => {
    slot = queue.reserve!();
    expect(slot).not.toBeNull();
  });
  return slot!;
}
