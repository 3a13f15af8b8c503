import { ForbiddenError, NotFoundError } from '../errors.ts';
import type { Caller } from './auth-service.ts';
import { TokenScope } from '../protocol/credentials.ts';

/** How a route names its chat: by a path parameter, through a run, or in the body (useChat's `id`). */
type ChatLocator = 'chatId' | 'runId' | 'body.id';

interface ScopedRoute {
  scope: TokenScope;
  chat: ChatLocator;
  /** Whether the credential may also come as `?access_token=` (for `EventSource`). */
  stream?: boolean;
  /**
   * A `runId` route whose own read of the run checks the token's chat (`ownedRun`): no look-up of the run's
   * chat here, one round trip less before a resume.
   */
  runChatCheckedByRoute?: boolean;
}

/**
 * The routes a scoped token reaches (DESIGN §4), by method and route pattern. Every other `/v1` route refuses
 * a scoped token with 403.
 */
const SCOPED_ROUTES: Record<string, ScopedRoute> = {
  'GET /v1/chats/:chatId': { scope: TokenScope.read, chat: 'chatId' },
  'GET /v1/chats/:chatId/messages': { scope: TokenScope.read, chat: 'chatId' },
  'GET /v1/chats/:chatId/runs': { scope: TokenScope.read, chat: 'chatId' },
  'GET /v1/chats/:chatId/runs/latest': { scope: TokenScope.read, chat: 'chatId' },
  'GET /v1/runs/:runId': { scope: TokenScope.read, chat: 'runId' },
  'GET /v1/runs/:runId/steps': { scope: TokenScope.read, chat: 'runId' },
  'GET /v1/runs/:runId/stream': {
    scope: TokenScope.read,
    chat: 'runId',
    stream: true,
    runChatCheckedByRoute: true,
  },
  'GET /v1/ui/chats/:chatId/stream': { scope: TokenScope.read, chat: 'chatId', stream: true },
  'POST /v1/chats/:chatId/runs': { scope: TokenScope.write, chat: 'chatId' },
  'POST /v1/chats/:chatId/stop': { scope: TokenScope.write, chat: 'chatId' },
  'POST /v1/runs/:runId/stop': { scope: TokenScope.write, chat: 'runId' },
  'POST /v1/runs/:runId/approvals': { scope: TokenScope.write, chat: 'runId' },
  'POST /v1/runs/:runId/continue': { scope: TokenScope.write, chat: 'runId' },
  'POST /v1/ui/chats': { scope: TokenScope.write, chat: 'body.id' },
};

const routeKey = (method: string, url: string | undefined) => `${method.toUpperCase()} ${url ?? ''}`;

/** Whether `?access_token=` is accepted on this route: the stream routes only. */
export function isStreamRoute(method: string, url: string | undefined): boolean {
  return SCOPED_ROUTES[routeKey(method, url)]?.stream === true;
}

/**
 * Lets a scoped token through only to its own chat's routes: another chat (or run of another chat) is 404, as
 * if it did not exist; a write with a read-only token is 403. API-key callers pass untouched.
 */
export async function assertTokenScope(options: {
  caller: Caller;
  method: string;
  /** The matched route pattern (`/v1/runs/:runId`). */
  url: string | undefined;
  params: unknown;
  body: unknown;
  /** The chat of a run in the workspace, if the run exists. */
  chatOfRun: (workspaceId: string, runId: string) => Promise<string | undefined>;
}): Promise<void> {
  const token = options.caller.token;
  if (!token) return;
  const route = SCOPED_ROUTES[routeKey(options.method, options.url)];
  if (!route) throw new ForbiddenError('A scoped token is valid only for its chat’s routes.');
  const params = (options.params ?? {}) as Record<string, unknown>;
  if (route.chat === 'runId') {
    if (route.runChatCheckedByRoute) return assertScope(route, token.scopes);
    const runId = String(params.runId ?? '');
    const chatId = await options.chatOfRun(options.caller.workspaceId, runId);
    if (chatId !== token.chatId) throw new NotFoundError('run', runId);
  } else {
    const chatId =
      route.chat === 'chatId' ? params.chatId : (options.body as Record<string, unknown> | undefined)?.id;
    if (chatId !== token.chatId)
      throw new NotFoundError('chat', typeof chatId === 'string' ? chatId : undefined);
  }
  assertScope(route, token.scopes);
}

function assertScope(route: ScopedRoute, scopes: TokenScope[]): void {
  // `write` includes reading.
  const allowed =
    route.scope === TokenScope.read
      ? scopes.includes(TokenScope.read) || scopes.includes(TokenScope.write)
      : scopes.includes(TokenScope.write);
  if (!allowed) {
    throw new ForbiddenError(`This scoped token lacks the "${route.scope}" scope.`);
  }
}
