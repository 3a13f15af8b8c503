import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.ts';
import type { RunService } from './run-service.ts';

export interface LeaseKeeperOptions {
  runs: RunService;
  /** This instance's lease owner name. */
  owner: string;
  /** How long a lease lasts without renewal. @default 30000 */
  leaseMs?: number;
  clock?: Clock;
  logger: Logger;
  /** The run's lease was taken over or the run changed status elsewhere: stop executing it. */
  onLost: (runId: string) => void;
  /** A stop was recorded on the run's row (by any instance): the bus message may have been lost. */
  onStopRequested: (runId: string) => void;
}

/**
 * Keeps the leases of the runs this instance executes: one statement every third of a lease renews them
 * all, and reports runs whose lease was lost or that someone asked to stop.
 */
export class LeaseKeeper {
  readonly #options: LeaseKeeperOptions;
  readonly #held = new Map<string, number>();
  readonly #clock: Clock;
  readonly leaseMs: number;
  #timer: NodeJS.Timeout | null = null;
  /** The timer's renewal in flight: the next tick skips while it waits (for a lock, a slow database). */
  #renewing: Promise<void> | null = null;

  constructor(options: LeaseKeeperOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.leaseMs = options.leaseMs ?? 30_000;
  }

  /** When a lease taken or renewed now runs out. */
  expiresAt(): Date {
    return new Date(this.#clock.now().getTime() + this.leaseMs);
  }

  /** Starts renewing the run's lease, held under `epoch`. */
  hold(runId: string, epoch: number): void {
    this.#held.set(runId, epoch);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#tick(), Math.max(50, Math.floor(this.leaseMs / 3)));
      this.#timer.unref();
    }
  }

  /** Stops renewing the run's lease (it ended, was released, or was lost). */
  drop(runId: string): void {
    this.#held.delete(runId);
    if (this.#held.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }

  /**
   * One renewal at a time: a renewal that waits (on a run's row locked by its ending, say) would otherwise
   * be joined by another every tick, each holding a connection, until the pool had none left for the rest.
   */
  #tick(): void {
    if (this.#renewing) return;
    this.#renewing = this.renew().finally(() => {
      this.#renewing = null;
    });
  }

  /** Renews every held lease once; the timer calls this, and tests may too. */
  async renew(): Promise<void> {
    const held = [...this.#held.entries()].map(([runId, epoch]) => ({ runId, epoch }));
    if (held.length === 0) return;
    try {
      const leases = await this.#options.runs.heartbeatMany({
        runs: held,
        owner: this.#options.owner,
        leaseExpiresAt: this.expiresAt(),
      });
      for (const { runId, epoch } of held) {
        // Only runs still held under the epoch that was renewed (one may have ended meanwhile).
        if (this.#held.get(runId) !== epoch) continue;
        const lease = leases.get(runId);
        if (!lease) this.#options.onLost(runId);
        else if (lease.stopRequested) this.#options.onStopRequested(runId);
      }
    } catch (error) {
      this.#options.logger.warn({ err: error, runs: held.length }, 'renewing leases failed; retrying');
    }
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
