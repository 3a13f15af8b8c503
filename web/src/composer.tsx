import { useEffect, useRef, useState, type KeyboardEvent } from 'react';
import { drafts } from './auth.ts';

export interface ComposerProps {
  chatId: string;
  /** Why the composer is disabled, shown as its hint; null when it is enabled. */
  disabledReason: string | null;
  sending: boolean;
  /** Sends the text; resolves true when it went out (the box is then cleared), false to keep it. */
  onSend: (text: string) => Promise<boolean>;
}

/** The message box: Enter sends, Shift+Enter adds a line. The text survives reloads and failed sends. */
export function Composer({ chatId, disabledReason, sending, onSend }: ComposerProps) {
  const [text, setText] = useState(() => drafts.load(chatId));
  const box = useRef<HTMLTextAreaElement>(null);
  const disabled = disabledReason !== null || sending;

  useEffect(() => {
    drafts.save(chatId, text);
  }, [chatId, text]);

  useEffect(() => {
    if (!disabled) box.current?.focus();
  }, [disabled]);

  const submit = async () => {
    const message = text.trim();
    if (!message || disabled) return;
    if (await onSend(message)) setText((current) => (current.trim() === message ? '' : current));
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
        onChange={(event) => setText(event.target.value)}
        onKeyDown={onKeyDown}
        placeholder={disabledReason ? '' : 'Message Outrun…'}
        aria-label="Message"
        rows={Math.min(8, Math.max(1, text.split('\n').length))}
        disabled={disabled}
      />
      <button type="submit" className="primary" disabled={disabled || !text.trim()}>
        {sending ? 'Sending…' : 'Send'}
      </button>
      <div className="composer-hint" aria-live="polite">
        {disabledReason ?? 'Enter to send · Shift+Enter for a new line'}
      </div>
    </form>
  );
}
