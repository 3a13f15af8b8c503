import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Metrics } from '../metrics.ts';
import { formatKeepAlive, formatSseEvent, SSE_DONE_FRAME } from '../protocol/sse.ts';
import type { LogEvent } from '../stream/event-log.ts';
import { followRun, type FollowOptions } from '../stream/run-follower.ts';

/**
 * Answers with a run's stream as Server-Sent Events (DESIGN §5): `id: <seq>` / `data: <chunk>` per event,
 * keep-alive comments carrying the last sequence number, and `data: [DONE]` after the terminal event.
 * Closing the connection only ends this reader; the run goes on.
 */
export async function sendRunStream(
  request: FastifyRequest,
  reply: FastifyReply,
  options: Omit<FollowOptions, 'signal'> & {
    metrics: Metrics;
    status?: number;
    headers?: Record<string, string>;
    /** Rewrites each event's chunk text on its way out (the useChat routes mark `data-run` transient). */
    mapData?: (data: string) => string;
    /** Ends the response (with `[DONE]`) after the first event this accepts, before the run's end. */
    endAfter?: (event: LogEvent) => boolean;
  },
): Promise<void> {
  reply.hijack();
  const response = reply.raw;
  response.writeHead(options.status ?? 200, {
    // Headers hooks set before the hijack (CORS, security headers) still apply.
    ...(reply.getHeaders() as Record<string, string>),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    // Tells AI SDK clients this is a UI message stream.
    'x-vercel-ai-ui-message-stream': 'v1',
    ...options.headers,
  });
  response.flushHeaders();

  const controller = new AbortController();
  const close = () => controller.abort();
  response.on('close', close);
  // A revoked key (or an expired scoped token) ends the stream on every instance.
  const { keyId, token } = request.caller ?? {};
  const forget = keyId
    ? request.server.openStreams?.register(keyId, { close, expiresAt: token?.expiresAt })
    : undefined;
  options.metrics.streamReaders.inc();
  try {
    let ended = false;
    for await (const item of followRun({ ...options, signal: controller.signal })) {
      let frame: string;
      if (item.kind === 'ping') frame = formatKeepAlive(item.lastSeq);
      else {
        frame = '';
        const map = options.mapData;
        ended = item.end;
        for (const event of item.events) {
          frame += formatSseEvent({ id: event.seq, data: map ? map(event.data) : event.data });
          if (options.endAfter?.(event)) {
            ended = true;
            break;
          }
        }
        if (ended) frame += SSE_DONE_FRAME;
      }
      if (!response.write(frame) && !controller.signal.aborted) {
        await new Promise<void>((resolve) => {
          const done = () => {
            response.off('drain', done);
            controller.signal.removeEventListener('abort', done);
            resolve();
          };
          response.on('drain', done);
          controller.signal.addEventListener('abort', done);
        });
      }
      if (ended || controller.signal.aborted) break;
    }
    if (!ended && !controller.signal.aborted) response.write(SSE_DONE_FRAME);
  } catch (error) {
    // Headers are gone; the reader reconnects with Last-Event-ID and loses nothing.
    request.log.error({ err: error, runId: options.runId }, 'run stream failed');
  } finally {
    forget?.();
    options.metrics.streamReaders.dec();
    response.off('close', close);
    response.end();
  }
}
