import type { Logger } from 'pino';
import { BusChannel, type Bus } from '../bus/bus.ts';
import { FaultPoint, type Faults } from '../faults.ts';
import type { Metrics } from '../metrics.ts';
import type { RunQueue } from '../queue/queue.ts';
import type { RunRow } from '../store/schema.ts';
import type { RunExecutor } from './run-executor.ts';
import { toRunObject, type RunObject } from './run-object.ts';
import type { BeginRunOptions, RunService } from './run-service.ts';
import { RunErrorCode, RunStatus } from './run-status.ts';

export interface RunEngineOptions {
  runs: RunService;
  executor: RunExecutor;
  bus: Bus;
  queue: RunQueue;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  /**
   * This instance is the only one on its database (embedded mode): on start, every active run was left by a
   * previous process and is settled `aborted` with `server_restarted`. @default true
   */
  singleInstance?: boolean;
  /** How often the sweeper looks for runs whose lease ran out. @default 10000 */
  sweepIntervalMs?: number;
  /** A worker's lease; a pending run unclaimed for this long is handed to the queue again. @default 30000 */
  leaseMs?: number;
  /** Attempts a run gets: one whose worker died is resumed until then, and settled after. @default 3 */
  maxAttempts?: number;
  /** This instance executes runs (a worker); false for an API-only instance. @default true */
  worker?: boolean;
}

/**
 * The run engine: starts runs (the gate, then the queue, with a safety net between them), stops them from
 * any instance, executes them on workers and sweeps up runs a crash left behind. HTTP handlers, the CLI and
 * tests all go through this.
 */
export class RunEngine {
  readonly #options: RunEngineOptions;
  #sweepTimer: NodeJS.Timeout | null = null;
  #unsubscribeStop: (() => Promise<void>) | null = null;
  #sweeping: Promise<number> | null = null;

  constructor(options: RunEngineOptions) {
    this.#options = options;
  }

