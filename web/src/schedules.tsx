import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { OutrunApiError } from '../../src/client/errors.ts';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { ScheduleMultitask, ScheduleObject } from '../../src/protocol/schedule.ts';
import { describeCron } from './cron.ts';
import { explainError, formatTime } from './explain.ts';
import { navigate, routePath } from './router.ts';
import { ErrorBanner } from './banners.tsx';

const localZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone;

function scheduleText(schedule: ScheduleObject): string {
  const input = schedule.input as { text?: string };
  return input.text ?? '(message parts)';
}

function when(schedule: ScheduleObject): string {
  if (schedule.at) return `Once, ${formatTime(schedule.at)}`;
  const words = schedule.cron ? (describeCron(schedule.cron) ?? schedule.cron) : '–';
  return schedule.timezone ? `${words} (${schedule.timezone})` : words;
}

/**
 * Whether a one-time schedule is over: off, with its time passed. The runner turns one off when it fires; one
 * paused past its time never fires. Neither can be turned on again, as its time is in the past.
 */
function isOver(schedule: ScheduleObject): boolean {
  return schedule.at !== null && !schedule.enabled && Date.parse(schedule.at) <= Date.now();
}

/** What became of a one-time schedule that is over. */
function outcome(schedule: ScheduleObject): string {
  if (!schedule.lastFiredAt) return 'Did not run: its time passed while it was paused';
  if (schedule.lastResult && schedule.lastResult !== 'fired') {
    return `Did not run: due ${formatTime(schedule.lastFiredAt)} (${schedule.lastResult})`;
  }
  return `Ran ${formatTime(schedule.lastFiredAt)}`;
}

/**
 * A chat's schedules: list, create (a cron with a preview in words, or one time), pause, delete. A one-time
 * schedule that is over says what became of it instead of offering Resume.
 */
