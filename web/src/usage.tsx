import { useCallback, useEffect, useState, type FormEvent } from 'react';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { QuotaReport, WorkspaceQuota } from '../../src/protocol/workspace.ts';
import { explainError, formatCost, formatDuration } from './explain.ts';
import { ErrorBanner, NoticeBanner } from './banners.tsx';

/** The share of a limit from which its meter shows as nearly used up. */
const METER_HIGH = 0.8;

const count = (value: number) => value.toLocaleString();

/** The workspace's quota against today's usage (UTC) and the last minute's runs; admins set the limits. */
export function UsagePanel({ client, isAdmin }: { client: OutrunClient; isAdmin: boolean }) {
  const [report, setReport] = useState<QuotaReport | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setReport(await client.getQuota());
      setError(null);
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  }, [client]);
  useEffect(() => {
    void load();
  }, [load]);

  const quota = report?.quota ?? null;
  return (
    <div className="usage">
      <p className="muted">
        Tokens and cost count every run in the workspace since midnight UTC; runs count the last 60 seconds.
      </p>
      <ErrorBanner message={error} />
      {report === null ? (
        error ? null : (
          <div className="empty">Loading…</div>
        )
      ) : (
        <>
          {quota === null ? (
            <p>
              <strong>No limits</strong>
              <span className="muted">
                : the workspace may spend any number of tokens and start any number of runs.
              </span>
            </p>
          ) : null}
          <QuotaMeter
            label="Tokens today"
            used={report.usage.tokens}
            limit={quota?.tokensPerDay}
            format={count}
            unit="tokens today"
          />
          <QuotaMeter
            label="Cost today"
            used={report.usage.costUsd}
            limit={quota?.costUsdPerDay}
            format={formatCost}
            unit="today"
          />
          <QuotaMeter
            label="Runs in the last minute"
            used={report.usage.runsLastMinute}
            limit={quota?.runsPerMinute}
            format={count}
            unit={`${report.usage.runsLastMinute === 1 && !quota?.runsPerMinute ? 'run' : 'runs'} in the last minute`}
          />
          <p className="muted">
            The day resets in {formatDuration(report.resetsInSeconds * 1000)} (midnight UTC).
          </p>
        </>
      )}
      <button type="button" onClick={() => void load()}>
        Refresh
      </button>
      {isAdmin && report ? (
        <QuotaForm client={client} quota={quota} onSaved={(next) => setReport(next)} />
      ) : null}
    </div>
  );
}

/** One figure against its limit, in words (`1,234 of 10,000 tokens today`) and as a meter. */
function QuotaMeter(props: {
  label: string;
  used: number;
  limit: number | undefined;
  format: (value: number) => string;
  unit: string;
}) {
  const { label, used, limit, format } = props;
  const text = `${format(used)}${limit === undefined ? '' : ` of ${format(limit)}`} ${props.unit}`;
  return (
    <div className="quota-meter">
      <div className="quota-meter-head">
        <strong>{label}</strong>
        <span>
          {text}
          {limit === undefined ? <span className="muted"> · no limit</span> : null}
        </span>
      </div>
      {limit === undefined ? null : (
        <meter
          aria-label={label}
          aria-valuetext={text}
          min={0}
          max={limit}
          value={Math.min(used, limit)}
          high={limit * METER_HIGH}
          optimum={0}
        />
      )}
    </div>
  );
}

const FIELDS = [
  { key: 'tokensPerDay', label: 'Tokens per day', inputMode: 'numeric' },
  { key: 'costUsdPerDay', label: 'Cost per day (USD)', inputMode: 'decimal' },
  { key: 'runsPerMinute', label: 'Runs per minute', inputMode: 'numeric' },
] as const;

type QuotaFields = Record<keyof WorkspaceQuota, string>;

function fieldsOf(quota: WorkspaceQuota | null): QuotaFields {
  const text = (value: number | undefined) => (value === undefined ? '' : String(value));
  return {
    tokensPerDay: text(quota?.tokensPerDay),
    costUsdPerDay: text(quota?.costUsdPerDay),
    runsPerMinute: text(quota?.runsPerMinute),
  };
}

/** The limits' form. An empty field is no limit; the server says which values it refuses. */
function QuotaForm(props: {
  client: OutrunClient;
  quota: WorkspaceQuota | null;
  onSaved: (report: QuotaReport) => void;
}) {
  const { client, quota, onSaved } = props;
  const [fields, setFields] = useState(() => fieldsOf(quota));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const save = async (next: WorkspaceQuota | null, message: string) => {
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      const report = await client.setQuota(next);
      onSaved(report);
      setFields(fieldsOf(report.quota));
      setNotice(message);
    } catch (caught) {
      setError(explainError(caught as Error));
    } finally {
      setBusy(false);
    }
  };
  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    const next: WorkspaceQuota = {};
    for (const field of FIELDS) {
      // Thousands separators are allowed, as the figures above show them.
      const text = fields[field.key].replace(/[,_\s]/g, '');
      if (text === '') continue;
      const value = Number(text);
      if (Number.isNaN(value)) {
        setNotice(null);
        setError(`${field.label}: enter a number, or leave it empty for no limit.`);
        return;
      }
      next[field.key] = value;
    }
    void save(Object.keys(next).length > 0 ? next : null, 'Saved.');
  };

  return (
    <form className="quota-form" aria-label="Limits" onSubmit={onSubmit}>
      <h3>Limits</h3>
      <p className="muted small">
        Empty: no limit. Past a limit new runs are refused, and a run that uses up a daily limit ends.
      </p>
      <fieldset disabled={busy}>
        <div className="form-grid">
          {FIELDS.map((field) => (
            <label key={field.key}>
              {field.label}
              <input
                inputMode={field.inputMode}
                value={fields[field.key]}
                onChange={(event) => setFields({ ...fields, [field.key]: event.target.value })}
              />
            </label>
          ))}
        </div>
      </fieldset>
      <ErrorBanner message={error} />
      <NoticeBanner message={notice} />
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy}>
          Save
        </button>
        <button
          type="button"
          className="danger"
          disabled={busy || quota === null}
          onClick={() => void save(null, 'Limits removed.')}
        >
          Remove limits
        </button>
      </div>
    </form>
  );
}
