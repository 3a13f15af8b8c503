import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Metrics } from '../metrics.ts';
import { formatKeepAlive, formatSseEvent, SSE_DONE_FRAME } from '../protocol/sse.ts';
import type { LogEvent } from '../stream/event-log.ts';
import { LogTruncatedError, RunFollower, type FollowOptions } from '../stream/run-follower.ts';

/**
 * What `sendRunStream` takes: the follow, and how the answer is written. With `readFirst` (a first read that
 * checks the reader's access too), nothing is sent before that read answered; if it rejects, so does
 * `send`, with the response untouched (the route answers the error).
 */
export type RunStreamOptions = Omit<FollowOptions, 'signal'> & {
  metrics: Metrics;
  status?: number;
  headers?: Record<string, string>;
  /** Rewrites each event's chunk text on its way out (the useChat routes mark `data-run` transient). */
  mapData?: (data: string) => string;
  /** Ends the response (with `[DONE]`) after the first event this accepts, before the run's end. */
  endAfter?: (event: LogEvent) => boolean;
};

/**
 * Answers with a run's stream as Server-Sent Events (DESIGN §5): `id: <seq>` / `data: <chunk>` per event,
 * keep-alive comments carrying the last sequence number, and `data: [DONE]` after the terminal event.
 * Closing the connection only ends this reader; the run goes on.
 */
export function sendRunStream(
  request: FastifyRequest,
  reply: FastifyReply,
  options: RunStreamOptions,
): Promise<void> {
  return openRunStream(request, reply, options).send();
}

/** A run's stream that follows the run already and answers the request on `send()`. */
export interface OpenRunStream {
  /** Resolves once the stream hears every event published for the run; rejects if it could not subscribe. */
  subscribed: Promise<void>;
  /** Answers the request with the stream (as `sendRunStream`). Call at most once. */
  send(): Promise<void>;
  /** Ends the follow without answering: the route answers something else. */
  cancel(): void;
}

/**
 * Starts following a run now and answers later: a streaming start subscribes before its run begins (with
 * `fresh`), so the stream needs no read of the log. If the response closes before `send()` (the route
 * failed and answered an error), the follow ends by itself.
 */
