import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import { OutrunApiError } from '../../src/client/errors.ts';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { BudgetChunk, Chat, Message, RunObject } from '../../src/protocol/index.ts';
import { useChatRuns } from '../../src/react/use-chat-runs.ts';
import { drafts } from './auth.ts';
import { Composer } from './composer.tsx';
import { explainError, formatCost, formatDuration, runDuration } from './explain.ts';
import { MessageView, messageText } from './message-view.tsx';
import { routePath } from './router.ts';
import { ApprovalCard, BudgetCard } from './waiting-cards.tsx';

export interface ThreadProps {
  client: OutrunClient;
  chat: Chat;
  /** Called after a send that should retitle the chat (its first message). */
  onFirstMessage: (text: string) => void;
  /** Called when the chat starts or ends having a run going (for the chat list). */
  onBusyChange?: (chatId: string, busy: boolean) => void;
}

/** The chat: its messages with the active run live, each run's outcome in place, and the composer. */
export function Thread({ client, chat, onFirstMessage, onBusyChange }: ThreadProps) {
  const chatRuns = useChatRuns({ client, chatId: chat.id });
  const {
    messages,
    run,
    runs,
    queued,
    status,
    isRunning,
    isStopping,
    error,
    send,
    stop,
    reload,
    clearError,
  } = chatRuns;
  const scroller = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  const [text, setText] = useState(() => drafts.load(chat.id));

  useEffect(() => drafts.save(chat.id, text), [chat.id, text]);
  useEffect(
    () => onBusyChange?.(chat.id, isRunning || queued.length > 0),
    [chat.id, isRunning, queued.length, onBusyChange],
  );

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

  // A message sent during a run is queued behind it rather than refused.
  const sendText = async (value: string) => {
    const first = messages.length === 0;
    const sent = await send(value, { multitask: 'enqueue' });
    if (sent && first) onFirstMessage(value);
    return sent;
  };

  const conflict = error instanceof OutrunApiError && error.code === 'run_already_active' ? error : null;
  const runHref = (runId: string) => routePath({ screen: 'run', chatId: chat.id, runId });
  const lastAssistant = messages.filter((message) => message.role === 'assistant').at(-1);
  const userBefore = (index: number): Message | undefined =>
    messages.slice(0, index).findLast((candidate) => candidate.role === 'user');

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
        {messages.map((message, index) => {
          const messageRun = message.runId ? runs.get(message.runId) : undefined;
          if (message.role === 'user') {
            return (
              <MessageView
                key={message.id}
                message={message}
                actions={{ onEdit: () => setText(messageText(message)) }}
              />
            );
          }
          const question = userBefore(index);
          const settled = message.status !== 'streaming' && message.status !== 'queued';
          const canRetry =
            settled &&
            question !== undefined &&
            (message.status === 'error' || message.status === 'aborted' || message.id === lastAssistant?.id);
          const waiting = messageRun?.status === 'waiting' ? messageRun.waiting : null;
          return (
            <MessageView
              key={message.id}
              message={message}
              run={messageRun}
              runHref={runHref}
              actions={{
                onRetry: canRetry ? () => void sendText(messageText(question)) : undefined,
                onCancel:
                  message.status === 'queued' && message.runId ? () => void stop(message.runId!) : undefined,
              }}
            >
              {waiting?.reason === 'approval' && messageRun ? (
                <ApprovalCard
                  client={client}
                  run={messageRun}
                  waiting={waiting}
                  onAnswered={() => void reload()}
                />
              ) : waiting?.reason === 'budget' && messageRun ? (
                <BudgetCard
                  client={client}
                  run={messageRun}
                  waiting={waiting}
                  onContinued={() => void reload()}
                />
              ) : null}
            </MessageView>
          );
        })}
      </div>

      {isRunning && run ? (
        <RunStatusLine
          run={run}
          message={lastAssistant}
          status={status}
          stopping={isStopping}
          stopRetrying={chatRuns.isStopRetrying}
          spending={chatRuns.spending}
        />
      ) : null}
      {!isRunning && status === 'reconnecting' ? <div className="status-line">reconnecting…</div> : null}

      {conflict ? (
        <div className="banner banner-warning" role="alert">
          <span>
            A run started elsewhere is going, so your message was not sent. It is still in the box: send it
            again to queue it behind that run.
          </span>
          <button type="button" onClick={clearError}>
            Dismiss
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
        text={text}
        onTextChange={setText}
        disabledReason={status === 'loading' ? 'Loading…' : null}
        sending={status === 'submitting'}
        running={isRunning}
        stopping={isStopping}
        onSend={sendText}
        onStop={() => void stop()}
      />
    </section>
  );
}

function formatSpending(run: RunObject, spending: BudgetChunk['data'] | null): string | null {
  const usage = spending?.usage ?? run.usage;
  const cost = spending?.costUsd ?? run.costUsd;
  if (!usage && cost === null) return null;
  const tokens = usage ? (usage.totalTokens ?? (usage.inputTokens ?? 0) + (usage.outputTokens ?? 0)) : 0;
  const budget = spending?.budget;
  let text = `${tokens.toLocaleString()} tokens`;
  if (budget?.maxTokens) text += ` of ${budget.maxTokens.toLocaleString()}`;
  text += ` · ${formatCost(cost)}`;
  if (budget?.maxCostUsd) text += ` of ${formatCost(budget.maxCostUsd)}`;
  return text;
}

/** `● running · step 2 · 14 s · 1,204 tokens · $0.0021`; "reconnecting…" while the connection is down. */
function RunStatusLine(props: {
  run: RunObject;
  message: Message | undefined;
  status: string;
  stopping: boolean;
  stopRetrying: boolean;
  spending: BudgetChunk['data'] | null;
}) {
  const { run, message, status, stopping, stopRetrying, spending } = props;
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const live = message?.runId === run.id ? message : undefined;
  const steps = live ? live.parts.filter((part) => part.type === 'step-start').length : 0;
  let state =
    run.status === 'pending' ? 'starting' : run.status === 'waiting' ? 'waiting for you' : 'running';
  if (stopping)
    state = stopRetrying ? 'stopping… (will send the stop when the connection is back)' : 'stopping…';
  const spent = formatSpending(run, spending);
  const maxSteps = spending?.budget?.maxSteps;
  return (
    <div className="status-line" role="status" aria-live="polite">
      <span className="pulse" aria-hidden="true" />
      <span className="status-text">
        {state}
        {run.status === 'running'
          ? ` · step ${Math.max(1, steps)}${maxSteps ? ` of ${maxSteps}` : ''}`
          : ''}{' '}
        · {formatDuration(runDuration(run, now))}
        {spent ? <span className="spending"> · {spent}</span> : null}
        {status === 'reconnecting' ? <span className="reconnecting"> · reconnecting…</span> : null}
      </span>
    </div>
  );
}
