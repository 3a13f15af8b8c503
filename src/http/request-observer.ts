import type { FastifyInstance } from 'fastify';
import { observeHttpRequest, type Metrics } from '../metrics.ts';

/** Query parameters whose values are credentials: never logged. */
const SECRET_QUERY_PARAMETERS = new Set(['access_token', 'token', 'key', 'api_key']);

/** The request URL for a log line: path and query, with credential values replaced by `***`. */
export function loggableUrl(url: string): string {
  const question = url.indexOf('?');
  if (question === -1) return url;
  const query = new URLSearchParams(url.slice(question + 1));
  for (const name of [...query.keys()]) {
    if (SECRET_QUERY_PARAMETERS.has(name.toLowerCase())) query.set(name, '***');
  }
  const text = query.toString().replaceAll('%2A%2A%2A', '***');
  return text ? `${url.slice(0, question)}?${text}` : url.slice(0, question);
}

/**
 * Times every answer: one `debug` log line per request (method, URL without credentials, status, ms) and
 * the HTTP latency histogram by route pattern. A hijacked reply (a run stream) is recorded when its
 * connection closes.
 */
export function registerRequestObserver(app: FastifyInstance, options: { metrics: Metrics }): void {
  const record = (
    request: { method: string; url: string; routeOptions: { url?: string }; log: FastifyInstance['log'] },
    status: number,
    ms: number,
  ) => {
    const route = request.routeOptions.url ?? 'unmatched';
    observeHttpRequest(options.metrics, { route, method: request.method, status, ms });
    request.log.debug(
      { method: request.method, url: loggableUrl(request.url), status, ms: Math.round(ms * 10) / 10 },
      'request',
    );
  };
  const recorded = new WeakSet<object>();
  app.addHook('onResponse', async (request, reply) => {
    recorded.add(request);
    record(request, reply.statusCode, reply.elapsedTime);
  });
  app.addHook('onRequest', async (request, reply) => {
    // A hijacked reply (a run stream) skips `onResponse`; it is recorded when its connection closes.
    reply.raw.once('close', () => {
      setImmediate(() => {
        if (!recorded.has(request)) record(request, reply.raw.statusCode, reply.elapsedTime);
      });
    });
  });
}