export function openRunStream(
  request: FastifyRequest,
  reply: FastifyReply,
  options: RunStreamOptions,
): OpenRunStream {
  const response = reply.raw;
  const controller = new AbortController();
  const close = () => controller.abort();
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  const { mapData, endAfter } = options;
  /** The follower's first read, once made, when it checks access too (`readFirst`). */
  let firstRead: Promise<unknown> | undefined;
  let madeFirstRead!: () => void;
  const firstReadMade = new Promise<void>((resolve) => (madeFirstRead = resolve));
  const readFirst =
    options.readFirst &&
    ((page: { after: number; limit: number }) => {
      const read = options.readFirst!(page);
      firstRead = read;
      madeFirstRead();
      return read;
    });
  let ended = false;
  /** Uncorks the socket `send` corked for the headers, once (see there); unset while not corked. */
  let uncork: (() => void) | undefined;
  /** The last frames, written with the end of the response (one write instead of two). */
  let last = '';
  const follower = new RunFollower(
    { ...options, readFirst, ready: opened, signal: controller.signal },
    {
      events(events, end, live) {
        let frame = '';
        ended = end;
        if (!mapData && !endAfter) {
          // The common case. A live event's frame is built once and written by every reader of this instance.
          if (!live) frame = framesOf(events);
          else if (events.length === 1) frame = sharedFrameOf(events[0]!);
          else for (const event of events) frame += sharedFrameOf(event);
        } else {
          for (const event of events) {
            const data = mapData ? mapData(event.data) : event.data;
            // A chunk the mapping leaves as it is has the shared frame.
            if (data !== event.data) frame += formatSseEvent({ id: event.seq, data });
            else frame += live ? sharedFrameOf(event) : frameOf(event);
            if (endAfter?.(event)) {
              ended = true;
              break;
            }
          }
        }
        if (ended) {
          last = frame + SSE_DONE_FRAME;
          follower.close();
          return false;
        }
        const more = response.write(frame);
        // The headers and the first events leave now, in one write: the follower may go on to other work in
        // this turn (a read of the log again, once its subscription is confirmed).
        uncork?.();
        return more || controller.signal.aborted;
      },
      ping: (lastSeq) => response.write(formatKeepAlive(lastSeq)) || controller.signal.aborted,
    },
  );
  response.on('close', close);
  // Subscribes (and reads, unless fresh) now; delivers once the headers are out. `send` awaits its failure.
  const following = follower.run();
  following.catch(() => {});

  const cancel = () => {
    follower.close();
    open();
    response.off('close', close);
  };
  const send = async (): Promise<void> => {
    try {
      if (readFirst) {
        // The first read checks access: wait for it, or for the follow to end without it (it failed to
        // subscribe, or the response closed), in which case nothing was read.
        await Promise.race([firstReadMade, following.catch(() => {})]);
        if (firstRead) await firstRead;
        else if (!controller.signal.aborted) {
          await following;
          throw new Error('the run stream ended before its first read');
        }
      }
      // The backstop of a deferred key check, for an answer that bypasses the server's `onSend` hook.
      if (request.keyCheck && !request.keyCheck.settled) {
        request.log.error({ url: request.url }, 'a route answered before it checked its deferred key');
        await request.keyCheck.verify();
      }
    } catch (error) {
      cancel();
      await following.catch(() => {});
      throw error;
    }
    reply.hijack();
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
    // The headers go out with the first events when these come in this turn of the event loop (a streaming
    // start's, a resume's first page), in one write as these are written; on the next turn without them. The
    // socket is corked, not the response: on Node 24.21 a response corked by `response.cork()` lost the
    // frames `end` was given.
    const socket = response.socket;
    socket?.cork();
    const nextTurn = setImmediate(() => uncork?.());
    uncork = () => {
      uncork = undefined;
      clearImmediate(nextTurn);
      socket?.uncork();
    };
    response.flushHeaders();
    // A revoked key (or an expired scoped token) ends the stream on every instance.
    const { keyId, token } = request.caller ?? {};
    const forget = keyId
      ? request.server.openStreams?.register(keyId, { close, expiresAt: token?.expiresAt })
      : undefined;
    options.metrics.streamReaders.inc();
    open();
    const resume = () => follower.resume();
    response.on('drain', resume);
    try {
      await following;
      if (!ended && !controller.signal.aborted) last = SSE_DONE_FRAME;
    } catch (error) {
      // Headers are gone; the reader reconnects with Last-Event-ID and loses nothing (or, past a run's
      // retention, is told its events are gone).
      if (error instanceof LogTruncatedError) {
        request.log.info({ runId: options.runId }, "the run's events were deleted during its replay");
      } else request.log.error({ err: error, runId: options.runId }, 'run stream failed');
    } finally {
      response.off('drain', resume);
      forget?.();
      options.metrics.streamReaders.dec();
      response.off('close', close);
      // `end` uncorks whatever is corked: nothing must uncork again.
      uncork = undefined;
      clearImmediate(nextTurn);
      response.end(last);
    }
  };
  return { subscribed: follower.subscribed, send, cancel };
}

/** The SSE frame of a live event (`id: <seq>` / `data: <chunk>`), built once and shared by its readers. */
export function sharedFrameOf(event: LogEvent): string {
  return (event.frame ??= frameOf(event));
}

/** The SSE frame of one event of the run stream. */
export function frameOf(event: LogEvent): string {
  return formatSseEvent({ id: event.seq, data: event.data });
}

/** The frames of events read from the log, in one string (no other reader holds these objects). */
function framesOf(events: LogEvent[]): string {
  let frames = '';
  for (const event of events) frames += frameOf(event);
  return frames;
}
