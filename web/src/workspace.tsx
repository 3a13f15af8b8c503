import { useCallback, useEffect, useState } from 'react';
import { OutrunApiError } from '../../src/client/errors.ts';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { Chat, Me } from '../../src/protocol/index.ts';
import { ChatList } from './chat-list.tsx';
import { explainError } from './explain.ts';
import { RunHistory, RunInspector } from './run-inspector.tsx';
import { navigate, useRoute, type Route } from './router.ts';
import { Thread } from './thread.tsx';

const DEFAULT_TITLE = 'New chat';

function titleFrom(text: string): string {
  const line = text.split('\n').find((candidate) => candidate.trim()) ?? text;
  const trimmed = line.trim();
  return trimmed.length > 48 ? `${trimmed.slice(0, 47)}…` : trimmed;
}

/** The signed-in app: the chat list beside the selected chat, its runs or one run. */
export function Workspace({
  client,
  me,
  onSignOut,
}: {
  client: OutrunClient;
  me: Me;
  onSignOut: () => void;
}) {
  const route = useRoute();
  const [chats, setChats] = useState<Chat[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [menuOpen, setMenuOpen] = useState(false);
  const [missing, setMissing] = useState<string | null>(null);
  const chatId = route.screen === 'home' ? null : route.chatId;

  const loadChats = useCallback(
    async (after?: string) => {
      try {
        const page = await client.listChats({ limit: 50, cursor: after });
        setChats((current) => (after && current ? [...current, ...page.items] : page.items));
        setCursor(page.nextCursor);
      } catch (caught) {
        setError(caught as Error);
      }
    },
    [client],
  );
  useEffect(() => {
    void loadChats();
  }, [loadChats]);

  // A chat opened by its address that is not on the loaded page of the list.
  useEffect(() => {
    if (!chatId || !chats || chats.some((chat) => chat.id === chatId)) return;
    let cancelled = false;
    client.getChat(chatId).then(
      (chat) => !cancelled && setChats((current) => (current ? [chat, ...current] : [chat])),
      (caught: unknown) => {
        if (cancelled) return;
        if (caught instanceof OutrunApiError && caught.status === 404) setMissing(chatId);
        else setError(caught as Error);
      },
    );
    return () => {
      cancelled = true;
    };
  }, [client, chatId, chats]);

  useEffect(() => setMenuOpen(false), [route]);

  const createChat = async () => {
    try {
      const chat = await client.createChat();
      setChats((current) => [chat, ...(current ?? [])]);
      navigate({ screen: 'chat', chatId: chat.id });
    } catch (caught) {
      setError(caught as Error);
    }
  };
  const renameChat = async (chat: Chat, title: string) => {
    try {
      const renamed = await client.renameChat(chat.id, title);
      setChats((current) => current?.map((item) => (item.id === chat.id ? renamed : item)) ?? null);
    } catch (caught) {
      setError(caught as Error);
    }
  };
  const deleteChat = async (chat: Chat) => {
    try {
      await client.deleteChat(chat.id);
      setChats((current) => current?.filter((item) => item.id !== chat.id) ?? null);
      if (chat.id === chatId) navigate({ screen: 'home' });
    } catch (caught) {
      setError(caught as Error);
    }
  };

  const chat = chats?.find((item) => item.id === chatId) ?? null;

  return (
    <div className={`app${menuOpen ? ' menu-open' : ''}`}>
      <aside className="sidebar">
        <div className="sidebar-head">
          <span className="brand">Outrun</span>
          <button type="button" className="primary small" onClick={() => void createChat()}>
            New chat
          </button>
        </div>
        {chats ? (
          <ChatList
            chats={chats}
            selectedId={chatId}
            hasMore={cursor !== null}
            onLoadMore={() => void loadChats(cursor ?? undefined)}
            onRename={renameChat}
            onDelete={deleteChat}
          />
        ) : (
          <p className="muted chat-list-empty">Loading…</p>
        )}
        <div className="sidebar-foot">
          <span className="muted small" title={me.workspace.name}>
            {me.user.email}
          </span>
          <button type="button" className="link small" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </aside>
      <div className="scrim" onClick={() => setMenuOpen(false)} aria-hidden="true" />

      <main className="main">
        <header className="main-head">
          <button
            type="button"
            className="icon menu-button"
            aria-label="Chats"
            onClick={() => setMenuOpen(true)}
          >
            ☰
          </button>
          <h1 className="chat-heading">{chat?.title ?? (route.screen === 'home' ? 'Outrun' : '')}</h1>
          {chat ? <Tabs route={route} chatId={chat.id} /> : null}
        </header>
        {error ? (
          <div className="banner banner-error" role="alert">
            <span>{explainError(error)}</span>
            <button type="button" onClick={() => setError(null)}>
              Dismiss
            </button>
          </div>
        ) : null}
        <Screen
          route={route}
          chat={chat}
          missing={missing === chatId}
          client={client}
          onCreate={() => void createChat()}
          onFirstMessage={(text) => {
            if (chat && chat.title === DEFAULT_TITLE) void renameChat(chat, titleFrom(text));
          }}
        />
      </main>
    </div>
  );
}

function Tabs({ route, chatId }: { route: Route; chatId: string }) {
  const onChat = route.screen === 'chat';
  return (
    <nav className="tabs" aria-label="Views">
      <a
        href={`/chats/${chatId}`}
        aria-current={onChat ? 'page' : undefined}
        onClick={(event) => {
          event.preventDefault();
          navigate({ screen: 'chat', chatId });
        }}
      >
        Chat
      </a>
      <a
        href={`/chats/${chatId}/runs`}
        aria-current={onChat ? undefined : 'page'}
        onClick={(event) => {
          event.preventDefault();
          navigate({ screen: 'runs', chatId });
        }}
      >
        Runs
      </a>
    </nav>
  );
}

function Screen(props: {
  route: Route;
  chat: Chat | null;
  missing: boolean;
  client: OutrunClient;
  onCreate: () => void;
  onFirstMessage: (text: string) => void;
}) {
  const { route, chat, missing, client, onCreate, onFirstMessage } = props;
  if (route.screen === 'home') {
    return (
      <div className="empty welcome">
        <p>Start a chat. Each answer runs on the server: close the tab, come back, and it is still going.</p>
        <button type="button" className="primary" onClick={onCreate}>
          New chat
        </button>
      </div>
    );
  }
  if (missing) {
    return (
      <div className="empty">
        <p>This chat does not exist, or it was deleted.</p>
        <button type="button" className="link" onClick={() => navigate({ screen: 'home' })}>
          Back to your chats
        </button>
      </div>
    );
  }
  if (!chat) return <div className="empty">Loading…</div>;
  if (route.screen === 'runs') {
    return (
      <div className="panel">
        <RunHistory client={client} chatId={chat.id} />
      </div>
    );
  }
  if (route.screen === 'run') {
    return (
      <div className="panel">
        <button type="button" className="link" onClick={() => navigate({ screen: 'runs', chatId: chat.id })}>
          ← All runs
        </button>
        <RunInspector client={client} runId={route.runId} />
      </div>
    );
  }
  return <Thread key={chat.id} client={client} chat={chat} onFirstMessage={onFirstMessage} />;
}
