import { timingSafeEqual } from 'node:crypto';
import cors from '@fastify/cors';
import helmet from 'helmet';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { OutrunContext } from '../app.ts';
import type { Caller } from '../auth/auth-service.ts';
import { isScopedToken } from '../auth/scoped-tokens.ts';
import { assertTokenScope, isStreamRoute } from '../auth/token-scope.ts';
import {
  DEFAULT_RETRY_AFTER_SECONDS,
  InvalidRequestError,
  ServiceUnavailableError,
  UnauthorizedError,
} from '../errors.ts';
import { OpenStreams } from './open-streams.ts';
import { registerApiKeyRoutes } from './routes/api-key-routes.ts';
import { registerTokenRoutes } from './routes/token-routes.ts';
import { clientErrorHandler, errorHandler, frameworkErrorHandler } from './error-mapper.ts';
import { DeferredKeyCheck } from './key-check.ts';
import { addressKey, rateLimitKeyOf } from './rate-limit.ts';
import { registerAdminRoutes } from './routes/admin-routes.ts';
import { registerAgentRoutes } from './routes/agent-routes.ts';
import { registerChatRoutes } from './routes/chat-routes.ts';
import { registerRunRoutes } from './routes/run-routes.ts';
import { registerScheduleRoutes } from './routes/schedule-routes.ts';
import { registerAiSdkRoutes } from './routes/ai-sdk-routes.ts';
import { registerStepRoutes } from './routes/step-routes.ts';
import { registerWebhookRoutes } from './routes/webhook-routes.ts';
import { CONTENT_SECURITY_DIRECTIVES, registerWebApp } from './static.ts';
import { registerQuotaRoutes } from './routes/quota-routes.ts';
import { queryParametersOf, registerOpenApiRoute, takesNoBody, trackRoutes } from './openapi.ts';
import { registerRequestObserver } from './request-observer.ts';
import { assertStorableText } from './text-guard.ts';
import { NoBody } from './validation.ts';
import { MAX_PATH_SEGMENT_LENGTH, routeNotFound } from './route-not-found.ts';

/** How long `/readyz` waits for the database before answering 503: a frozen database must not hang it. */
const READINESS_PROBE_TIMEOUT_MS = 800;

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller; set on every `/v1` route. */
    caller: Caller;
    /** Set when `caller` came from memory on a route that checks the key later (`deferKeyCheck`). */
    keyCheck: DeferredKeyCheck | null;
  }
  interface FastifyContextConfig {
    /**
     * The route checks an API key that this instance authenticated lately in its own statement, or verifies
     * it before it acts (`DeferredKeyCheck`): one round trip less. Requests with `Idempotency-Key` are
     * authenticated first, as on every other route.
     */
    deferKeyCheck?: boolean;
  }
  interface FastifyInstance {
    /** The SSE streams this instance serves, by the key that authorized them. */
    openStreams: OpenStreams;
  }
}

