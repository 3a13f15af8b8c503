import { useState, type KeyboardEvent } from 'react';
import type { Chat } from '../../src/protocol/index.ts';
import { navigate } from './router.ts';

export interface ChatListProps {
  chats: Chat[];
  selectedId: string | null;
  hasMore: boolean;
  onLoadMore: () => void;
  onRename: (chat: Chat, title: string) => Promise<void>;
  onDelete: (chat: Chat) => Promise<void>;
}

/** The chats, newest first, each with rename and delete. */
export function ChatList({ chats, selectedId, hasMore, onLoadMore, onRename, onDelete }: ChatListProps) {
  if (chats.length === 0) return <p className="muted chat-list-empty">No chats yet.</p>;
  return (
    <nav aria-label="Chats">
      <ul className="chat-list">
        {chats.map((chat) => (
          <ChatItem
            key={chat.id}
            chat={chat}
            selected={chat.id === selectedId}
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
  onRename: (title: string) => Promise<void>;
  onDelete: () => Promise<void>;
}) {
  const { chat, selected, onRename, onDelete } = props;
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
        onClick={(event) => {
          event.preventDefault();
          navigate({ screen: 'chat', chatId: chat.id });
        }}
      >
        {chat.title}
      </a>
      <span className="chat-actions">
        <button
          type="button"
          className="icon"
          title="Rename"
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
          title="Delete"
          aria-label={`Delete ${chat.title}`}
          onClick={() => setMode('confirm-delete')}
        >
          ×
        </button>
      </span>
    </li>
  );
}
