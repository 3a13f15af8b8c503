import { memo, useState, type MouseEvent, type ReactNode } from 'react';
import Markdown from 'react-markdown';
import remarkGfm from 'remark-gfm';
import type { Message, MessagePart, RunObject } from '../../src/protocol/index.ts';
import { isToolPart } from '../../src/protocol/message-projector.ts';
import { explainRun } from './explain.ts';

const remarkPlugins = [remarkGfm];

/** Text rendered as markdown (GitHub flavour). Raw HTML is not rendered; links open in a new tab. */
export const MarkdownText = memo(function MarkdownText({ text }: { text: string }) {
  return (
    <div className="markdown">
      <Markdown
        remarkPlugins={remarkPlugins}
        components={{
          a: ({ href, children }) => (
            <a href={href} target="_blank" rel="noopener noreferrer">
              {children}
            </a>
          ),
        }}
      >
        {text}
      </Markdown>
    </div>
  );
});

export function formatJson(value: unknown): string {
  if (value === undefined) return '–';
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

type ToolPart = MessagePart & {
  toolCallId: string;
  state: string;
  input?: unknown;
  output?: unknown;
  errorText?: string;
};

function isToolCall(part: MessagePart): part is ToolPart {
  return isToolPart(part);
}

/** The tool's own name: an MCP tool's `mcp:` name (its `title`), else the name the model called. */
function toolName(part: ToolPart): string {
  const title = (part as { title?: unknown }).title;
  if (typeof title === 'string' && title) return title;
  return part.type === 'dynamic-tool'
    ? String((part as { toolName?: unknown }).toolName)
    : part.type.slice(5);
}

const TOOL_STATES: Record<string, string> = {
  'input-streaming': 'preparing…',
  'input-available': 'running…',
  'approval-requested': 'waiting for approval',
  'approval-responded': 'approved',
  'output-available': 'done',
  'output-error': 'failed',
  'output-denied': 'denied',
};

/** What became of a call whose run ended (or whose step was cut) before it got an output or an answer. */
const ENDED_STATES: Record<string, string> = {
  'input-streaming': 'not finished',
  'input-available': 'not finished',
  'approval-responded': 'not finished',
  'approval-requested': 'not answered',
};

/**
 * A tool call: its name and state, with input and output behind a disclosure (collapsed by default).
 * `ended`: nothing more will happen to the call (its run ended or its step was cut), so a call still
 * running or waiting says it never finished.
 */
export function ToolCall({ part, ended = false }: { part: ToolPart; ended?: boolean }) {
  const failed = part.state === 'output-error';
  const state = (ended ? ENDED_STATES[part.state] : undefined) ?? TOOL_STATES[part.state] ?? part.state;
  return (
    <details className={`tool${failed ? ' tool-failed' : ''}`}>
      <summary>
        <span className="tool-icon" aria-hidden="true">
          ⚙
        </span>
        <code>{toolName(part)}</code>
        <span className="tool-state">{state}</span>
      </summary>
      <div className="tool-body">
        <div className="tool-label">Input</div>
        <pre>{formatJson(part.input)}</pre>
        {failed ? (
          <>
            <div className="tool-label">Error</div>
            <pre>{part.errorText ?? 'The tool failed.'}</pre>
          </>
        ) : (
          <>
            <div className="tool-label">Output</div>
            <pre>{part.state === 'output-available' ? formatJson(part.output) : '…'}</pre>
          </>
        )}
      </div>
    </details>
  );
}

/** Parts split at each `step-start`; a step closed by `data-step-interrupted` is marked. */
export interface StepGroup {
  parts: MessagePart[];
  /** `redone`: a later step follows it in the message. */
  interrupted: { reason: string; redone: boolean } | null;
}

/** The `data-step-interrupted` reason of a step the budget cut: it is redone only if the run continues. */
export const CUT_BY_BUDGET = 'budget';

/**
 * How a step cut short is labelled. A crash, a restart or a hand-back is followed by the redone step; a budget
 * cut pauses the run, and its step is redone only when someone continues it.
 */
export function interruptionLabel(interrupted: { reason: string; redone: boolean }): string {
  if (interrupted.reason !== CUT_BY_BUDGET) return 'Interrupted — redone below';
  return interrupted.redone ? 'Cut at the budget — redone below' : 'Cut at the budget';
}

export function groupSteps(parts: readonly MessagePart[]): StepGroup[] {
  const groups: StepGroup[] = [];
  let current: StepGroup | null = null;
  for (const part of parts) {
    if (part.type === 'step-start' || !current) {
      current = { parts: [], interrupted: null };
      groups.push(current);
    }
    if (part.type === 'data-step-interrupted') {
      const data = (part as { data?: { reason?: string } }).data;
      current.interrupted = { reason: data?.reason ?? 'interrupted', redone: false };
      current = null;
      continue;
    }
    current.parts.push(part);
  }
  for (const [index, group] of groups.entries()) {
    if (!group.interrupted) continue;
    group.interrupted.redone = groups.slice(index + 1).some((later) => later.parts[0]?.type === 'step-start');
  }
  return groups;
}

function hasContent(parts: readonly MessagePart[]): boolean {
  return parts.some((part) => part.type !== 'step-start' && !part.type.startsWith('data-'));
}

/**
 * The parts of a message: text as markdown, reasoning and tool calls collapsed, step boundaries as rules.
 * A step cut short (by a crash, a restart or the budget) is shown apart, dimmed, above the step that redid it.
 * `ended`: the run is over, so no call in these parts will go on.
 */
export function Parts({ parts, ended = false }: { parts: MessagePart[]; ended?: boolean }) {
  const groups = groupSteps(parts);
  let shown = 0;
  return (
    <>
      {groups.map((group, index) => {
        if (group.interrupted) {
          return (
            <div key={index} className="step-interrupted" data-testid="interrupted-step">
              <div className="step-interrupted-label">{interruptionLabel(group.interrupted)}</div>
              <StepParts parts={group.parts} ended />
            </div>
          );
        }
        const rule = shown > 0 && hasContent(group.parts);
        if (hasContent(group.parts)) shown++;
        return (
          <div key={index} className="step-group">
            {rule ? <hr className="step-rule" aria-label={`Step ${shown}`} /> : null}
            <StepParts parts={group.parts} ended={ended} />
          </div>
        );
      })}
    </>
  );
}

function StepParts({ parts, ended }: { parts: MessagePart[]; ended: boolean }) {
  return (
    <>
      {parts.map((part, index) => {
        if (part.type === 'text') return part.text ? <MarkdownText key={index} text={part.text} /> : null;
        if (part.type === 'reasoning') {
          return (
            <details key={index} className="reasoning">
              <summary>Thinking</summary>
              <div className="reasoning-text">{part.text}</div>
            </details>
          );
        }
        if (isToolCall(part)) return <ToolCall key={part.toolCallId + index} part={part} ended={ended} />;
        if (part.type === 'file') {
          return (
            <div key={index} className="file-part">
              📎 {(part as { filename?: string }).filename ?? (part as { mediaType: string }).mediaType}
            </div>
          );
        }
        return null;
      })}
    </>
  );
}

export function messageText(message: Message): string {
  return message.parts
    .map((part) => (part.type === 'text' ? part.text : ''))
    .join(message.role === 'user' ? '\n' : '');
}

/** The answer's text without steps that were interrupted and redone. */
export function answerText(message: Message): string {
  return groupSteps(message.parts)
    .filter((group) => !group.interrupted)
    .flatMap((group) => group.parts)
    .map((part) => (part.type === 'text' ? part.text : ''))
    .join('');
}

export interface MessageActions {
  /** Sends the user message before this answer again. */
  onRetry?: () => void;
  /** Puts this user message's text in the composer. */
  onEdit?: () => void;
  /** Cancels this queued message's run. */
  onCancel?: () => void;
}

const TRIGGER_NOTES: Partial<Record<RunObject['trigger'], string>> = {
  schedule: 'Started by a schedule',
  continue: 'Continued by the agent',
  autostart: 'Started when the chat was created',
};

/** One message of the thread, with what happened to its run when that is not a plain success. */
export const MessageView = memo(function MessageView(props: {
  message: Message;
  run?: RunObject | undefined;
  /** Where the run's details are; null hides the link. */
  runHref?: (runId: string) => string;
  actions?: MessageActions;
  /** Shown below the parts (an approval or budget card). */
  children?: ReactNode;
}) {
  const { message, run, runHref, actions, children } = props;
  if (message.role === 'user') {
    const text = messageText(message);
    return (
      <div className="message message-user" data-message-id={message.id}>
        <div className="bubble">{text}</div>
        {actions?.onEdit ? (
          <div className="message-actions">
            <CopyButton text={text} />
            <button type="button" className="link small" onClick={actions.onEdit}>
              Edit and resend
            </button>
          </div>
        ) : null}
      </div>
    );
  }
  const empty = !hasContent(message.parts);
  const outcome = answerOutcome(message, run);
  const trigger = run ? TRIGGER_NOTES[run.trigger] : undefined;
  return (
    <div className={`message message-assistant status-${message.status}`} data-message-id={message.id}>
      {trigger && run ? (
        <div className="run-trigger small muted">
          {trigger}
          {run.parentRunId && runHref ? (
            <>
              {' · '}
              <a href={runHref(run.parentRunId)} onClick={followLink}>
                after an earlier run
              </a>
            </>
          ) : null}
        </div>
      ) : null}
      {message.status === 'queued' ? (
        <div className="queued-note">
          <span>Queued — starts when the current run ends.</span>
          {actions?.onCancel ? (
            <button type="button" className="link small" onClick={actions.onCancel}>
              Cancel
            </button>
          ) : null}
        </div>
      ) : empty && message.status === 'streaming' && !children ? (
        <div className="thinking" aria-label="Waiting for the first words">
          <span />
          <span />
          <span />
        </div>
      ) : (
        <Parts parts={message.parts} ended={message.status !== 'streaming'} />
      )}
      {children}
      {outcome ? (
        <div className={`outcome outcome-${outcome.kind}`} role="status">
          {outcome.text}{' '}
          {run && runHref ? (
            <a href={runHref(run.id)} onClick={followLink}>
              Details
            </a>
          ) : null}
        </div>
      ) : null}
      {message.status !== 'streaming' && message.status !== 'queued' ? (
        <div className="message-actions">
          {!empty ? <CopyButton text={answerText(message)} /> : null}
          {actions?.onRetry ? (
            <button type="button" className="link small" onClick={actions.onRetry}>
              {outcome ? 'Retry' : 'Regenerate'}
            </button>
          ) : null}
        </div>
      ) : null}
    </div>
  );
});

/** Links inside the app navigate without reloading the page. */
function followLink(event: MouseEvent<HTMLAnchorElement>) {
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  window.history.pushState(null, '', event.currentTarget.pathname);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

/** How an answer that did not simply succeed ended, said in place in the history. */
function answerOutcome(
  message: Message,
  run: RunObject | undefined,
): { kind: 'failed' | 'aborted'; text: string } | null {
  if (message.status !== 'error' && message.status !== 'aborted') {
    if (run && (run.status === 'failed' || run.status === 'aborted')) {
      return { kind: run.status, text: explainRun(run) ?? '' };
    }
    return null;
  }
  const kind = message.status === 'error' ? 'failed' : 'aborted';
  const reason = run ? explainRun(run) : null;
  if (kind === 'failed') {
    const said = reason ? reason.charAt(0).toLowerCase() + reason.slice(1) : 'the run ended with an error.';
    return { kind, text: `This answer failed: ${said}` };
  }
  return { kind, text: reason ?? 'This answer was stopped before it finished.' };
}

/** Copies `text` to the clipboard; says so for a moment. */
export function CopyButton({ text }: { text: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      className="link small"
      onClick={() => {
        void navigator.clipboard?.writeText(text).then(
          () => {
            setCopied(true);
            setTimeout(() => setCopied(false), 1500);
          },
          () => {},
        );
      }}
    >
      {copied ? 'Copied' : 'Copy'}
    </button>
  );
}
