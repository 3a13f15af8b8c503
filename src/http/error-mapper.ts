import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import { BusUnavailableError } from '../bus/bus.ts';
import { OutrunError, QuotaExceededError, RateLimitedError, ServiceUnavailableError } from '../errors.ts';
import type { ErrorBody } from '../protocol/wire.ts';
import { isDatabaseUnavailableError, isPoolWaitTimeout } from '../store/transient.ts';

export type { ErrorBody };

/** Fastify's own errors, mapped to stable codes. */
const FASTIFY_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    code: 'body_too_large',
    message: 'The request body is too large.',
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'unsupported_media_type',
    message: 'Send JSON with `Content-Type: application/json`.',
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    status: 400,
    code: 'invalid_request',
    message: 'The Content-Length does not match the body.',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'invalid_json', message: 'The JSON body is empty.' },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    status: 400,
    code: 'invalid_json',
    message: 'The body is not valid JSON.',
  },
  FST_ERR_BAD_URL: { status: 400, code: 'invalid_request', message: 'The URL is malformed.' },
  FST_ERR_MAX_PARAM_LENGTH: { status: 414, code: 'uri_too_long', message: 'A path segment is too long.' },
};

/** `Retry-After` for the errors that tell the caller when to come back (503, 429). */
function retryAfterHeaders(error: OutrunError): Record<string, string> | undefined {
  if (
    error instanceof ServiceUnavailableError ||
    error instanceof RateLimitedError ||
    error instanceof QuotaExceededError
  ) {
    return { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterSeconds))) };
  }
  return undefined;
}

/** Maps any error to a status and an error body. The one place errors become HTTP; never leaks a stack. */
export function toErrorResponse(error: unknown): {
  status: number;
  body: ErrorBody;
  headers?: Record<string, string>;
} {
  if (!(error instanceof OutrunError) && isDatabaseUnavailableError(error)) {
    const message = isPoolWaitTimeout(error)
      ? 'No database connection came free in time: the database is slow or this server is busy; retry shortly.'
      : undefined;
    return toErrorResponse(new ServiceUnavailableError(message, { cause: error }));
  }
  if (error instanceof BusUnavailableError) {
    const message = 'The event bus is not available right now; retry shortly.';
    return toErrorResponse(new ServiceUnavailableError(message, { cause: error }));
  }
  if (error instanceof OutrunError) {
    return {
      status: error.status,
      body: { error: { ...error.details, code: error.code, message: error.message } },
      headers: retryAfterHeaders(error),
    };
  }
  if (error instanceof ZodError) {
    return {
      status: 400,
      body: {
        error: {
          code: 'invalid_request',
          message: error.issues
            .map((issue) =>
              issue.path.length
                ? `${issue.path.map(shortSegment).join('.')}: ${issue.message}`
                : issue.message,
            )
            .join('; '),
          issues: error.issues.map((issue) => ({
            path: issue.path.map(shortSegment),
            message: issue.message,
          })),
        },
      },
    };
  }
  const fastifyError = error as Partial<FastifyError>;
  const known = fastifyError.code ? FASTIFY_ERRORS[fastifyError.code] : undefined;
  if (known) return { status: known.status, body: { error: { code: known.code, message: known.message } } };
  if (error instanceof SyntaxError && fastifyError.statusCode === 400) {
    return { status: 400, body: { error: { code: 'invalid_json', message: 'The body is not valid JSON.' } } };
  }
  if (
    typeof fastifyError.statusCode === 'number' &&
    fastifyError.statusCode >= 400 &&
    fastifyError.statusCode < 500
  ) {
    return {
      status: fastifyError.statusCode,
      body: { error: { code: 'invalid_request', message: fastifyError.message ?? 'Bad request.' } },
    };
  }
  return {
    status: 500,
    body: { error: { code: 'internal_error', message: 'Something went wrong on our side.' } },
  };
}

/** The longest path segment an error repeats back: a key of a free-form object can be as long as the body. */
const MAX_PATH_SEGMENT = 80;

