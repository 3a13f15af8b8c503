import { useCallback, useEffect, useRef, useState } from 'react';
import { OutrunApiError } from '../../src/client/errors.ts';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import type { AgentObject } from '../../src/protocol/agent.ts';
import { isActiveStatus, type Chat, type Me } from '../../src/protocol/index.ts';
import { AgentForm, AgentList } from './agents.tsx';
import { ChatList } from './chat-list.tsx';
import { explainError } from './explain.ts';
import { RunHistory, RunInspector } from './run-inspector.tsx';
import { navigate, routePath, useRoute, type Route } from './router.ts';
import { SchedulesPanel } from './schedules.tsx';
import { Thread } from './thread.tsx';
import { UsagePanel } from './usage.tsx';
import { WebhooksPanel } from './webhooks.tsx';

/** How often the chat list looks for runs going in chats other than the open one. */
const BUSY_POLL_MS = 8000;
/** How many chats, from the top of the list, are checked for a run going. */
const BUSY_POLL_CHATS = 20;

const DEFAULT_TITLE = 'New chat';

function titleFrom(text: string): string {
  const line = text.split('\n').find((candidate) => candidate.trim()) ?? text;
  const trimmed = line.trim();
  return trimmed.length > 48 ? `${trimmed.slice(0, 47)}…` : trimmed;
}

