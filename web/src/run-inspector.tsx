import { useCallback, useEffect, useState } from 'react';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import { isActiveStatus, type RunObject, type RunStep } from '../../src/protocol/index.ts';
import {
  STATUS_LABELS,
  explainError,
  explainRun,
  formatDuration,
  formatTime,
  formatUsage,
  runDuration,
} from './explain.ts';
import { Parts } from './message-view.tsx';
import { navigate } from './router.ts';

/** Polls `load` every `intervalMs` while `active` says so. */
function usePolled<T>(load: () => Promise<T>, active: (value: T) => boolean, intervalMs = 1500) {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const next = await load();
        if (cancelled) return;
        setValue(next);
        setError(null);
        if (active(next)) timer = setTimeout(tick, intervalMs);
      } catch (caught) {
        if (cancelled) return;
        setError(caught instanceof Error ? caught : new Error(String(caught)));
        timer = setTimeout(tick, intervalMs * 2);
      }
    };
    void tick();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [load, active, intervalMs]);
  return { value, error };
}

function StatusBadge({ status }: { status: RunObject['status'] }) {
  return <span className={`badge badge-${status}`}>{STATUS_LABELS[status]}</span>;
}

const anyActive = (runs: RunObject[]) => runs.some((run) => isActiveStatus(run.status));

/** A chat's runs, newest first. */
export function RunHistory({ client, chatId }: { client: OutrunClient; chatId: string }) {
  const load = useCallback(
    async () => (await client.listRuns(chatId, { limit: 100 })).items,
    [client, chatId],
  );
  const { value: runs, error } = usePolled(load, anyActive);
  if (error && !runs) return <div className="banner banner-error">{explainError(error)}</div>;
  if (!runs) return <div className="empty">Loading…</div>;
  if (runs.length === 0) return <div className="empty">No runs in this chat yet.</div>;
  return (
    <ul className="run-list">
      {runs.map((run) => (
        <li key={run.id}>
          <a
            href={`/chats/${chatId}/runs/${run.id}`}
            onClick={(event) => {
              event.preventDefault();
              navigate({ screen: 'run', chatId, runId: run.id });
            }}
          >
            <StatusBadge status={run.status} />
            <span className="run-when">{formatTime(run.createdAt)}</span>
            <span className="muted">
              {run.stepCount} {run.stepCount === 1 ? 'step' : 'steps'} · {formatDuration(runDuration(run))}
            </span>
            {run.error ? <span className="run-error-code">{run.error.code}</span> : null}
          </a>
        </li>
      ))}
    </ul>
  );
}

const isActiveRun = (data: { run: RunObject }) => isActiveStatus(data.run.status);

/** One run: status, outcome, timings, usage, and a timeline of its steps with their tool calls. */
export function RunInspector({ client, runId }: { client: OutrunClient; runId: string }) {
  const load = useCallback(async () => {
    const [run, steps] = await Promise.all([client.getRun(runId), client.listRunSteps(runId)]);
    return { run, steps };
  }, [client, runId]);
  const { value, error } = usePolled(load, isActiveRun, 1000);
  if (error && !value) return <div className="banner banner-error">{explainError(error)}</div>;
  if (!value) return <div className="empty">Loading…</div>;
  const { run, steps } = value;
  const outcome = explainRun(run);
  return (
    <div className="inspector">
      <dl className="facts">
        <dt>Status</dt>
        <dd>
          <StatusBadge status={run.status} />
          {run.stopRequestedAt && isActiveStatus(run.status) ? (
            <span className="muted"> stop requested</span>
          ) : null}
        </dd>
        {outcome ? (
          <>
            <dt>Why</dt>
            <dd className="outcome-text">
              {outcome} {run.error ? <code>{run.error.code}</code> : null}
            </dd>
          </>
        ) : null}
        <dt>Model</dt>
        <dd>
          <code>{run.model}</code>
        </dd>
        <dt>Started</dt>
        <dd>
          {formatTime(run.startedAt ?? run.createdAt)} <span className="muted">by {run.trigger}</span>
        </dd>
        <dt>Duration</dt>
        <dd>
          {formatDuration(runDuration(run))}
          {run.finishedAt ? '' : ' so far'}
        </dd>
        <dt>Steps</dt>
        <dd>{run.stepCount}</dd>
        <dt>Usage</dt>
        <dd>{formatUsage(run.usage)}</dd>
        {run.attempt > 1 ? (
          <>
            <dt>Attempts</dt>
            <dd>{run.attempt} (resumed after a worker was lost)</dd>
          </>
        ) : null}
        <dt>Run id</dt>
        <dd>
          <code className="id">{run.id}</code>
        </dd>
      </dl>

      <h3>Timeline</h3>
      {steps.length === 0 ? <p className="muted">No step has finished yet.</p> : null}
      <ol className="timeline">
        {steps.map((step) => (
          <StepView key={step.step} step={step} />
        ))}
      </ol>
      {!isActiveStatus(run.status) && run.status !== 'succeeded' ? (
        <p className="muted">
          The step in progress when the run ended is not listed; what it wrote before the end is in the chat.
        </p>
      ) : null}
    </div>
  );
}

function StepView({ step }: { step: RunStep }) {
  const tools = step.parts.filter(
    (part) => part.type.startsWith('tool-') || part.type === 'dynamic-tool',
  ).length;
  return (
    <li className="step">
      <div className="step-head">
        <strong>Step {step.step}</strong>
        <span className="muted">
          {formatTime(step.startedAt)} ·{' '}
          {formatDuration(Date.parse(step.finishedAt) - Date.parse(step.startedAt))} ·{' '}
          {formatUsage(step.usage)}
          {tools > 0 ? ` · ${tools} tool ${tools === 1 ? 'call' : 'calls'}` : ''}
        </span>
      </div>
      <div className="step-body">
        <Parts parts={step.parts} />
      </div>
    </li>
  );
}
