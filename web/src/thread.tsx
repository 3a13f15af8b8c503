import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import { OutrunApiError } from '../../src/client/errors.ts';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { Chat, Message, RunObject } from '../../src/protocol/index.ts';
import { useChatRuns } from '../../src/react/use-chat-runs.ts';
import { Composer } from './composer.tsx';
import { explainError, explainRun, formatDuration, runDuration } from './explain.ts';
import { MessageView } from './message-view.tsx';
import { navigate } from './router.ts';

export interface ThreadProps {
  client: OutrunClient;
  chat: Chat;
  /** Called after a send that should retitle the chat (its first message). */
  onFirstMessage: (text: string) => void;
}

/** The chat: its messages with the active run live, the run's status line, and the composer. */
export function Thread({ client, chat, onFirstMessage }: ThreadProps) {
  const chatRuns = useChatRuns({ client, chatId: chat.id });
  const { messages, run, status, isRunning, isStopping, error, send, stop, reload, clearError } = chatRuns;
  const scroller = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);

  // Esc stops the active run from anywhere on the page.
  useEffect(() => {
    if (!isRunning) return;
    const onKey = (event: KeyboardEvent) => {
      if (event.key === 'Escape' && !event.defaultPrevented) void stop();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [isRunning, stop]);

  // Stay at the bottom while text streams in, unless the reader scrolled up.
  useLayoutEffect(() => {
    const element = scroller.current;
    if (element && pinned.current) element.scrollTop = element.scrollHeight;
  }, [messages]);

  const onSend = async (text: string) => {
    const first = messages.length === 0;
    const sent = await send(text);
    if (sent && first) onFirstMessage(text);
    return sent;
  };

  const conflict = error instanceof OutrunApiError && error.code === 'run_already_active' ? error : null;
  const lastAssistant = messages.filter((message) => message.role === 'assistant').at(-1);
  const outcome = run && !isRunning && run.assistantMessageId === lastAssistant?.id ? explainRun(run) : null;
  let disabledReason: string | null = null;
  if (status === 'loading') disabledReason = 'Loading…';
  else if (isRunning)
    disabledReason = 'A run is in progress. Press Esc or Stop to end it, or wait for it to finish.';

  return (
    <section className="thread" aria-label={chat.title}>
      <div
        className="messages"
        ref={scroller}
        onScroll={(event) => {
          const element = event.currentTarget;
          pinned.current = element.scrollHeight - element.scrollTop - element.clientHeight < 80;
        }}
      >
        {status === 'loading' ? <div className="empty">Loading…</div> : null}
        {status !== 'loading' && messages.length === 0 ? (
          <div className="empty">
            <p>Ask something. The answer keeps going on the server even if you close this tab.</p>
            <p className="muted">
              Try <code>{'{"script":{"steps":3,"tokens":30,"delayMs":80}}'}</code> for a scripted demo run.
            </p>
          </div>
        ) : null}
        {messages.map((message) => (
          <MessageView key={message.id} message={message} />
        ))}
        {outcome ? (
          <div className={`outcome outcome-${run!.status}`} role="status">
            {outcome}{' '}
            <a
              href={`/chats/${chat.id}/runs/${run!.id}`}
              onClick={(event) => {
                event.preventDefault();
                navigate({ screen: 'run', chatId: chat.id, runId: run!.id });
              }}
            >
              Details
            </a>
          </div>
        ) : null}
      </div>

      {isRunning && run ? (
        <RunStatusLine
          run={run}
          message={lastAssistant}
          status={status}
          stopping={isStopping}
          onStop={() => stop()}
        />
      ) : null}
      {!isRunning && status === 'reconnecting' ? <div className="status-line">reconnecting…</div> : null}

      {conflict ? (
        <div className="banner banner-warning" role="alert">
          <span>A run is already in progress.</span>
          <button
            type="button"
            onClick={() => {
              clearError();
              void reload();
            }}
          >
            Follow
          </button>
          <button type="button" className="danger" onClick={() => void stop(conflict.runId)}>
            Stop
          </button>
        </div>
      ) : error ? (
        <div className="banner banner-error" role="alert">
          <span>{explainError(error)}</span>
          <button type="button" onClick={clearError}>
            Dismiss
          </button>
        </div>
      ) : null}

      <Composer
        key={chat.id}
        chatId={chat.id}
        disabledReason={disabledReason}
        sending={status === 'submitting'}
        onSend={onSend}
      />
    </section>
  );
}

/** `● running · step 2 · 14 s` with a Stop button; "reconnecting…" while the connection is down. */
function RunStatusLine(props: {
  run: RunObject;
  message: Message | undefined;
  status: string;
  stopping: boolean;
  onStop: () => void;
}) {
  const { run, message, status, stopping, onStop } = props;
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const live = message?.runId === run.id ? message : undefined;
  const steps = live ? live.parts.filter((part) => part.type === 'step-start').length : 0;
  const state = stopping ? 'stopping…' : run.status === 'pending' ? 'starting' : 'running';
  return (
    <div className="status-line" role="status" aria-live="polite">
      <span className="pulse" aria-hidden="true" />
      <span className="status-text">
        {state}
        {run.status === 'running' ? ` · step ${Math.max(1, steps)}` : ''} ·{' '}
        {formatDuration(runDuration(run, now))}
        {status === 'reconnecting' ? <span className="reconnecting"> · reconnecting…</span> : null}
      </span>
      <button
        type="button"
        className="danger"
        onClick={onStop}
        disabled={stopping}
        title="Stop the run (Esc)"
      >
        Stop
      </button>
    </div>
  );
}
