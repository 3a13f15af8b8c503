import { useEffect, useState, type FormEvent } from 'react';
import type { AgentInput, OutrunClient } from '../../src/client/outrun-client.ts';
import type { AgentObject, AgentTool, Budget, Multitask } from '../../src/protocol/agent.ts';
import { explainError } from './explain.ts';
import { navigate, routePath } from './router.ts';
import { ErrorBanner, NoticeBanner } from './banners.tsx';

/** Tool names the server registers by default; any other registry or `mcp:<server>/<tool>` name works too. */
const KNOWN_TOOLS = ['echo', 'current_time', 'calculator', 'schedule_followup'];

function link(target: Parameters<typeof navigate>[0]) {
  return {
    href: routePath(target),
    onClick: (event: { preventDefault: () => void }) => {
      event.preventDefault();
      navigate(target);
    },
  };
}

/** The workspace's agents; admins can add one. */
export function AgentList({ agents, isAdmin }: { agents: AgentObject[]; isAdmin: boolean }) {
  return (
    <div className="agents">
      <p className="muted">
        An agent is a system prompt, a model, tools and limits. Pick one for a new chat in the sidebar.
      </p>
      {isAdmin ? (
        <a className="button primary" {...link({ screen: 'agent', agentId: 'new' })}>
          New agent
        </a>
      ) : null}
      {agents.length === 0 ? <p className="muted">No agents yet: chats use the workspace default.</p> : null}
      <ul className="agent-list">
        {agents.map((agent) => (
          <li key={agent.id}>
            <a {...link({ screen: 'agent', agentId: agent.id })}>
              <strong>{agent.name}</strong>
            </a>{' '}
            <span className="muted small">
              {agent.model ?? 'default model'} · {agent.tools.length}{' '}
              {agent.tools.length === 1 ? 'tool' : 'tools'}
              {agent.tools.some((tool) => tool.needsApproval) ? ' (some need approval)' : ''}
              {agent.autostart ? ' · autostart' : ''}
            </span>
          </li>
        ))}
      </ul>
    </div>
  );
}

interface FormState {
  name: string;
  instructions: string;
  model: string;
  tools: AgentTool[];
  maxSteps: string;
  maxTokens: string;
  maxCostUsd: string;
  maxDurationSeconds: string;
  onExceeded: NonNullable<Budget['onExceeded']>;
  multitask: Multitask;
  autostart: string;
  continuationRuns: string;
}

const EMPTY: FormState = {
  name: '',
  instructions: '',
  model: '',
  tools: [],
  maxSteps: '',
  maxTokens: '',
  maxCostUsd: '',
  maxDurationSeconds: '',
  onExceeded: 'pause',
  multitask: 'reject',
  autostart: '',
  continuationRuns: '',
};

function fromAgent(agent: AgentObject): FormState {
  const text = (value: number | undefined) => (value === undefined ? '' : String(value));
  return {
    name: agent.name,
    instructions: agent.instructions ?? '',
    model: agent.model ?? '',
    tools: agent.tools.map((tool) => ({ name: tool.name, needsApproval: tool.needsApproval ?? false })),
    maxSteps: text(agent.budget.maxSteps),
    maxTokens: text(agent.budget.maxTokens),
    maxCostUsd: text(agent.budget.maxCostUsd),
    maxDurationSeconds:
      agent.budget.maxDurationMs === undefined ? '' : String(agent.budget.maxDurationMs / 1000),
    onExceeded: agent.budget.onExceeded ?? 'pause',
    multitask: agent.multitask,
    autostart: agent.autostart?.text ?? '',
    continuationRuns: agent.continuation ? String(agent.continuation.maxRuns) : '',
  };
}