  /** Settles what a previous process left active, then starts taking runs and sweeping. */
  async start(): Promise<void> {
    const { bus, queue, executor } = this.#options;
    this.#unsubscribeStop = await bus.subscribe(BusChannel.runStop, (message) => {
      executor.abort((message as { runId: string }).runId, RunErrorCode.stopped);
    });
    if (this.#options.singleInstance !== false) await this.sweep({ all: true });
    if (this.#options.worker !== false) queue.process((job) => executor.execute(job.runId));
    const interval = this.#options.sweepIntervalMs ?? 10_000;
    this.#sweepTimer = setInterval(() => {
      this.sweep({ all: false }).catch((error: unknown) =>
        this.#options.logger.error({ err: error }, 'sweeping expired runs failed'),
      );
    }, interval);
    this.#sweepTimer.unref();
  }

  /**
   * Begins a run and hands it to a worker. Throws `RunAlreadyActiveError` (before any model call) if the
   * chat has an active run. If handing it over fails, the run is settled `failed` rather than left pending.
   */
  async startRun(options: BeginRunOptions): Promise<RunObject> {
    const run = await this.#options.runs.begin(options);
    try {
      await this.#options.faults.hit(FaultPoint.afterBegin, { runId: run.id });
      await this.#options.queue.enqueue({ runId: run.id });
    } catch (error) {
      this.#options.logger.error(
        { err: error, runId: run.id, chatId: run.chatId },
        'starting the run failed',
      );
      const settled = await this.#options.runs.settle({
        runId: run.id,
        status: RunStatus.failed,
        error: { code: RunErrorCode.startFailed, message: 'The run could not be started.' },
        chunks: [{ type: 'error', errorText: 'The run could not be started.' }],
      });
      return settled?.run ?? run;
    }
    return run;
  }

  /**
   * Stops a run, wherever it executes: the request is recorded on the row at once, then signalled on the
   * bus. A run still `pending` is settled here; a running one is aborted by its worker, which settles it.
   */
  async stopRun(runId: string): Promise<{ stopped: boolean; run: RunObject | null }> {
    const { runs, bus } = this.#options;
    const { stopped, run } = await runs.requestStop(runId);
    if (!stopped || !run) return { stopped, run: run ? toRunObject(run) : null };
    await bus.publish(BusChannel.runStop, { runId });
    if (run.status === RunStatus.pending) {
      const settled = await runs.settle({
        runId,
        status: RunStatus.aborted,
        error: { code: RunErrorCode.stopped, message: 'The run was stopped on request.' },
        fromStatuses: [RunStatus.pending],
        chunks: [{ type: 'abort' }],
      });
      if (settled) return { stopped, run: settled.run };
    }
    const latest = await runs.get(runId);
    return { stopped, run: latest ? toRunObject(latest) : toRunObject(run) };
  }

  /** Stops the chat's active run, if it has one. */
  async stopChat(chatId: string): Promise<{ stopped: boolean; run: RunObject | null }> {
    const active = await this.#options.runs.findActive(chatId);
    if (!active) return { stopped: false, run: null };
    return this.stopRun(active.id);
  }

  /**
   * Looks after runs a crash left behind. With `all` (single instance, at start) every active run not
   * executing here is settled `aborted`/`server_restarted`. Otherwise a running run whose lease ran out is
   * requeued for a worker to resume from its last finished step, or, once it has used `maxAttempts`,
   * settled `aborted`/`lease_expired`; a pending run nobody claimed within a lease is handed to the queue
   * again. Returns how many runs it requeued or settled.
   */
  async sweep(options: { all: boolean }): Promise<number> {
    if (this.#sweeping) return this.#sweeping;
    this.#sweeping = this.#sweep(options).finally(() => (this.#sweeping = null));
    return this.#sweeping;
  }

  async #sweep(options: { all: boolean }): Promise<number> {
    const { runs, executor, metrics, queue } = this.#options;
    metrics.sweeps.inc();
    const orphans = await runs.findOrphans({
      all: options.all,
      pendingOlderThanMs: this.#options.leaseMs ?? 30_000,
    });
    let handled = 0;
    for (const run of orphans) {
      if (executor.isActive(run.id)) continue;
      if (options.all) {
        if (await this.#settleOrphan(run, RunErrorCode.serverRestarted)) handled += 1;
      } else if (run.status === RunStatus.pending) {
        // Its job may be lost (a queue that dropped it); the job key makes a duplicate harmless.
        await queue.enqueue({ runId: run.id, attempt: run.attempt });
      } else if (run.attempt >= (this.#options.maxAttempts ?? 3)) {
        if (await this.#settleOrphan(run, RunErrorCode.leaseExpired)) handled += 1;
      } else {
        const requeued = await runs.requeue({ runId: run.id, attempt: run.attempt });
        if (!requeued) continue;
        handled += 1;
        metrics.runsSwept.inc({ reason: 'requeued' });
        this.#options.logger.warn(
          logContext(run, 'requeued'),
          'requeued a run whose worker stopped responding',
        );
        await queue.enqueue({ runId: run.id, attempt: requeued.attempt });
      }
    }
    return handled;
  }

  async #settleOrphan(
    run: RunRow,
    code: typeof RunErrorCode.serverRestarted | typeof RunErrorCode.leaseExpired,
  ) {
    const result = await this.#options.runs.settle({
      runId: run.id,
      status: RunStatus.aborted,
      error: { code, message: SWEEP_MESSAGES[code] },
      onlyIfLeaseExpired: code === RunErrorCode.leaseExpired,
      fromStatuses: code === RunErrorCode.leaseExpired ? [RunStatus.running] : undefined,
      chunks: [{ type: 'abort' }],
    });
    if (!result) return false;
    this.#options.metrics.runsSwept.inc({ reason: code });
    this.#options.logger.warn(logContext(run, code), 'settled a run left active');
    return true;
  }

  /**
   * Graceful shutdown: stop taking runs, give the ones executing `graceMs` to finish, then abort them
   * (`aborted`/`server_shutdown`) and wait until each is settled, so nothing is left for a restart to guess.
   */
  async shutdown(options: { graceMs?: number } = {}): Promise<void> {
    const { executor, queue } = this.#options;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    const closing = queue.close();
    const grace = options.graceMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      executor.idle(),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, grace))),
    ]);
    clearTimeout(timer);
    await executor.abortAll(RunErrorCode.serverShutdown);
    await closing;
    await this.#sweeping;
    await this.#unsubscribeStop?.();
  }
}

const SWEEP_MESSAGES = {
  server_restarted: 'The server restarted while the run was active.',
  lease_expired: 'The worker running this run stopped responding, and the run ran out of attempts.',
} as const;

function logContext(run: RunRow, code: string) {
  return { runId: run.id, chatId: run.chat_id, previousStatus: run.status, code };
}
