/** A run waiting for a worker. */
export interface RunJob {
  runId: string;
}

/**
 * Dispatch of runs to workers. `enqueue` hands a run over; `process` makes this instance a worker.
 * A job may be delivered more than once (a worker crash, a retry): the handler's claim on the run row
 * makes that harmless.
 */
export interface RunQueue {
  enqueue(job: RunJob): Promise<void>;
  process(handler: (job: RunJob) => Promise<void>): void;
  /** Stops taking jobs and waits for the ones being handled to return. */
  close(): Promise<void>;
}
