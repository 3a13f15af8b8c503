/**
 * Named fault-injection points on the crash and recovery paths. Production code calls `hit(point)`, which
 * does nothing unless a test has armed that point; a test arms one to throw, delay or kill the process
 * exactly between two steps ("claimed" and "committed").
 */
export const FaultPoint = {
  /** After the run row is inserted and committed, before it is handed to the queue. */
  afterBegin: 'run.after-begin',
  /**
   * In the worker, before it claims the run (the run is still `pending`). While armed, a start never claims
   * its run in the begin transaction (the local fast path), so every claim passes here.
   */
  beforeClaim: 'run.before-claim',
  /** After the claim, before the agent loop owns the run. */
  beforeLoop: 'run.before-loop',
  /**
   * In a start into a chat with an active run (its locked transaction, which holds the chat's row lock),
   * after the run is inserted, before commit.
   */
  startBeforeCommit: 'run.start.before-commit',
  /**
   * Before an ending commits: inside its transaction after its writes, or before an owner's ending in one
   * statement (decision 0011) is sent. Either way a fault here leaves nothing of the ending written.
   */
  settleBeforeCommit: 'run.settle.before-commit',
  /**
   * After the ending of a run whose step budget said `continue` committed (the follow-up owed on its row),
   * before the follow-up starts.
   */
  beforeContinuation: 'run.before-continuation',
  /** Before a finished step is recorded (its `run_steps` row and the run's step count). */
  beforeStepRecord: 'run.before-step-record',
  /** Before a group-commit batch of events is inserted. */
  beforeEventInsert: 'events.before-insert',
  /** Before an instance renews the leases of the runs it executes. */
  heartbeat: 'run.heartbeat',
  /** In the sweeper, before it hands back a run whose lease ran out. */
  beforeRequeue: 'run.before-requeue',
  /** On shutdown, before the instance releases a run it could not finish in the grace period. */
  beforeRelease: 'run.before-release',
  /**
   * Inside the transaction that compacts a batch of finished runs into pages, after their rows were moved,
   * before commit (the context's `runIds` are the runs it moves).
   */
  compactionBeforeCommit: 'events.compaction.before-commit',
  /** Before a message is published on the bus. */
  busPublish: 'bus.publish',
} as const;

export type FaultPoint = (typeof FaultPoint)[keyof typeof FaultPoint];

/** What a point tells its handler: the run it is working on, or the runs of a batch. */
export interface FaultContext {
  runId?: string;
  runIds?: readonly string[];
}

export type FaultHandler = (context: FaultContext) => void | Promise<void>;

export class Faults {
  readonly #handlers = new Map<FaultPoint, FaultHandler>();
  readonly #hits = new Map<FaultPoint, number>();

  /** Arms `point`; the handler runs each time the point is hit until `clear`. */
  arm(point: FaultPoint, handler: FaultHandler): this {
    this.#handlers.set(point, handler);
    return this;
  }

  /** Arms `point` for its next `times` hits only. */
  armTimes(point: FaultPoint, times: number, handler: FaultHandler): this {
    let left = times;
    return this.arm(point, async (context) => {
      if (left <= 0) return;
      left -= 1;
      await handler(context);
    });
  }

  clear(point?: FaultPoint): void {
    if (point) this.#handlers.delete(point);
    else this.#handlers.clear();
  }

  async hit(point: FaultPoint, context: FaultContext = {}): Promise<void> {
    this.#hits.set(point, (this.#hits.get(point) ?? 0) + 1);
    const handler = this.#handlers.get(point);
    if (handler) await handler(context);
  }

  /** Whether a test has armed `point`. */
  isArmed(point: FaultPoint): boolean {
    return this.#handlers.has(point);
  }

  /** How often `point` was reached since this instance was made, armed or not. */
  hits(point: FaultPoint): number {
    return this.#hits.get(point) ?? 0;
  }

  /** Throws unless every armed point was reached: a test that armed the wrong point fails. */
  assertArmedPointsHit(): void {
    const missed = [...this.#handlers.keys()].filter((point) => this.hits(point) === 0);
    if (missed.length > 0) throw new Error(`Armed fault points never reached: ${missed.join(', ')}`);
  }
}

/**
 * Faults armed from the environment, for tests that drive a real server process:
 * `OUTRUN_FAULTS=run.before-loop:exit` makes the process exit abruptly at that point.
 */
export function faultsFromEnv(env: NodeJS.ProcessEnv): Faults {
  const faults = new Faults();
  for (const entry of (env.OUTRUN_FAULTS ?? '').split(',').filter(Boolean)) {
    const [point, action] = entry.split(':') as [FaultPoint, string | undefined];
    if (action === 'exit') faults.arm(point, () => process.exit(137));
    else if (action?.startsWith('delay=')) {
      const ms = Number(action.slice('delay='.length));
      faults.arm(point, () => new Promise((resolve) => setTimeout(resolve, ms)));
    }
  }
  return faults;
}
