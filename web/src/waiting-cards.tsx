import { useState } from 'react';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { Budget } from '../../src/protocol/agent.ts';
import type { RunObject, RunUsage } from '../../src/protocol/index.ts';
import { explainError, formatCost, formatDuration } from './explain.ts';
import { formatJson } from './message-view.tsx';
import { ErrorBanner } from './banners.tsx';

type ApprovalWaiting = Extract<NonNullable<RunObject['waiting']>, { reason: 'approval' }>;
type BudgetWaiting = Extract<NonNullable<RunObject['waiting']>, { reason: 'budget' }>;

function expires(iso: string | undefined): string {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : ` It waits until ${date.toLocaleString()}.`;
}

/**
 * A tool call waiting for a person: the tool, its input, and Approve / Deny (with an optional reason). The
 * card comes from the run itself, so it shows on every tab and after a reload; answering it on one tab
 * makes it go away on all of them.
 */
export function ApprovalCard(props: {
  client: OutrunClient;
  run: RunObject;
  waiting: ApprovalWaiting;
  onAnswered: () => void;
}) {
  const { client, run, waiting, onAnswered } = props;
  const pending = waiting.approvals.filter((approval) => approval.approved === undefined);
  const [reasons, setReasons] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const answer = async (approvalId: string, approved: boolean) => {
    setBusy(approvalId);
    setError(null);
    try {
      const reason = reasons[approvalId]?.trim();
      await client.answerApproval(run.id, { approvalId, approved, ...(reason ? { reason } : {}) });
      onAnswered();
    } catch (caught) {
      setError(explainError(caught instanceof Error ? caught : new Error(String(caught))));
    } finally {
      setBusy(null);
    }
  };
  if (pending.length === 0) return null;
  return (
    <div className="wait-card approval-card" role="group" aria-label="Approval needed">
      <div className="wait-card-head">
        <strong>Approval needed</strong>
        <span className="muted small">The run is paused until you answer.{expires(waiting.expiresAt)}</span>
      </div>
      {pending.map((approval) => (
        <div key={approval.approvalId} className="approval">
          <div>
            The agent wants to call <code>{approval.title ?? approval.toolName}</code> with:
          </div>
          <pre className="approval-input">{formatJson(approval.input)}</pre>
          <label className="small muted">
            Reason (optional, sent to the agent)
            <input
              value={reasons[approval.approvalId] ?? ''}
              onChange={(event) =>
                setReasons((current) => ({ ...current, [approval.approvalId]: event.target.value }))
              }
              maxLength={1000}
            />
          </label>
          <div className="wait-card-actions">
            <button
              type="button"
              className="primary"
              disabled={busy !== null}
              onClick={() => void answer(approval.approvalId, true)}
            >
              Approve
            </button>
            <button
              type="button"
              className="danger"
              disabled={busy !== null}
              onClick={() => void answer(approval.approvalId, false)}
            >
              Deny
            </button>
          </div>
        </div>
      ))}
      <ErrorBanner message={error} />
    </div>
  );
}

const LIMIT_OF: Record<BudgetWaiting['exceeded'], keyof Budget> = {
  steps: 'maxSteps',
  tokens: 'maxTokens',
  cost: 'maxCostUsd',
  duration: 'maxDurationMs',
};

function formatLimit(key: keyof Budget, value: unknown): string {
  if (typeof value !== 'number') return '–';
  if (key === 'maxCostUsd') return formatCost(value);
  if (key === 'maxDurationMs') return formatDuration(value);
  if (key === 'maxSteps') return `${value} ${value === 1 ? 'step' : 'steps'}`;
  return `${value.toLocaleString()} tokens`;
}

function spent(waiting: BudgetWaiting, run: RunObject): string {
  const usage: RunUsage = waiting.usage ?? run.usage ?? {};
  const tokens = usage.totalTokens ?? (usage.inputTokens ?? 0) + (usage.outputTokens ?? 0);
  return `${run.stepCount} ${run.stepCount === 1 ? 'step' : 'steps'} · ${tokens.toLocaleString()} tokens · ${formatCost(run.costUsd)}`;
}

/** A run paused at its budget: what ran out, what it spent, and "Continue with more" (the limit doubled). */
export function BudgetCard(props: {
  client: OutrunClient;
  run: RunObject;
  waiting: BudgetWaiting;
  onContinued: () => void;
}) {
  const { client, run, waiting, onContinued } = props;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const key = LIMIT_OF[waiting.exceeded];
  const current = waiting.budget?.[key];
  const raised = typeof current === 'number' ? current * 2 : undefined;
  const onContinue = async () => {
    setBusy(true);
    setError(null);
    try {
      const budget: Budget = {
        ...(waiting.budget as Budget),
        ...(raised === undefined ? {} : { [key]: raised }),
      };
      await client.continueRun(run.id, { budget });
      onContinued();
    } catch (caught) {
      setError(explainError(caught instanceof Error ? caught : new Error(String(caught))));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="wait-card budget-card" role="group" aria-label="Budget reached">
      <div className="wait-card-head">
        <strong>Paused: the run reached its {waiting.exceeded} budget</strong>
        <span className="muted small">
          Limit {formatLimit(key, current)}. Spent {spent(waiting, run)}.{expires(waiting.expiresAt)}
        </span>
      </div>
      <div className="wait-card-actions">
        <button type="button" className="primary" disabled={busy} onClick={() => void onContinue()}>
          Continue with more
        </button>
        {raised !== undefined ? <span className="muted small">up to {formatLimit(key, raised)}</span> : null}
      </div>
      <ErrorBanner message={error} />
    </div>
  );
}
