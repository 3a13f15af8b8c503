import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { OutrunContext } from '../app.ts';
import type { Caller } from '../auth/auth-service.ts';
import { DEFAULT_RETRY_AFTER_SECONDS, NotFoundError, ServiceUnavailableError } from '../errors.ts';
import { clientErrorHandler, errorHandler, frameworkErrorHandler } from './error-mapper.ts';
import { registerAdminRoutes } from './routes/admin-routes.ts';
import { registerAgentRoutes } from './routes/agent-routes.ts';
import { registerChatRoutes } from './routes/chat-routes.ts';
import { registerRunRoutes } from './routes/run-routes.ts';
import { registerAiSdkRoutes } from './routes/ai-sdk-routes.ts';
import { registerStepRoutes } from './routes/step-routes.ts';
import { registerWebhookRoutes } from './routes/webhook-routes.ts';
import { registerOpenApiRoute, trackRoutes } from './openapi.ts';
import { registerRequestObserver } from './request-observer.ts';
import { registerWebApp } from './static.ts';
import { assertStorableText } from './text-guard.ts';

/** How long `/readyz` waits for the database before answering 503: a frozen database must not hang it. */
const READINESS_PROBE_TIMEOUT_MS = 800;

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller; set on every `/v1` route. */
    caller: Caller;
  }
}

/** The HTTP edge: Fastify with one route file per resource, API-key auth on `/v1`, and one error mapper. */
export function buildServer(context: OutrunContext): FastifyInstance {
  const app = Fastify({
    loggerInstance: context.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: context.config.bodyLimitBytes,
    // Requests that arrive while closing get the error shape from the `onRequest` hook below.
    return503OnClosing: false,
    forceCloseConnections: true,
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

  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((_request, reply) => {
    const error = new NotFoundError('route');
    void reply.status(404).send({ error: { code: error.code, message: 'No such route.' } });
  });

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.decorateRequest('caller', null as unknown as Caller);
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
    if (!request.url.startsWith('/v1/')) return;
    const header = request.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    request.caller = await context.auth.authenticate(match?.[1]);
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
    if (outcome === 'ready') return { status: 'ready' };
    return reply
      .status(503)
      .header('retry-after', String(DEFAULT_RETRY_AFTER_SECONDS))
      .send({
        error: {
          code: 'not_ready',
          message:
            outcome === 'timeout' ? 'The database did not answer in time.' : 'The database is not reachable.',
        },
      });
  });
  app.get('/metrics', async (_request, reply) => {
    await sampleQueueDepth(context);
    void reply.header('content-type', context.metrics.registry.contentType);
    return context.metrics.registry.metrics();
  });

  registerAdminRoutes(app, context);
  registerAgentRoutes(app, context);
  registerChatRoutes(app, context);
  registerRunRoutes(app, context);
  registerStepRoutes(app, context);
  registerAiSdkRoutes(app, context);
  registerWebhookRoutes(app, context);
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
