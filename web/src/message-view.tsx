import { memo } from 'react';
import Markdown from 'react-markdown';
import remarkGfm from 'remark-gfm';
import type { Message, MessagePart } from '../../src/protocol/index.ts';

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

function isToolPart(part: MessagePart): part is ToolPart {
  return part.type === 'dynamic-tool' || part.type.startsWith('tool-');
}

function toolName(part: ToolPart): string {
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

/** A tool call: its name and state, with input and output behind a disclosure (collapsed by default). */
export function ToolCall({ part }: { part: ToolPart }) {
  const failed = part.state === 'output-error';
  return (
    <details className={`tool${failed ? ' tool-failed' : ''}`}>
      <summary>
        <span className="tool-icon" aria-hidden="true">
          ⚙
        </span>
        <code>{toolName(part)}</code>
        <span className="tool-state">{TOOL_STATES[part.state] ?? part.state}</span>
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

/** The parts of a message: text as markdown, reasoning and tool calls collapsed, step boundaries as rules. */
export function Parts({ parts }: { parts: MessagePart[] }) {
  let steps = 0;
  return (
    <>
      {parts.map((part, index) => {
        if (part.type === 'text') return part.text ? <MarkdownText key={index} text={part.text} /> : null;
        if (part.type === 'step-start') {
          steps++;
          return steps > 1 ? <hr key={index} className="step-rule" aria-label={`Step ${steps}`} /> : null;
        }
        if (part.type === 'reasoning') {
          return (
            <details key={index} className="reasoning">
              <summary>Thinking</summary>
              <div className="reasoning-text">{part.text}</div>
            </details>
          );
        }
        if (isToolPart(part)) return <ToolCall key={part.toolCallId + index} part={part} />;
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

function userText(message: Message): string {
  return message.parts.map((part) => (part.type === 'text' ? part.text : '')).join('\n');
}

/** One message of the thread. */
export const MessageView = memo(function MessageView({ message }: { message: Message }) {
  if (message.role === 'user') {
    return (
      <div className="message message-user" data-message-id={message.id}>
        <div className="bubble">{userText(message)}</div>
      </div>
    );
  }
  const empty = message.parts.every((part) => part.type === 'step-start');
  return (
    <div className={`message message-assistant status-${message.status}`} data-message-id={message.id}>
      {empty && message.status === 'streaming' ? (
        <div className="thinking" aria-label="Waiting for the first words">
          <span />
          <span />
          <span />
        </div>
      ) : (
        <Parts parts={message.parts} />
      )}
    </div>
  );
});
