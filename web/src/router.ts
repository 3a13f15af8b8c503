import { useEffect, useState } from 'react';

/** The screens of the app, from the address bar. */
export type Route =
  | { screen: 'home' }
  | { screen: 'chat'; chatId: string }
  | { screen: 'runs'; chatId: string }
  | { screen: 'run'; chatId: string; runId: string }
  | { screen: 'schedules'; chatId: string }
  | { screen: 'agents' }
  /** `agentId` "new" is the form for a new agent. */
  | { screen: 'agent'; agentId: string }
  | { screen: 'usage' }
  | { screen: 'webhooks' }
  | { screen: 'not-found' };

export function parseRoute(pathname: string): Route {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { screen: 'home' };
  if (parts[0] === 'chats' && parts[1] && parts.length <= 4) {
    if (parts[2] === 'runs' && parts[3]) return { screen: 'run', chatId: parts[1], runId: parts[3] };
    if (parts[2] === 'runs' && parts.length === 3) return { screen: 'runs', chatId: parts[1] };
    if (parts[2] === 'schedules' && parts.length === 3) return { screen: 'schedules', chatId: parts[1] };
    if (parts.length === 2) return { screen: 'chat', chatId: parts[1] };
  }
  if (parts[0] === 'agents' && parts.length === 1) return { screen: 'agents' };
  if (parts[0] === 'agents' && parts[1] && parts.length === 2) return { screen: 'agent', agentId: parts[1] };
  if (parts[0] === 'usage' && parts.length === 1) return { screen: 'usage' };
  if (parts[0] === 'webhooks' && parts.length === 1) return { screen: 'webhooks' };
  return { screen: 'not-found' };
}

export function routePath(route: Route): string {
  switch (route.screen) {
    case 'home':
    case 'not-found':
      return '/';
    case 'chat':
      return `/chats/${encodeURIComponent(route.chatId)}`;
    case 'runs':
      return `/chats/${encodeURIComponent(route.chatId)}/runs`;
    case 'schedules':
      return `/chats/${encodeURIComponent(route.chatId)}/schedules`;
    case 'run':
      return `/chats/${encodeURIComponent(route.chatId)}/runs/${encodeURIComponent(route.runId)}`;
    case 'agents':
      return '/agents';
    case 'agent':
      return `/agents/${encodeURIComponent(route.agentId)}`;
    case 'usage':
      return '/usage';
    case 'webhooks':
      return '/webhooks';
  }
}

const NAVIGATE_EVENT = 'outrun:navigate';

export function navigate(route: Route, options: { replace?: boolean } = {}): void {
  const path = routePath(route);
  if (path === window.location.pathname) return;
  if (options.replace) window.history.replaceState(null, '', path);
  else window.history.pushState(null, '', path);
  window.dispatchEvent(new Event(NAVIGATE_EVENT));
}

/** The current route; follows links, back and forward. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.pathname));
  useEffect(() => {
    const update = () => setRoute(parseRoute(window.location.pathname));
    window.addEventListener('popstate', update);
    window.addEventListener(NAVIGATE_EVENT, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(NAVIGATE_EVENT, update);
    };
  }, []);
  return route;
}
