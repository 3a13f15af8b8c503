import { describe, expect, it } from 'vitest';
import { MAX_MODEL_LABELS, Metrics, observeFirstToken, observeRunEnded } from './metrics.ts';

describe('run metrics helpers', () => {
  it('records an ended run: duration, count, tokens and cost by model', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    observeRunEnded(metrics, {
      status: 'succeeded',
      trigger: 'api',
      model: 'scripted',
      usage: { inputTokens: 120, outputTokens: 40 },
      costUsd: 0.0002,
      startedAt: '2026-01-01T00:00:00.000Z',
      finishedAt: '2026-01-01T00:00:02.500Z',
    });
    observeFirstToken(metrics, { model: 'scripted', ms: 80 });
    const text = await metrics.registry.metrics();
    expect(text).toContain(
      'outrun_run_duration_seconds_bucket{le="2.5",status="succeeded",trigger="api",model="scripted"} 1',
    );
    expect(text).toContain('outrun_runs_ended_total{status="succeeded",trigger="api",model="scripted"} 1');
    expect(text).toContain('outrun_tokens_total{model="scripted",kind="input"} 120');
    expect(text).toContain('outrun_tokens_total{model="scripted",kind="output"} 40');
    expect(text).toContain('outrun_cost_usd_total{model="scripted"} 0.0002');
    expect(text).toContain('outrun_time_to_first_token_seconds_bucket{le="0.1",model="scripted"} 1');
  });

  it('labels at most MAX_MODEL_LABELS models by name and counts the rest as "other"', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const models = Array.from({ length: MAX_MODEL_LABELS + 20 }, (_, i) => `compatible:model-${i}`);
    for (const model of models) {
      observeRunEnded(metrics, { status: 'failed', trigger: 'api', model, usage: { inputTokens: 1 } });
      observeFirstToken(metrics, { model, ms: 10 });
    }
    // A model labelled before the cap keeps its own series.
    observeRunEnded(metrics, { status: 'failed', trigger: 'api', model: models[0]!, usage: null });
    const text = await metrics.registry.metrics();
    const labelled = new Set(
      [...text.matchAll(/outrun_runs_ended_total\{[^}]*model="([^"]+)"\}/g)].map((match) => match[1]),
    );
    expect(labelled.size).toBe(MAX_MODEL_LABELS + 1);
    expect(text).toContain(
      'outrun_runs_ended_total{status="failed",trigger="api",model="compatible:model-0"} 2',
    );
    expect(text).toContain('outrun_runs_ended_total{status="failed",trigger="api",model="other"} 20');
    expect(text).toContain('outrun_tokens_total{model="other",kind="input"} 20');
    expect(text).toContain('outrun_time_to_first_token_seconds_count{model="other"} 20');
    expect(text).not.toContain(`model-${MAX_MODEL_LABELS}"`);
  });

  it('records no duration for a run that never started', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    observeRunEnded(metrics, { status: 'aborted', trigger: 'user', model: 'scripted', startedAt: null });
    const text = await metrics.registry.metrics();
    expect(text).toContain('outrun_runs_ended_total{status="aborted",trigger="user",model="scripted"} 1');
    expect(text).not.toMatch(/outrun_run_duration_seconds_count\{[^}]*\} [1-9]/);
  });
});

describe('Node default metrics', () => {
  it('starts them at the first scrape, not before, and only once', async () => {
    const metrics = new Metrics();
    const lag = () => metrics.registry.getSingleMetric('nodejs_eventloop_lag_p99_seconds');
    expect(lag()).toBeUndefined();
    expect(await metrics.scrape()).toMatch(/^nodejs_eventloop_lag_p99_seconds /m);
    expect(lag()).toBeDefined();
    expect(await metrics.scrape()).toMatch(/^process_cpu_user_seconds_total /m);
  });

  it('are left out with defaultMetrics: false', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    expect(await metrics.scrape()).not.toContain('nodejs_');
  });
});
