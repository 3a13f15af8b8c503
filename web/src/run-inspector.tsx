import { useCallback, useEffect, useMemo, useState, type ReactNode } from 'react';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import {
  isActiveStatus,
  type Message,
  type MessagePart,
  type RunChunk,
  type RunObject,
  type RunStep,
} from '../../src/protocol/index.ts';
import {
  STATUS_LABELS,
  TRIGGER_LABELS,
  explainError,
  explainRun,
  formatCost,
  formatDuration,
  formatTime,
  formatUsage,
  runDuration,
} from './explain.ts';
import { CUT_BY_BUDGET, formatJson, groupSteps, Parts, type StepGroup } from './message-view.tsx';
import { navigate, routePath } from './router.ts';

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

const anyActive = (runs: RunObject[]) =>
  runs.some((run) => isActiveStatus(run.status) || run.status === 'queued');

function RunLink({ chatId, runId, children }: { chatId: string; runId: string; children: ReactNode }) {
  return (
    <a
      href={routePath({ screen: 'run', chatId, runId })}
      onClick={(event) => {
        event.preventDefault();
        navigate({ screen: 'run', chatId, runId });
      }}
    >
      {children}
    </a>
  );
}

/** A chat's runs, newest first, filtered by what started them and how they ended. */
export function RunHistory({ client, chatId }: { client: OutrunClient; chatId: string }) {
  const load = useCallback(
    async () => (await client.listRuns(chatId, { limit: 100 })).items,
    [client, chatId],
  );
  const { value: runs, error } = usePolled(load, anyActive);
  const [trigger, setTrigger] = useState<string>('');
  const [status, setStatus] = useState<string>('');
  if (error && !runs) return <div className="banner banner-error">{explainError(error)}</div>;
  if (!runs) return <div className="empty">Loading…</div>;
  if (runs.length === 0) return <div className="empty">No runs in this chat yet.</div>;
  const shown = runs.filter(
    (run) => (!trigger || run.trigger === trigger) && (!status || run.status === status),
  );
  return (
    <>
      <div className="run-filters">
        <label>
          Started by{' '}
          <select
            value={trigger}
            onChange={(event) => setTrigger(event.target.value)}
            aria-label="Started by"
          >
            <option value="">anything</option>
            {Object.entries(TRIGGER_LABELS).map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Status{' '}
          <select value={status} onChange={(event) => setStatus(event.target.value)} aria-label="Status">
            <option value="">any</option>
            {Object.entries(STATUS_LABELS).map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <span className="muted small">
          {shown.length} of {runs.length}
        </span>
      </div>
      {shown.length === 0 ? <p className="muted">No run matches.</p> : null}
      <ul className="run-list">
        {shown.map((run) => (
          <li key={run.id} data-run-id={run.id}>
            <a
              href={routePath({ screen: 'run', chatId, runId: run.id })}
              onClick={(event) => {
                event.preventDefault();
                navigate({ screen: 'run', chatId, runId: run.id });
              }}
            >
              <StatusBadge status={run.status} />
              <span className="run-when">{formatTime(run.createdAt)}</span>
              <span className="muted">
                {run.stepCount} {run.stepCount === 1 ? 'step' : 'steps'} · {formatDuration(runDuration(run))}
                {run.costUsd ? ` · ${formatCost(run.costUsd)}` : ''}
              </span>
              {run.trigger !== 'user' ? (
                <span className={`trigger trigger-${run.trigger}`}>by {TRIGGER_LABELS[run.trigger]}</span>
              ) : null}
              {run.error ? <span className="run-error-code">{run.error.code}</span> : null}
            </a>
          </li>
        ))}
      </ul>
    </>
  );
}

const isActiveRun = (data: { run: RunObject }) =>
  isActiveStatus(data.run.status) || data.run.status === 'queued';

interface LoggedEvent {
  seq: number;
  type: string;
  /** When this page received it (the stream carries no time); a `data-run` chunk's own `updatedAt`. */
  time: string;
  chunk: RunChunk;
}

/** The run's raw events (seq, type, time), followed live while the run goes. */
function useEventLog(client: OutrunClient, runId: string): { events: LoggedEvent[]; error: Error | null } {
  const [events, setEvents] = useState<LoggedEvent[]>([]);
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    const controller = new AbortController();
    setEvents([]);
    void (async () => {
      let batch: LoggedEvent[] = [];
      let flush: ReturnType<typeof setTimeout> | undefined;
      try {
        for await (const { seq, chunk } of client.followRun(runId, { signal: controller.signal })) {
          const data = (chunk as { data?: { updatedAt?: string } }).data;
          batch.push({
            seq,
            type: chunk.type,
            time: chunk.type === 'data-run' && data?.updatedAt ? data.updatedAt : new Date().toISOString(),
            chunk,
          });
          flush ??= setTimeout(() => {
            flush = undefined;
            const added = batch;
            batch = [];
            setEvents((current) => [...current, ...added]);
          }, 100);
        }
        clearTimeout(flush);
        const added = batch;
        if (!controller.signal.aborted) setEvents((current) => [...current, ...added]);
      } catch (caught) {
        if (!controller.signal.aborted)
          setError(caught instanceof Error ? caught : new Error(String(caught)));
      }
    })();
    return () => controller.abort();
  }, [client, runId]);
  return { events, error };
}