export function SchedulesPanel({ client, chatId }: { client: OutrunClient; chatId: string }) {
  const [schedules, setSchedules] = useState<ScheduleObject[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [unavailable, setUnavailable] = useState(false);

  const load = useCallback(async () => {
    try {
      setSchedules(await client.listSchedules(chatId));
      setError(null);
    } catch (caught) {
      if (caught instanceof OutrunApiError && caught.status === 404 && caught.code !== 'chat_not_found') {
        setUnavailable(true);
      } else setError(explainError(caught as Error));
    }
  }, [client, chatId]);
  useEffect(() => {
    void load();
  }, [load]);

  const act = async (action: () => Promise<unknown>) => {
    try {
      await action();
      await load();
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  };

  if (unavailable) {
    return <div className="empty">This server does not support schedules yet.</div>;
  }
  return (
    <div className="schedules">
      <p className="muted">
        A schedule sends a message to this chat by itself: the agent answers it as a run.
      </p>
      <ErrorBanner message={error} />
      {schedules === null ? <div className="empty">Loading…</div> : null}
      {schedules?.length === 0 ? <p className="muted">No schedules yet.</p> : null}
      <ul className="schedule-list">
        {schedules?.map((schedule) => {
          const over = isOver(schedule);
          return (
            <li key={schedule.id} className={schedule.enabled ? '' : 'paused'}>
              <div>
                <strong>{when(schedule)}</strong>
                {over ? (
                  <span className="badge">done</span>
                ) : schedule.enabled ? null : (
                  <span className="badge badge-waiting">paused</span>
                )}
                {schedule.trigger === 'continue' ? (
                  <span className="muted small"> · set by the agent</span>
                ) : null}
              </div>
              <div className="muted small">“{scheduleText(schedule)}”</div>
              <div className="muted small">
                {over ? (
                  outcome(schedule)
                ) : (
                  <>
                    {schedule.nextRunAt && schedule.enabled
                      ? `Next: ${formatTime(schedule.nextRunAt)} · `
                      : ''}
                    Last fired: {schedule.lastFiredAt ? formatTime(schedule.lastFiredAt) : 'never'}
                    {schedule.lastResult && schedule.lastResult !== 'fired'
                      ? ` (${schedule.lastResult})`
                      : ''}
                  </>
                )}
                {schedule.lastRunId ? (
                  <>
                    {' · '}
                    <a
                      href={routePath({ screen: 'run', chatId, runId: schedule.lastRunId })}
                      onClick={(event) => {
                        event.preventDefault();
                        navigate({ screen: 'run', chatId, runId: schedule.lastRunId! });
                      }}
                    >
                      its run
                    </a>
                  </>
                ) : null}
              </div>
              <div className="schedule-actions">
                {over ? null : (
                  <button
                    type="button"
                    className="small"
                    onClick={() =>
                      void act(() => client.updateSchedule(schedule.id, { enabled: !schedule.enabled }))
                    }
                  >
                    {schedule.enabled ? 'Pause' : 'Resume'}
                  </button>
                )}
                <button
                  type="button"
                  className="small danger"
                  onClick={() => void act(() => client.deleteSchedule(schedule.id))}
                >
                  Delete
                </button>
              </div>
            </li>
          );
        })}
      </ul>
      <NewSchedule onCreate={(options) => act(() => client.createSchedule(chatId, options))} />
    </div>
  );
}

function NewSchedule({
  onCreate,
}: {
  onCreate: (options: Parameters<OutrunClient['createSchedule']>[1]) => Promise<void>;
}) {
  const [kind, setKind] = useState<'cron' | 'at'>('cron');
  const [cron, setCron] = useState('0 8 * * *');
  const [at, setAt] = useState('');
  const [text, setText] = useState('');
  const [multitask, setMultitask] = useState<ScheduleMultitask>('skip');
  const preview = kind === 'cron' ? describeCron(cron) : at ? `Once, ${new Date(at).toLocaleString()}` : null;
  const valid = text.trim() !== '' && (kind === 'cron' ? describeCron(cron) !== null : at !== '');

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    if (!valid) return;
    await onCreate({
      ...(kind === 'cron'
        ? { cron: cron.trim(), timezone: localZone() }
        : { at: new Date(at).toISOString() }),
      input: { text: text.trim() },
      multitask,
    });
    setText('');
  };

  return (
    <form className="new-schedule" onSubmit={(event) => void onSubmit(event)} aria-label="New schedule">
      <h3>New schedule</h3>
      <div className="segmented" role="radiogroup" aria-label="Repeat">
        <label className="inline">
          <input type="radio" checked={kind === 'cron'} onChange={() => setKind('cron')} /> Repeat (cron)
        </label>
        <label className="inline">
          <input type="radio" checked={kind === 'at'} onChange={() => setKind('at')} /> Once
        </label>
      </div>
      {kind === 'cron' ? (
        <label>
          Cron <span className="muted small">(minute hour day month weekday, {localZone()})</span>
          <input
            value={cron}
            onChange={(event) => setCron(event.target.value)}
            aria-describedby="cron-preview"
          />
        </label>
      ) : (
        <label>
          Time
          <input type="datetime-local" value={at} onChange={(event) => setAt(event.target.value)} />
        </label>
      )}
      <p id="cron-preview" className="cron-preview" aria-live="polite">
        {preview ?? (kind === 'cron' ? 'Not a cron expression: five fields, like "0 8 * * 1-5".' : '')}
      </p>
      <label>
        Message
        <textarea rows={2} value={text} onChange={(event) => setText(event.target.value)} />
      </label>
      <label>
        If a run is going when it fires
        <select value={multitask} onChange={(event) => setMultitask(event.target.value as ScheduleMultitask)}>
          <option value="skip">skip this time</option>
          <option value="enqueue">queue it</option>
          <option value="interrupt">stop that run</option>
        </select>
      </label>
      <button type="submit" className="primary" disabled={!valid}>
        Add schedule
      </button>
    </form>
  );
}
