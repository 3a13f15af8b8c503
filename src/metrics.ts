import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PoolUsage } from './store/database.ts';

/** Seconds: run durations, from a fraction of a second (scripted) to an hour (a long agent loop). */
const RUN_DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/** Seconds: time to first token, from a local model's tens of milliseconds to a slow provider's minute. */
const FIRST_TOKEN_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60];
/** Seconds: HTTP answers; a stream's duration is how long the client followed it. */
const HTTP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * Distinct `model` label values an instance keeps. A run's model is chosen by its caller, and with a provider
 * configured any `<provider>:<name>` starts a run, so without a cap a caller could grow every series by model
 * without end (memory and every scrape). Models past the cap are counted under `MODEL_LABEL_OTHER`.
 */
export const MAX_MODEL_LABELS = 100;
/** The `model` label of the models past `MAX_MODEL_LABELS`. */
export const MODEL_LABEL_OTHER = 'other';

/** The Prometheus metrics of one Outrun instance, on their own registry (so tests can run many instances). */
export class Metrics {
  readonly registry = new Registry();
  /** The models labelled by name so far (at most `MAX_MODEL_LABELS`). */
  readonly #modelLabels = new Set<string>();

  /** The `model` label of `model`: its id while fewer than `MAX_MODEL_LABELS` are labelled, else "other". */
  modelLabel(model: string): string {
    if (this.#modelLabels.has(model)) return model;
    if (this.#modelLabels.size >= MAX_MODEL_LABELS) return MODEL_LABEL_OTHER;
    this.#modelLabels.add(model);
    return model;
  }

  readonly runsStarted = new Counter({
    name: 'outrun_runs_started_total',
    help: 'Runs begun (inserted past the one-active-run gate).',
    registers: [this.registry],
  });
  readonly runsSettled = new Counter({
    name: 'outrun_runs_settled_total',
    help: 'Runs settled, by terminal status.',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  readonly runTransitions = new Counter({
    name: 'outrun_run_transitions_total',
    help: 'Run status changes, by the status entered.',
    labelNames: ['to'] as const,
    registers: [this.registry],
  });
  readonly runsRejected = new Counter({
    name: 'outrun_runs_rejected_total',
    help: 'Run starts refused with 409 run_already_active.',
    registers: [this.registry],
  });
  readonly activeRuns = new Gauge({
    name: 'outrun_active_runs',
    help: 'Runs this instance is executing right now.',
    registers: [this.registry],
  });
  readonly eventsAppended = new Counter({
    name: 'outrun_events_appended_total',
    help: 'Run events made durable in the event log.',
    registers: [this.registry],
  });
  readonly appendBatchSize = new Histogram({
    name: 'outrun_event_append_batch_size',
    help: 'Events written per group-commit insert.',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
    registers: [this.registry],
  });
  readonly compactionQueue = new Gauge({
    name: 'outrun_compaction_queue',
    help: 'Finished runs this instance has scheduled for compaction, not yet taken into a batch.',
    registers: [this.registry],
  });
  readonly appendRetries = new Counter({
    name: 'outrun_event_append_retries_total',
    help: 'Group-commit inserts retried after a transient database error.',
    registers: [this.registry],
  });
  readonly settleRetries = new Counter({
    name: 'outrun_settle_retries_total',
    help: 'Settle transactions retried after a transient database error.',
    registers: [this.registry],
  });
  readonly endingFallbacks = new Counter({
    name: 'outrun_ending_fallbacks_total',
    help: "Owners' endings whose one statement declined and took the transaction instead (decision 0011), by reason: run, chat, queued, listener.",
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly settleFailures = new Counter({
    name: 'outrun_settle_failures_total',
    help: 'Settles that gave up after their retries (the sweeper settles those runs later).',
    registers: [this.registry],
  });
  readonly sweeps = new Counter({
    name: 'outrun_sweeps_total',
    help: 'Sweeper passes over runs left active by a crash or an expired lease.',
    registers: [this.registry],
  });
  readonly runsSwept = new Counter({
    name: 'outrun_runs_swept_total',
    help: 'Runs settled by the sweeper, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly streamReaders = new Gauge({
    name: 'outrun_stream_readers',
    help: 'Open run streams (SSE connections) on this instance.',
    registers: [this.registry],
  });

  readonly authFailures = new Counter({
    name: 'outrun_auth_failures_total',
    help:
      'Requests on /v1 whose API key did not authenticate, by result: unauthorized (looked up, 401) or ' +
      'refused (the client address was past OUTRUN_AUTH_FAILURES_PER_MINUTE: 429, not looked up).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly webhookDeliveries = new Counter({
    name: 'outrun_webhook_deliveries_total',
    help: 'Webhook delivery attempts, by result: delivered, retry (scheduled again) or failed (gave up).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly runDuration = new Histogram({
    name: 'outrun_run_duration_seconds',
    help: 'From a run start (first claimed) to its terminal status, by status, trigger and model.',
    labelNames: ['status', 'trigger', 'model'] as const,
    buckets: RUN_DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly runsEnded = new Counter({
    name: 'outrun_runs_ended_total',
    help: 'Runs that reached a terminal status, by status, trigger and model.',
    labelNames: ['status', 'trigger', 'model'] as const,
    registers: [this.registry],
  });
  readonly timeToFirstToken = new Histogram({
    name: 'outrun_time_to_first_token_seconds',
    help: 'From a model call to its first streamed token, by model.',
    labelNames: ['model'] as const,
    buckets: FIRST_TOKEN_BUCKETS,
    registers: [this.registry],
  });
  readonly tokens = new Counter({
    name: 'outrun_tokens_total',
    help: 'Tokens used by runs, by model and kind (input or output).',
    labelNames: ['model', 'kind'] as const,
    registers: [this.registry],
  });
  readonly costUsd = new Counter({
    name: 'outrun_cost_usd_total',
    help: 'What runs cost in US dollars, by model (from the model prices).',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'outrun_queue_depth',
    help: 'Runs waiting for a worker (status pending), sampled when metrics are scraped.',
    registers: [this.registry],
  });
  /** Reads the worker's limit on runs at once when metrics are scraped (`RunQueue.admissionLimit`). */
  readAdmissionLimit: (() => number | undefined) | null = null;
  readonly workerRunLimit = new Gauge({
    name: 'outrun_worker_run_limit',
    help: 'Runs this worker admits at once now: OUTRUN_WORKER_CONCURRENCY, or the load limit under it.',
    registers: [this.registry],
    collect: () => {
      const limit = this.readAdmissionLimit?.();
      if (limit !== undefined) this.workerRunLimit.set(limit);
    },
  });
  /** Reads how busy the database pool is when metrics are scraped (`DatabaseHandle.poolUsage`). */
  readPoolUsage: (() => PoolUsage | undefined) | null = null;
  readonly databasePoolConnections = new Gauge({
    name: 'outrun_database_pool_connections',
    help: 'Connections of the PostgreSQL pool requests and runs share, by state: in_use or idle.',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const usage = this.readPoolUsage?.();
      if (!usage) return;
      this.databasePoolConnections.set({ state: 'in_use' }, usage.inUse);
      this.databasePoolConnections.set({ state: 'idle' }, usage.idle);
    },
  });
  readonly databasePoolWaiting = new Gauge({
    name: 'outrun_database_pool_waiting',
    help: 'Statements waiting for a PostgreSQL pool connection to come free.',
    registers: [this.registry],
    collect: () => {
      const usage = this.readPoolUsage?.();
      if (usage) this.databasePoolWaiting.set(usage.waiting);
    },
  });
  readonly scheduleFires = new Counter({
    name: 'outrun_schedule_fires_total',
    help: 'Schedule fires, by result: started, skipped (chat busy), enqueued, interrupted or failed.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly httpRequestDuration = new Histogram({
    name: 'outrun_http_request_duration_seconds',
    help: 'HTTP answers, by route pattern, method and status code.',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: HTTP_DURATION_BUCKETS,
    registers: [this.registry],
  });

  readonly #defaultMetrics: boolean;
  #collectingDefaults = false;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    this.#defaultMetrics = options.defaultMetrics !== false;
  }

  /**
   * The metrics in Prometheus' text format. The first scrape starts Node's default metrics (prom-client's
   * `process_*` and `nodejs_*`), from then on: their event-loop histogram wakes the process every 10 ms, most
   * of what an idle instance costs, so an instance nobody scrapes does not pay for it.
   */
  async scrape(): Promise<string> {
    if (this.#defaultMetrics && !this.#collectingDefaults) {
      this.#collectingDefaults = true;
      collectDefaultMetrics({ register: this.registry });
    }
    return this.registry.metrics();
  }
}

/** What `observeRunEnded` reads of a run: the fields of the run object (DESIGN §4) it labels and sums. */
export interface EndedRun {
  status: string;
  trigger: string;
  model: string;
  usage?: { inputTokens?: number; outputTokens?: number } | null;
  costUsd?: number | null;
  /** When the run first started executing (ISO 8601); absent or null: never started (no duration). */
  startedAt?: string | null;
  /** When it reached its terminal status (ISO 8601). @default now */
  finishedAt?: string | null;
}

/**
 * Records a run that reached its terminal status: its duration, the runs counter, and its tokens and cost
 * by model. Call it once per run, where the terminal transition commits.
 */
export function observeRunEnded(metrics: Metrics, run: EndedRun): void {
  const model = metrics.modelLabel(run.model);
  const labels = { status: run.status, trigger: run.trigger, model };
  metrics.runsEnded.inc(labels);
  if (run.startedAt) {
    const started = Date.parse(run.startedAt);
    const finished = run.finishedAt ? Date.parse(run.finishedAt) : Date.now();
    if (Number.isFinite(started) && Number.isFinite(finished) && finished >= started) {
      metrics.runDuration.observe(labels, (finished - started) / 1000);
    }
  }
  const input = run.usage?.inputTokens ?? 0;
  const output = run.usage?.outputTokens ?? 0;
  if (input > 0) metrics.tokens.inc({ model, kind: 'input' }, input);
  if (output > 0) metrics.tokens.inc({ model, kind: 'output' }, output);
  if (run.costUsd && run.costUsd > 0) metrics.costUsd.inc({ model }, run.costUsd);
}

/** Records the time from a model call to its first streamed token. */
export function observeFirstToken(metrics: Metrics, options: { model: string; ms: number }): void {
  if (options.ms < 0) return;
  metrics.timeToFirstToken.observe({ model: metrics.modelLabel(options.model) }, options.ms / 1000);
}

/** Records one HTTP answer; `route` is the route pattern (`/v1/runs/:runId`), never the raw URL. */
export function observeHttpRequest(
  metrics: Metrics,
  options: { route: string; method: string; status: number; ms: number },
): void {
  metrics.httpRequestDuration.observe(
    { route: options.route, method: options.method, status: String(options.status) },
    options.ms / 1000,
  );
}
