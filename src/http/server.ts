import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { OutrunContext } from '../app.ts';
import type { Caller } from '../auth/auth-service.ts';
import { NotFoundError } from '../errors.ts';
import { errorHandler } from './error-mapper.ts';
import { registerAdminRoutes } from './routes/admin-routes.ts';
import { registerAgentRoutes } from './routes/agent-routes.ts';
import { registerChatRoutes } from './routes/chat-routes.ts';
import { registerRunRoutes } from './routes/run-routes.ts';
import { registerAiSdkRoutes } from './routes/ai-sdk-routes.ts';
import { registerStepRoutes } from './routes/step-routes.ts';
import { registerWebApp } from './static.ts';

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
    return503OnClosing: true,
    forceCloseConnections: true,
  });

  // An empty JSON body (a POST with `Content-Type: application/json` and nothing else) means "no fields".
  // JSON only: any other body is a 415 rather than a string that fails validation.
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(
        Object.assign(new SyntaxError('invalid JSON'), {
          statusCode: 400,
          code: 'FST_ERR_CTP_INVALID_JSON_BODY',
        }),
      );
    }
  });

  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((_request, reply) => {
    const error = new NotFoundError('route');
    void reply.status(404).send({ error: { code: error.code, message: 'No such route.' } });
  });

  app.decorateRequest('caller', null as unknown as Caller);
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1/')) return;
    const header = request.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    request.caller = await context.auth.authenticate(match?.[1]);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    try {
      await sql`select 1`.execute(context.db);
      return { status: 'ready' };
    } catch {
      return reply
        .status(503)
        .send({ error: { code: 'not_ready', message: 'The database is not reachable.' } });
    }
  });
  app.get('/metrics', async (_request, reply) => {
    void reply.header('content-type', context.metrics.registry.contentType);
    return context.metrics.registry.metrics();
  });

  registerAdminRoutes(app, context);
  registerAgentRoutes(app, context);
  registerChatRoutes(app, context);
  registerRunRoutes(app, context);
  registerStepRoutes(app, context);
  registerAiSdkRoutes(app, context);
  registerWebApp(app);
  return app;
}