function toInput(form: FormState): AgentInput & { name: string } {
  const number = (value: string) => (value.trim() === '' ? undefined : Number(value));
  const budget: Budget = { onExceeded: form.onExceeded };
  const maxSteps = number(form.maxSteps);
  const maxTokens = number(form.maxTokens);
  const maxCostUsd = number(form.maxCostUsd);
  const seconds = number(form.maxDurationSeconds);
  if (maxSteps !== undefined) budget.maxSteps = maxSteps;
  if (maxTokens !== undefined) budget.maxTokens = maxTokens;
  if (maxCostUsd !== undefined) budget.maxCostUsd = maxCostUsd;
  if (seconds !== undefined) budget.maxDurationMs = Math.round(seconds * 1000);
  const continuation = number(form.continuationRuns);
  return {
    name: form.name.trim(),
    instructions: form.instructions.trim() ? form.instructions : null,
    model: form.model.trim() ? form.model.trim() : null,
    tools: form.tools.filter((tool) => tool.name.trim()).map((tool) => ({ ...tool, name: tool.name.trim() })),
    budget,
    multitask: form.multitask,
    autostart: form.autostart.trim() ? { text: form.autostart } : null,
    continuation: continuation === undefined ? null : { maxRuns: continuation },
  };
}

/** Creates or edits an agent. Members see it read-only: only workspace admins write agents. */
export function AgentForm(props: {
  client: OutrunClient;
  agentId: string | null;
  isAdmin: boolean;
  onSaved: () => void;
}) {
  const { client, agentId, isAdmin, onSaved } = props;
  const [form, setForm] = useState<FormState | null>(agentId ? null : EMPTY);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [newTool, setNewTool] = useState('');

  // A new agent's form stays mounted when it is saved and its address becomes the agent's own.
  useEffect(() => {
    if (!agentId) {
      setForm(EMPTY);
      setNotice(null);
      return;
    }
    let cancelled = false;
    client.getAgent(agentId).then(
      (agent) => !cancelled && setForm(fromAgent(agent)),
      (caught: unknown) => !cancelled && setError(explainError(caught as Error)),
    );
    return () => {
      cancelled = true;
    };
  }, [client, agentId]);

  if (!form)
    return error ? <div className="banner banner-error">{error}</div> : <div className="empty">Loading…</div>;
  const set = <K extends keyof FormState>(key: K, value: FormState[K]) =>
    setForm((current) => (current ? { ...current, [key]: value } : current));

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      const input = toInput(form);
      const result = agentId ? await client.updateAgent(agentId, input) : await client.createAgent(input);
      onSaved();
      setNotice(['Saved.', ...result.warnings].join(' '));
      if (!agentId) navigate({ screen: 'agent', agentId: result.agent.id }, { replace: true });
    } catch (caught) {
      setError(explainError(caught as Error));
    } finally {
      setBusy(false);
    }
  };
  const onArchive = async () => {
    if (!agentId) return;
    setBusy(true);
    try {
      await client.deleteAgent(agentId);
      onSaved();
      navigate({ screen: 'agents' });
    } catch (caught) {
      setError(explainError(caught as Error));
      setBusy(false);
    }
  };
  const addTool = () => {
    const name = newTool.trim();
    if (!name || form.tools.some((tool) => tool.name === name)) return;
    set('tools', [...form.tools, { name, needsApproval: false }]);
    setNewTool('');
  };

  return (
    <form className="agent-form" onSubmit={(event) => void onSubmit(event)} aria-label="Agent">
      <a className="link" {...link({ screen: 'agents' })}>
        ← All agents
      </a>
      <h2>{agentId ? form.name || 'Agent' : 'New agent'}</h2>
      {!isAdmin ? <p className="muted">Only workspace admins can change agents.</p> : null}
      <fieldset disabled={!isAdmin || busy}>
        <label>
          Name
          <input
            required
            maxLength={200}
            value={form.name}
            onChange={(event) => set('name', event.target.value)}
          />
        </label>
        <label>
          Instructions <span className="muted small">(the system prompt)</span>
          <textarea
            rows={6}
            value={form.instructions}
            onChange={(event) => set('instructions', event.target.value)}
          />
        </label>
        <label>
          Model <span className="muted small">(empty: the server’s default)</span>
          <input
            value={form.model}
            placeholder="scripted"
            onChange={(event) => set('model', event.target.value)}
          />
        </label>

        <div className="form-section">
          <h3>Tools</h3>
          {form.tools.length === 0 ? (
            <p className="muted small">No tools: the agent only answers in text.</p>
          ) : null}
          <ul className="tool-rows">
            {form.tools.map((tool, index) => (
              <li key={tool.name}>
                <code>{tool.name}</code>
                <label className="inline">
                  <input
                    type="checkbox"
                    checked={tool.needsApproval ?? false}
                    onChange={(event) =>
                      set(
                        'tools',
                        form.tools.map((item, at) =>
                          at === index ? { ...item, needsApproval: event.target.checked } : item,
                        ),
                      )
                    }
                  />
                  Needs approval
                </label>
                <button
                  type="button"
                  className="link small"
                  aria-label={`Remove ${tool.name}`}
                  onClick={() =>
                    set(
                      'tools',
                      form.tools.filter((_, at) => at !== index),
                    )
                  }
                >
                  Remove
                </button>
              </li>
            ))}
          </ul>
          <div className="inline-add">
            <input
              list="known-tools"
              aria-label="Tool name"
              placeholder="echo, calculator, mcp:server/tool…"
              value={newTool}
              onChange={(event) => setNewTool(event.target.value)}
              onKeyDown={(event) => {
                if (event.key === 'Enter') {
                  event.preventDefault();
                  addTool();
                }
              }}
            />
            <datalist id="known-tools">
              {KNOWN_TOOLS.map((name) => (
                <option key={name} value={name} />
              ))}
            </datalist>
            <button type="button" onClick={addTool}>
              Add tool
            </button>
          </div>
        </div>

        <div className="form-section">
          <h3>Budget per run</h3>
          <div className="form-grid">
            <label>
              Steps
              <input
                type="number"
                min={1}
                value={form.maxSteps}
                onChange={(event) => set('maxSteps', event.target.value)}
              />
            </label>
            <label>
              Tokens
              <input
                type="number"
                min={1}
                value={form.maxTokens}
                onChange={(event) => set('maxTokens', event.target.value)}
              />
            </label>
            <label>
              Cost (USD)
              <input
                type="number"
                min={0}
                step="any"
                value={form.maxCostUsd}
                onChange={(event) => set('maxCostUsd', event.target.value)}
              />
            </label>
            <label>
              Time (seconds)
              <input
                type="number"
                min={1}
                value={form.maxDurationSeconds}
                onChange={(event) => set('maxDurationSeconds', event.target.value)}
              />
            </label>
            <label>
              When it runs out
              <select
                value={form.onExceeded}
                onChange={(event) => set('onExceeded', event.target.value as FormState['onExceeded'])}
              >
                <option value="pause">Pause and ask for more</option>
                <option value="abort">Stop the run</option>
                <option value="continue">Continue in a new run (steps)</option>
              </select>
            </label>
          </div>
        </div>

        <div className="form-section">
          <h3>Behaviour</h3>
          <label>
            A message sent during a run
            <select
              value={form.multitask}
              onChange={(event) => set('multitask', event.target.value as Multitask)}
            >
              <option value="reject">is refused</option>
              <option value="enqueue">waits for the run to end</option>
              <option value="interrupt">stops the run</option>
            </select>
          </label>
          <label>
            Autostart message <span className="muted small">(sent when a chat is created; empty: none)</span>
            <textarea
              rows={2}
              value={form.autostart}
              onChange={(event) => set('autostart', event.target.value)}
            />
          </label>
          <label>
            Continuation runs{' '}
            <span className="muted small">(follow-up runs one chain may start; empty: none)</span>
            <input
              type="number"
              min={0}
              value={form.continuationRuns}
              onChange={(event) => set('continuationRuns', event.target.value)}
            />
          </label>
        </div>
      </fieldset>
      <ErrorBanner message={error} />
      <NoticeBanner message={notice} />
      {isAdmin ? (
        <div className="form-actions">
          <button type="submit" className="primary" disabled={busy || !form.name.trim()}>
            {agentId ? 'Save' : 'Create agent'}
          </button>
          {agentId ? (
            <button type="button" className="danger" disabled={busy} onClick={() => void onArchive()}>
              Archive
            </button>
          ) : null}
        </div>
      ) : null}
    </form>
  );
}
