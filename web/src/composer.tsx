import { useEffect, useRef, type KeyboardEvent } from 'react';

export interface ComposerProps {
  text: string;
  onTextChange: (text: string) => void;
  /** Why the composer is disabled, shown as its hint; null when it is enabled. */
  disabledReason: string | null;
  sending: boolean;
  /** A run is going: a message sent now is queued behind it, and Stop ends the run. */
  running: boolean;
  stopping: boolean;
  /** Sends the text; resolves true when it went out (the box is then cleared), false to keep it. */
  onSend: (text: string) => Promise<boolean>;
  onStop: () => void;
}

/**
 * The message box: Enter sends, Shift+Enter adds a line. While a run is going it stays usable (a message
 * is queued behind the run) and holds the Stop button. The text survives reloads and failed sends.
 */
export function Composer(props: ComposerProps) {
  const { text, onTextChange, disabledReason, sending, running, stopping, onSend, onStop } = props;
  const box = useRef<HTMLTextAreaElement>(null);
  const disabled = disabledReason !== null || sending;

  useEffect(() => {
    if (!disabled && !window.matchMedia?.('(pointer: coarse)').matches) box.current?.focus();
  }, [disabled]);

  const submit = async () => {
    const message = text.trim();
    if (!message || disabled) return;
    if (await onSend(message)) onTextChange('');
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      void submit();
    }
  };

  return (
    <form
      className="composer"
      onSubmit={(event) => {
        event.preventDefault();
        void submit();
      }}
    >
      <textarea
        ref={box}
        value={text}
        onChange={(event) => onTextChange(event.target.value)}
        onKeyDown={onKeyDown}
        placeholder={disabledReason ? '' : running ? 'Queue a message…' : 'Message Outrun…'}
        aria-label="Message"
        rows={Math.min(8, Math.max(1, text.split('\n').length))}
        disabled={disabled}
      />
      <div className="composer-buttons">
        {running ? (
          <button
            type="button"
            className="danger"
            onClick={onStop}
            disabled={stopping}
            aria-keyshortcuts="Escape"
          >
            {stopping ? 'Stopping…' : 'Stop'}
          </button>
        ) : null}
        <button type="submit" className={running ? '' : 'primary'} disabled={disabled || !text.trim()}>
          {sending ? 'Sending…' : running ? 'Queue' : 'Send'}
        </button>
      </div>
      <div className="composer-hint" aria-live="polite">
        {disabledReason ?? (
          <>
            {running ? 'A message sent now starts when this run ends. ' : ''}
            <span className="keyboard-hint">
              {running ? 'Esc stops the run · ' : ''}Enter to send · Shift+Enter for a new line
            </span>
          </>
        )}
      </div>
    </form>
  );
}