/** A path segment of a validation issue, cut to `MAX_PATH_SEGMENT` characters. */
function shortSegment(segment: PropertyKey): PropertyKey {
  return typeof segment === 'string' && segment.length > MAX_PATH_SEGMENT
    ? `${segment.slice(0, MAX_PATH_SEGMENT)}…`
    : segment;
}

/** How many times the route's body limit a too-large body is read and discarded before its 413 is sent. */
const BODY_DRAIN_FACTOR = 4;

/** Fastify's error handler: every error a route, hook or parser throws is answered here. */
export function errorHandler(
  error: unknown,
  request: FastifyRequest,
  reply: FastifyReply,
  /** Answered instead of `error` (a deferred key check that failed); a too-large body is still drained. */
  instead?: unknown,
): void {
  const { status, body, headers } = toErrorResponse(instead ?? error);
  if (status >= 500 && status !== 503) request.log.error({ err: error, url: request.url }, 'request failed');
  if (status === 503) request.log.warn({ err: error, url: request.url }, 'service unavailable');
  if (headers) void reply.headers(headers);
  if ((error as Partial<FastifyError>).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    drainThenSend(request, reply, () => void reply.status(status).send(body));
    return;
  }
  void reply.status(status).send(body);
}

/**
 * Reads and discards the rest of a too-large body before answering, so the client, still sending, can read
 * the 413 (Node's fetch and `http` fail with EPIPE on a connection closed under them). Past
 * `BODY_DRAIN_FACTOR` times the route's limit the answer goes out at once and the connection is closed.
 */
function drainThenSend(request: FastifyRequest, reply: FastifyReply, send: () => void): void {
  const raw = request.raw;
  const cap = (request.routeOptions.bodyLimit ?? 1024 * 1024) * BODY_DRAIN_FACTOR;
  const declared = Number(request.headers['content-length']);
  if (raw.readableEnded || raw.destroyed) return send();
  if (declared > cap) {
    void reply.header('connection', 'close');
    return send();
  }
  let received = 0;
  const finish = (keepAlive: boolean) => {
    raw.removeListener('data', onData);
    raw.removeListener('end', onEnd);
    raw.removeListener('error', onError);
    if (keepAlive) reply.removeHeader('connection');
    else void reply.header('connection', 'close');
    send();
  };
  const onData = (chunk: Buffer) => {
    received += chunk.length;
    if (received > cap) {
      raw.pause();
      finish(false);
    }
  };
  const onEnd = () => finish(true);
  const onError = () => finish(false);
  raw.on('data', onData);
  raw.on('end', onEnd);
  raw.on('error', onError);
  raw.resume();
}

/** Fastify's `frameworkErrors`: a malformed URL or an over-long path segment, answered in the error shape. */
export function frameworkErrorHandler(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  errorHandler(error, request, reply);
}

/** What a request Node's HTTP parser rejects is answered with, by its parser error code. */
const CLIENT_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  HPE_HEADER_OVERFLOW: {
    status: 431,
    code: 'headers_too_large',
    message: 'The request line or headers are too large.',
  },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: {
    status: 413,
    code: 'body_too_large',
    message: 'The chunk extensions are too large.',
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    code: 'request_timeout',
    message: 'The request was not received in time.',
  },
  HPE_INVALID_CONTENT_LENGTH: {
    status: 400,
    code: 'invalid_request',
    message: 'The Content-Length header is invalid.',
  },
};

/**
 * Fastify's `clientErrorHandler`: a request Node's HTTP parser rejects (headers too large, a malformed
 * request line or header) never reaches Fastify, so its answer is written to the socket here, in the
 * error shape, and the connection is closed.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const known = error.code ? CLIENT_ERRORS[error.code] : undefined;
  const { status, code, message } = known ?? {
    status: 400,
    code: 'invalid_request',
    message: 'The HTTP request is malformed.',
  };
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
        'Content-Type: application/json; charset=utf-8\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n\r\n' +
        body,
    );
  }
  socket.destroy(error);
}
