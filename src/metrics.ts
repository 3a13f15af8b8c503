import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The Prometheus metrics of one Outrun instance, on their own registry (so tests can run many instances). */
export class Metrics {
  readonly registry = new Registry();

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

  readonly webhookDeliveries = new Counter({
    name: 'outrun_webhook_deliveries_total',
    help: 'Webhook delivery attempts, by result: delivered, retry (scheduled again) or failed (gave up).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly scheduleFires = new Counter({
    name: 'outrun_schedule_fires_total',
    help: 'Schedule due times handled, by result: fired (a run started), skipped (the chat was busy), failed, chat_deleted.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }
}