/** The credential of a request: `Authorization: Bearer <credential>`. */
function bearer(header: string | undefined): string | undefined {
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

/** Compares secrets in constant time. */
function sameSecret(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The HTTP edge: Fastify with one route file per resource, API-key auth on `/v1`, and one error mapper. */
export function buildServer(context: OutrunContext): FastifyInstance {
  const app = Fastify({
    loggerInstance: context.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: context.config.bodyLimitBytes,
    routerOptions: { maxParamLength: MAX_PATH_SEGMENT_LENGTH },
    // Requests that arrive while closing get the error shape from the `onRequest` hook below.
    return503OnClosing: false,
    forceCloseConnections: true,
    // Which proxies' X-Forwarded-For names the client (`request.ip`), for the failed-authentication limit.
    trustProxy: context.config.trustProxy,
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler,
  });
  trackRoutes(app);
  registerRequestObserver(app, { metrics: context.metrics });

  // An empty JSON body (a POST with `Content-Type: application/json` and nothing else) means "no fields".
  // JSON only: any other body is a 415 rather than a string that fails validation.
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      done(
        Object.assign(new SyntaxError('invalid JSON'), {
          statusCode: 400,
          code: 'FST_ERR_CTP_INVALID_JSON_BODY',
        }),
      );
      return;
    }
    try {
      assertStorableText(value, 'body');
    } catch (error) {
      return done(error as Error);
    }
    done(null, value);
  });

  // CORS first, so that even a 401 reaches the calling page readably. Credentials are bearer tokens, never
  // cookies, so no origin is ever allowed credentials and `*` stays safe.
  const origins = context.config.corsOrigins;
  void app.register(cors, {
    origin: origins.includes('*') ? '*' : origins.length > 0 ? origins : false,
    credentials: false,
    methods: ['GET', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'last-event-id'],
    exposedHeaders: ['retry-after', 'x-outrun-run-id', 'x-vercel-ai-ui-message-stream'],
    maxAge: 600,
    // An OPTIONS request that is no preflight (no Origin, no requested method) gets no CORS headers rather than
    // a plain-text 400 outside the API's error shape.
    strictPreflight: false,
  });
  // Security headers on every answer. Helmet's middleware is built once, here: it computes its headers when
  // built (the Fastify plugin built it again for every request, 4–5 % of a resume's CPU).
  const securityHeaders = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_DIRECTIVES },
    // The API is meant to be read from other origins (the CORS allowlist decides which).
    crossOriginResourcePolicy: { policy: 'cross-origin' },
  });
  app.addHook('onRequest', (request, reply, done) =>
    securityHeaders(request.raw, reply.raw, (error) => done(error as Error | undefined)),
  );

  const openStreams = new OpenStreams({
    bus: context.bus,
    logger: context.logger,
    invalidKeyIds: (keyIds) => context.auth.invalidKeyIds(keyIds),
    recheckMs: context.config.streamRecheckMs,
  });
  app.decorate('openStreams', openStreams);
  app.addHook('onReady', async () => openStreams.start());
  app.addHook('onClose', async () => openStreams.stop());

  // A deferred key check is settled before any error answer: a key that no longer authenticates gets its 401.
  app.setErrorHandler(async (error, request, reply) => {
    const keyError = await request.keyCheck?.settleBeforeError(error).then(
      () => undefined,
      (failed: unknown) => failed,
    );
    errorHandler(error, request, reply, keyError);
    // The answer may go out later (a too-large body is drained first): the reply says it is handled.
    return reply;
  });
  app.setNotFoundHandler((request, reply) => {
    const error = routeNotFound(request.url);
    const message = error.status === 404 ? 'No such route.' : error.message;
    return reply.status(error.status).send({ error: { code: error.code, message } });
  });

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    // Ended, not cut when the connections are closed next: a reader sees a clean end and reconnects.
    await openStreams.closeAll();
  });
  app.decorateRequest('caller', null as unknown as Caller);
  app.decorateRequest('keyCheck', null);
  app.addHook('onRequest', async (request, reply) => {
    if (closing) {
      void reply.header('connection', 'close');
      throw new ServiceUnavailableError('The server is shutting down; retry on another instance.');
    }
    // Path parameters and the query string reach SQL too: the same text rule as bodies.
    assertStorableText(request.params, 'path');
    assertStorableText(request.query, 'query');
  });
  app.addHook('onRequest', async (request) => {
    // Preflights are answered by the CORS plugin without credentials.
    if (!request.url.startsWith('/v1/') || request.method === 'OPTIONS') return;
    const fromHeader = bearer(request.headers.authorization);
    const fromQuery = (request.query as Record<string, unknown> | undefined)?.access_token;
    const inQuery = fromHeader === undefined && typeof fromQuery === 'string';
    if (inQuery && !isStreamRoute(request.method, request.routeOptions.url)) {
      throw new UnauthorizedError('`access_token` is accepted only on stream routes; send `Authorization`.');
    }
    const credential = inQuery ? fromQuery : fromHeader;
    const options = { fromQuery: inQuery };
    const known =
      credential !== undefined &&
      request.routeOptions.config.deferKeyCheck &&
      request.headers['idempotency-key'] === undefined
        ? await context.auth.identify(credential, options)
        : undefined;
    if (known) {
      request.caller = known;
      request.keyCheck = new DeferredKeyCheck(() => context.auth.authenticate(credential, options));
      return;
    }
    // An address past its failed authentications is refused before an API key is looked up, unless the key
    // already worked here. Scoped tokens are not counted: a token is checked by its signature first, so a
    // guessed one costs no look-up.
    const { rateLimiter } = context;
    const apiKey = credential !== undefined && !isScopedToken(credential) ? credential : undefined;
    if (apiKey !== undefined && rateLimiter.limitsAuthFailures && !context.auth.knowsKey(apiKey)) {
      await rateLimiter.checkAuthFailures(addressKey(request.ip)).catch((error: unknown) => {
        context.metrics.authFailures.inc({ result: 'refused' });
        throw error;
      });
    }
    try {
      request.caller = await context.auth.authenticate(credential, options);
    } catch (error) {
      if (apiKey !== undefined && error instanceof UnauthorizedError) {
        context.metrics.authFailures.inc({ result: 'unauthorized' });
        await rateLimiter.recordAuthFailure(addressKey(request.ip));
      }
      throw error;
    }
  });
  // A scoped token reaches only its own chat's routes (after body parsing: useChat names the chat in it).
  app.addHook('preHandler', async (request) => {
    if (!request.caller?.token) return;
    await assertTokenScope({
      caller: request.caller,
      method: request.method,
      url: request.routeOptions.url,
      params: request.params,
      body: request.body,
      chatOfRun: async (workspaceId, runId) =>
        (
          await context.db
            .selectFrom('runs')
            .select('chat_id')
            .where('id', '=', runId)
            .where('workspace_id', '=', workspaceId)
            .executeTakeFirst()
        )?.chat_id,
    });
  });
  // The backstop of a deferred key check: nothing a route answers leaves before the key was checked.
  app.addHook('onSend', async (request) => {
    if (request.keyCheck && !request.keyCheck.settled) {
      request.log.error({ url: request.url }, 'a route answered before it checked its deferred key');
      await request.keyCheck.verify();
    }
  });
  // API responses carry keys and private data: never cached, by a browser or anything in between.
  app.addHook('onSend', async (request, reply) => {
    if (request.url.startsWith('/v1/')) void reply.header('cache-control', 'no-store');
  });
  // After authentication, so only real callers are counted and an unknown key stays a 401. A preflight has no
  // caller: it is not counted.
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1/') || !request.caller) return;
    await context.rateLimiter.consume(rateLimitKeyOf(request.caller));
  });
  // A query parameter the route does not take is refused, as an unknown body field is: a misspelt `?limit`
  // must not quietly answer the default page.
  app.addHook('onRequest', async (request) => {
    const known = queryParametersOf(request.method, request.routeOptions.url);
    if (!known) return;
    const unknown = Object.keys(request.query as Record<string, unknown>).filter((name) => !known.has(name));
    if (unknown.length > 0) {
      const names = unknown.map((name) => `"${name}"`).join(', ');
      throw new InvalidRequestError(
        `Unrecognized query parameter${unknown.length > 1 ? 's' : ''}: ${names}.`,
        {
          parameters: unknown,
        },
      );
    }
  });

  // A route that takes no body refuses one with fields before it acts, as a route with a body schema refuses a
  // field it does not know: a `{"bogus":1}` sent to a stop or a delete is never ignored while the route goes
  // ahead. It runs after the scoped-token check (registered earlier), as a route's own body validation does.
  app.addHook('preHandler', async (request) => {
    if (takesNoBody(request.method, request.routeOptions.url)) NoBody.parse(request.body);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    if (context.draining) {
      return reply
        .status(503)
        .header('retry-after', String(DEFAULT_RETRY_AFTER_SECONDS))
        .send({ error: { code: 'not_ready', message: 'The server is shutting down.' } });
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), READINESS_PROBE_TIMEOUT_MS);
    });
    const probe = sql`select 1`.execute(context.db).then(
      () => 'ready' as const,
      () => 'unreachable' as const,
    );
    const outcome = await Promise.race([probe, timedOut]);
    clearTimeout(timer);
    // With Redis (DESIGN §4: "database, and Redis when configured"): the bus connected, its channels
    // subscribed. Without it the instance cannot start a streaming run or follow one from another instance.
    const busReady = context.bus.ready();
    if (outcome === 'ready' && busReady) return { status: 'ready' };
    const message =
      outcome === 'timeout'
        ? 'The database did not answer in time.'
        : outcome === 'unreachable'
          ? 'The database is not reachable.'
          : 'Redis is not reachable.';
    return reply
      .status(503)
      .header('retry-after', String(DEFAULT_RETRY_AFTER_SECONDS))
      .send({ error: { code: 'not_ready', message } });
  });
  app.get('/metrics', async (request, reply) => {
    const token = context.config.metricsToken;
    if (token !== undefined && !sameSecret(bearer(request.headers.authorization), token)) {
      throw new UnauthorizedError('Metrics need `Authorization: Bearer <OUTRUN_METRICS_TOKEN>`.');
    }
    await sampleQueueDepth(context);
    void reply.header('content-type', context.metrics.registry.contentType);
    return context.metrics.scrape();
  });

  registerAdminRoutes(app, context);
  registerAgentRoutes(app, context);
  registerChatRoutes(app, context);
  registerRunRoutes(app, context);
  registerStepRoutes(app, context);
  registerAiSdkRoutes(app, context);
  registerWebhookRoutes(app, context);
  registerApiKeyRoutes(app, context);
  registerTokenRoutes(app, context);
  registerQuotaRoutes(app, context);
  registerScheduleRoutes(app, context);
  registerOpenApiRoute(app);
  registerWebApp(app);
  return app;
}

/** Sets the queue depth gauge from the runs waiting for a worker; a slow or failing database leaves it as it was. */
async function sampleQueueDepth(context: OutrunContext): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), READINESS_PROBE_TIMEOUT_MS);
  });
  const count = context.db
    .selectFrom('runs')
    .select((eb) => eb.fn.countAll<string>().as('count'))
    .where('status', '=', 'pending')
    .executeTakeFirst()
    .then(
      (row) => Number(row?.count ?? 0),
      () => null,
    );
  const depth = await Promise.race([count, timedOut]);
  clearTimeout(timer);
  if (depth !== null) context.metrics.queueDepth.set(depth);
}