/** One run: status, outcome, trigger, timings, spending, a timeline of its steps, and its raw events. */
export function RunInspector({
  client,
  chatId,
  runId,
}: {
  client: OutrunClient;
  chatId: string;
  runId: string;
}) {
  const load = useCallback(async () => {
    const [run, steps, messages] = await Promise.all([
      client.getRun(runId),
      client.listRunSteps(runId),
      client.allMessages(chatId),
    ]);
    const message = messages.find((candidate) => candidate.id === run.assistantMessageId) ?? null;
    return { run, steps, message };
  }, [client, chatId, runId]);
  const { value, error } = usePolled(load, isActiveRun, 1000);
  const log = useEventLog(client, runId);
  if (error && !value) return <div className="banner banner-error">{explainError(error)}</div>;
  if (!value) return <div className="empty">Loading…</div>;
  const { run, steps, message } = value;
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
          {run.waiting ? (
            <span className="muted">
              {' '}
              for {run.waiting.reason === 'approval' ? 'an approval' : 'more budget'}
            </span>
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
        <dt>Started by</dt>
        <dd className="run-trigger">
          {TRIGGER_LABELS[run.trigger]}
          {run.parentRunId ? (
            <>
              {' · after '}
              <RunLink chatId={chatId} runId={run.parentRunId}>
                the run before
              </RunLink>
            </>
          ) : null}
          {run.scheduleId ? (
            <span className="muted">
              {' '}
              · schedule <code>{run.scheduleId}</code>
            </span>
          ) : null}
        </dd>
        <dt>Model</dt>
        <dd>
          <code>{run.model}</code>
        </dd>
        <dt>Started</dt>
        <dd>{formatTime(run.startedAt ?? run.createdAt)}</dd>
        <dt>Duration</dt>
        <dd>
          {formatDuration(runDuration(run))}
          {run.finishedAt ? '' : ' so far'}
        </dd>
        <dt>Steps</dt>
        <dd>{run.stepCount}</dd>
        <dt>Usage</dt>
        <dd>{formatUsage(run.usage)}</dd>
        <dt>Cost</dt>
        <dd>{formatCost(run.costUsd)}</dd>
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
      <Timeline run={run} steps={steps} message={message} />
      <NotableEvents events={log.events} />
      <details className="event-log">
        <summary>
          Raw events <span className="muted small">({log.events.length})</span>
        </summary>
        {log.error ? <p className="banner banner-error">{explainError(log.error)}</p> : null}
        <table>
          <thead>
            <tr>
              <th scope="col">seq</th>
              <th scope="col">type</th>
              <th scope="col">time</th>
            </tr>
          </thead>
          <tbody>
            {log.events.slice(0, 5000).map((event) => (
              <tr key={event.seq}>
                <td>{event.seq}</td>
                <td>
                  <code>{event.type}</code>
                </td>
                <td>{new Date(event.time).toLocaleTimeString()}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </div>
  );
}

/**
 * The run's steps in order: finished steps as recorded, steps a crash cut short (from the message, marked),
 * and the step in progress when the run ended or now, with what it wrote so far.
 */
function Timeline({ run, steps, message }: { run: RunObject; steps: RunStep[]; message: Message | null }) {
  const groups = message ? groupSteps(message.parts) : [];
  const ended = !isActiveStatus(run.status);
  const items: ReactNode[] = [];
  let finished = 0;
  for (const [index, group] of groups.entries()) {
    // Data parts before the first step (a compaction) are no step of their own.
    if (group.parts[0]?.type !== 'step-start') continue;
    if (group.interrupted) {
      items.push(
        <li key={`i${index}`} className="step step-interrupted-item">
          <div className="step-head">
            <strong>
              Step {finished + 1},{' '}
              {group.interrupted.reason === CUT_BY_BUDGET ? 'cut at the budget' : 'interrupted'}
            </strong>
            <span className="muted">
              {' '}
              {group.interrupted.reason} · {interruptedNote(group.interrupted, ended)}
            </span>
          </div>
          <div className="step-body step-interrupted">
            <Parts parts={group.parts} ended />
          </div>
        </li>,
      );
      continue;
    }
    const step = steps[finished];
    finished++;
    // The message shows each call as it ended; a step's record, as it was when the step finished (a call that
    // waited for approval got its output in the execution the answer resumed).
    if (step) items.push(<StepView key={`s${step.step}`} step={step} parts={group.parts} ended={ended} />);
    else if (run.status !== 'succeeded' && hasParts(group.parts)) {
      items.push(<PartialStep key={`p${index}`} number={finished} run={run} parts={group.parts} />);
    }
  }
  // Steps recorded that the message does not show (a message still loading, say).
  for (const step of steps.slice(finished)) {
    items.push(<StepView key={`s${step.step}`} step={step} ended={ended} />);
  }
  if (items.length === 0) return <p className="muted">No step has started yet.</p>;
  return <ol className="timeline">{items}</ol>;
}

/** What became of a step cut short: a crash's or a restart's is redone; a budget cut's only if the run goes on. */
function interruptedNote(interrupted: NonNullable<StepGroup['interrupted']>, ended: boolean): string {
  if (interrupted.redone || interrupted.reason !== CUT_BY_BUDGET) return 'redone in the next step';
  return ended ? 'not redone: the run ended' : 'redone if the run continues';
}

function hasParts(parts: MessagePart[]): boolean {
  return parts.some((part) => part.type !== 'step-start');
}

function PartialStep({ number, run, parts }: { number: number; run: RunObject; parts: MessagePart[] }) {
  const note = isActiveStatus(run.status)
    ? 'in progress'
    : run.error?.code === 'stopped'
      ? 'stopped before it finished'
      : 'ended before it finished';
  return (
    <li className="step step-partial">
      <div className="step-head">
        <strong>Step {number}</strong>
        <span className="muted"> {note} · partial</span>
      </div>
      <div className="step-body">
        <Parts parts={parts} ended={!isActiveStatus(run.status)} />
      </div>
    </li>
  );
}

const NOTABLE = new Set(['data-step-interrupted', 'data-compaction', 'data-budget', 'error', 'abort']);

function NotableEvents({ events }: { events: LoggedEvent[] }) {
  const notable = useMemo(() => events.filter((event) => NOTABLE.has(event.type)), [events]);
  if (notable.length === 0) return null;
  return (
    <>
      <h3>Events</h3>
      <ul className="notable-events">
        {notable.map((event) => (
          <li key={event.seq}>
            <code>#{event.seq}</code> {describeEvent(event.chunk)}
          </li>
        ))}
      </ul>
    </>
  );
}

function describeEvent(chunk: RunChunk): string {
  const data = (chunk as { data?: Record<string, unknown> }).data ?? {};
  switch (chunk.type) {
    case 'data-step-interrupted':
      return data.reason === CUT_BY_BUDGET
        ? `Step ${String(data.step)} was cut at the budget.`
        : `Step ${String(data.step)} was interrupted (${String(data.reason)}) and redone.`;
    case 'data-compaction':
      return `History compacted: ${String(data.trimmed)} messages shortened or left out, ${String(data.summarized)} summarized, ${String(data.tokensBefore)} → ${String(data.tokensAfter)} tokens.`;
    case 'data-budget': {
      const usage = (data.usage ?? {}) as { totalTokens?: number };
      return `Spent so far: ${usage.totalTokens ?? 0} tokens, ${formatCost(data.costUsd as number)}${
        data.budget ? ` (budget ${formatJson(data.budget).replace(/\s+/g, ' ')})` : ''
      }.`;
    }
    case 'error':
      return `Error: ${String((chunk as { errorText?: string }).errorText ?? '')}`;
    default:
      return chunk.type;
  }
}

function StepView({
  step,
  parts = step.parts,
  ended,
}: {
  step: RunStep;
  parts?: MessagePart[];
  ended: boolean;
}) {
  const tools = parts.filter((part) => part.type.startsWith('tool-') || part.type === 'dynamic-tool').length;
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
        <Parts parts={parts} ended={ended} />
      </div>
    </li>
  );
}
