import { useState, type KeyboardEvent } from 'react';
import type { Chat } from '../../src/protocol/index.ts';
import { navigate } from './router.ts';

export interface ChatListProps {
  chats: Chat[];
  selectedId: string | null;
  /** Chats with a run going or queued. */
  busy: ReadonlySet<string>;
  hasMore: boolean;
  onLoadMore: () => void;
  onRename: (chat: Chat, title: string) => Promise<void>;
  onDelete: (chat: Chat) => Promise<void>;
}

/**
 * The chats, newest first, each with rename and delete. Each chat is one Tab stop (its link); on the link,
 * F2 renames the chat and Delete asks to delete it, and the buttons show on hover for pointers.
 */
export function ChatList({
  chats,
  selectedId,
  busy,
  hasMore,
  onLoadMore,
  onRename,
  onDelete,
}: ChatListProps) {
  if (chats.length === 0) return <p className="muted chat-list-empty">No chats yet.</p>;
  return (
    <nav aria-label="Chats">
      <ul className="chat-list">
        {chats.map((chat) => (
          <ChatItem
            key={chat.id}
            chat={chat}
            selected={chat.id === selectedId}
            busy={busy.has(chat.id)}
            onRename={(title) => onRename(chat, title)}
            onDelete={() => onDelete(chat)}
          />
        ))}
      </ul>
      {hasMore ? (
        <button type="button" className="link load-more" onClick={onLoadMore}>
          Load more
        </button>
      ) : null}
    </nav>
  );
}

function ChatItem(props: {
  chat: Chat;
  selected: boolean;
  busy: boolean;
  onRename: (title: string) => Promise<void>;
  onDelete: () => Promise<void>;
}) {
  const { chat, selected, busy: running, onRename, onDelete } = props;
  const [mode, setMode] = useState<'view' | 'rename' | 'confirm-delete'>('view');
  const [title, setTitle] = useState(chat.title);
  const [busy, setBusy] = useState(false);

  const saveTitle = async () => {
    const next = title.trim();
    if (next && next !== chat.title) {
      setBusy(true);
      try {
        await onRename(next);
      } finally {
        setBusy(false);
      }
    }
    setMode('view');
  };
  const onTitleKey = (event: KeyboardEvent<HTMLInputElement>) => {
    if (event.key === 'Enter') void saveTitle();
    if (event.key === 'Escape') {
      event.preventDefault();
      setTitle(chat.title);
      setMode('view');
    }
  };

  if (mode === 'rename') {
    return (
      <li className="chat-item editing">
        <input
          autoFocus
          value={title}
          maxLength={200}
          aria-label="Chat title"
          disabled={busy}
          onChange={(event) => setTitle(event.target.value)}
          onKeyDown={onTitleKey}
          onBlur={() => void saveTitle()}
        />
      </li>
    );
  }
  if (mode === 'confirm-delete') {
    return (
      <li className="chat-item confirming">
        <span className="chat-title">Delete “{chat.title}”?</span>
        <button
          type="button"
          className="danger small"
          autoFocus
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            try {
              await onDelete();
            } finally {
              setBusy(false);
              setMode('view');
            }
          }}
        >
          Delete
        </button>
        <button type="button" className="small" onClick={() => setMode('view')}>
          Cancel
        </button>
      </li>
    );
  }
  return (
    <li className={`chat-item${selected ? ' selected' : ''}`}>
      <a
        href={`/chats/${chat.id}`}
        className="chat-title"
        aria-current={selected ? 'page' : undefined}
        aria-keyshortcuts="F2 Delete"
        onClick={(event) => {
          event.preventDefault();
          navigate({ screen: 'chat', chatId: chat.id });
        }}
        onKeyDown={(event) => {
          if (event.key === 'F2') {
            event.preventDefault();
            setTitle(chat.title);
            setMode('rename');
          } else if (event.key === 'Delete') {
            event.preventDefault();
            setMode('confirm-delete');
          }
        }}
      >
        {running ? (
          <span className="busy-dot" role="img" aria-label="A run is going" title="A run is going" />
        ) : null}
        {chat.title}
      </a>
      <span className="chat-actions">
        <button
          type="button"
          className="icon"
          tabIndex={-1}
          title="Rename (F2)"
          aria-label={`Rename ${chat.title}`}
          onClick={() => {
            setTitle(chat.title);
            setMode('rename');
          }}
        >
          ✎
        </button>
        <button
          type="button"
          className="icon"
          tabIndex={-1}
          title="Delete (Delete key)"
          aria-label={`Delete ${chat.title}`}
          onClick={() => setMode('confirm-delete')}
        >
          ×
        </button>
      </span>
    </li>
  );
}