/** The headings of the screens that belong to the workspace, not to a chat (the sidebar's foot links them). */
const SETTINGS_TITLES: Partial<Record<Route['screen'], string>> = {
  agents: 'Agents',
  agent: 'Agents',
  usage: 'Usage',
  webhooks: 'Webhooks',
};

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
  const [agents, setAgents] = useState<AgentObject[]>([]);
  const [agentId, setAgentId] = useState<string>('');
  const [busy, setBusy] = useState<ReadonlySet<string>>(new Set());
  const chatId = 'chatId' in route ? route.chatId : null;
  const isAdmin = me.user.role === 'admin' || me.user.role === 'owner';

  const loadAgents = useCallback(async () => {
    try {
      setAgents((await client.listAgents({ limit: 200 })).items);
    } catch {
      // Agents are optional here: without them, new chats use the workspace default.
    }
  }, [client]);
  useEffect(() => {
    void loadAgents();
  }, [loadAgents]);

  const markBusy = useCallback((id: string, isBusy: boolean) => {
    setBusy((current) => {
      if (current.has(id) === isBusy) return current;
      const next = new Set(current);
      if (isBusy) next.add(id);
      else next.delete(id);
      return next;
    });
  }, []);
  const openChat = useRef(chatId);
  openChat.current = chatId;

  // Marks chats with a run going, or queued; the open chat reports its own state as it changes.
  const chatIds =
    chats
      ?.slice(0, BUSY_POLL_CHATS)
      .map((chat) => chat.id)
      .join(',') ?? '';
  useEffect(() => {
    if (!chatIds) return;
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const check = async () => {
      await Promise.all(
        chatIds.split(',').map(async (id) => {
          if (id === openChat.current) return;
          try {
            const runs = (await client.listRuns(id, { limit: 3 })).items;
            if (!cancelled)
              markBusy(
                id,
                runs.some((run) => isActiveStatus(run.status) || run.status === 'queued'),
              );
          } catch {
            // The next check tries again.
          }
        }),
      );
      if (!cancelled) timer = setTimeout(() => void check(), BUSY_POLL_MS);
    };
    void check();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [client, chatIds, markBusy]);

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
        // Not found, or an address that cannot be a chat id at all.
        if (caught instanceof OutrunApiError && (caught.status === 404 || caught.code === 'invalid_id'))
          setMissing(chatId);
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
      const chat = await client.createChat(agentId ? { agentId } : {});
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
  const notFound = route.screen === 'not-found' || (chatId !== null && missing === chatId);

  useEffect(() => {
    let title = 'Outrun';
    if (notFound) title = 'Not found · Outrun';
    else if (chat) title = `${chat.title} · Outrun`;
    else if (SETTINGS_TITLES[route.screen]) title = `${SETTINGS_TITLES[route.screen]} · Outrun`;
    document.title = title;
  }, [chat, notFound, route.screen]);

  return (
    <div className={`app${menuOpen ? ' menu-open' : ''}`}>
      <a className="skip-link" href="#main-content">
        Skip to the conversation
      </a>
      <aside className="sidebar">
        <div className="sidebar-head">
          <span className="brand">Outrun</span>
          <button type="button" className="primary small" onClick={() => void createChat()}>
            New chat
          </button>
        </div>
        {agents.length > 0 ? (
          <label className="agent-picker small">
            <span className="muted">Agent for new chats</span>
            <select value={agentId} onChange={(event) => setAgentId(event.target.value)}>
              <option value="">Default agent</option>
              {agents.map((agent) => (
                <option key={agent.id} value={agent.id}>
                  {agent.name}
                </option>
              ))}
            </select>
          </label>
        ) : null}
        {chats ? (
          <ChatList
            chats={chats}
            selectedId={chatId}
            busy={busy}
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
          <SidebarLink target={{ screen: 'agents' }} label="Agents" route={route} />
          <SidebarLink target={{ screen: 'usage' }} label="Usage" route={route} />
          {isAdmin ? <SidebarLink target={{ screen: 'webhooks' }} label="Webhooks" route={route} /> : null}
          <button type="button" className="link small" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </aside>
      <div className="scrim" onClick={() => setMenuOpen(false)} aria-hidden="true" />

      <main className="main" id="main-content" tabIndex={-1}>
        <header className="main-head">
          <button
            type="button"
            className="icon menu-button"
            aria-label="Chats"
            onClick={() => setMenuOpen(true)}
          >
            ☰
          </button>
          <h1 className="chat-heading">{heading(route, chat, notFound)}</h1>
          {chat && !notFound ? <Tabs route={route} chatId={chat.id} /> : null}
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
          missing={notFound}
          client={client}
          isAdmin={isAdmin}
          agents={agents}
          onAgentsChanged={() => void loadAgents()}
          onBusyChange={markBusy}
          onCreate={() => void createChat()}
          onFirstMessage={(text) => {
            if (chat && chat.title === DEFAULT_TITLE) void renameChat(chat, titleFrom(text));
          }}
        />
      </main>
    </div>
  );
}

function heading(route: Route, chat: Chat | null, notFound: boolean): string {
  if (notFound) return 'Not found';
  if (chat) return chat.title;
  if (route.screen === 'home') return 'Outrun';
  return SETTINGS_TITLES[route.screen] ?? '';
}

function SidebarLink({ target, label, route }: { target: Route; label: string; route: Route }) {
  const current = SETTINGS_TITLES[route.screen] === SETTINGS_TITLES[target.screen];
  return (
    <a
      className="small"
      href={routePath(target)}
      aria-current={current ? 'page' : undefined}
      onClick={(event) => {
        event.preventDefault();
        navigate(target);
      }}
    >
      {label}
    </a>
  );
}

function Tabs({ route, chatId }: { route: Route; chatId: string }) {
  const tabs: Array<{ label: string; target: Route; current: boolean }> = [
    { label: 'Chat', target: { screen: 'chat', chatId }, current: route.screen === 'chat' },
    {
      label: 'Runs',
      target: { screen: 'runs', chatId },
      current: route.screen === 'runs' || route.screen === 'run',
    },
    { label: 'Schedules', target: { screen: 'schedules', chatId }, current: route.screen === 'schedules' },
  ];
  return (
    <nav className="tabs" aria-label="Views">
      {tabs.map((tab) => (
        <a
          key={tab.label}
          href={routePath(tab.target)}
          aria-current={tab.current ? 'page' : undefined}
          onClick={(event) => {
            event.preventDefault();
            navigate(tab.target);
          }}
        >
          {tab.label}
        </a>
      ))}
    </nav>
  );
}

function Screen(props: {
  route: Route;
  chat: Chat | null;
  missing: boolean;
  client: OutrunClient;
  isAdmin: boolean;
  agents: AgentObject[];
  onAgentsChanged: () => void;
  onBusyChange: (chatId: string, busy: boolean) => void;
  onCreate: () => void;
  onFirstMessage: (text: string) => void;
}) {
  const { route, chat, missing, client, onCreate, onFirstMessage } = props;
  if (missing) {
    return (
      <div className="empty not-found">
        <h2>Not found</h2>
        <p>
          {route.screen === 'not-found'
            ? 'There is no page at this address.'
            : 'This chat does not exist, or it was deleted.'}
        </p>
        <button type="button" className="link" onClick={() => navigate({ screen: 'home' })}>
          Back to your chats
        </button>
      </div>
    );
  }
  if (route.screen === 'home' || route.screen === 'not-found') {
    return (
      <div className="empty welcome">
        <p>Start a chat. Each answer runs on the server: close the tab, come back, and it is still going.</p>
        <button type="button" className="primary" onClick={onCreate}>
          New chat
        </button>
      </div>
    );
  }
  if (route.screen === 'agents') {
    return (
      <div className="panel">
        <AgentList agents={props.agents} isAdmin={props.isAdmin} />
      </div>
    );
  }
  if (route.screen === 'agent') {
    return (
      <div className="panel">
        <AgentForm
          client={client}
          agentId={route.agentId === 'new' ? null : route.agentId}
          isAdmin={props.isAdmin}
          onSaved={props.onAgentsChanged}
        />
      </div>
    );
  }
  if (route.screen === 'usage') {
    return (
      <div className="panel">
        <UsagePanel client={client} isAdmin={props.isAdmin} />
      </div>
    );
  }
  if (route.screen === 'webhooks') {
    return (
      <div className="panel">
        <WebhooksPanel client={client} isAdmin={props.isAdmin} />
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
  if (route.screen === 'schedules') {
    return (
      <div className="panel">
        <SchedulesPanel client={client} chatId={chat.id} />
      </div>
    );
  }
  if (route.screen === 'run') {
    return (
      <div className="panel">
        <button type="button" className="link" onClick={() => navigate({ screen: 'runs', chatId: chat.id })}>
          ← All runs
        </button>
        <RunInspector key={route.runId} client={client} chatId={chat.id} runId={route.runId} />
      </div>
    );
  }
  return (
    <Thread
      key={chat.id}
      client={client}
      chat={chat}
      onFirstMessage={onFirstMessage}
      onBusyChange={props.onBusyChange}
    />
  );
}
