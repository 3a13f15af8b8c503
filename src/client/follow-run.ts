import { isAbortError, OutrunApiError } from './errors.ts';
import { SseParser, SSE_DONE_DATA, type RunChunk, type RunStreamEvent } from '../protocol/index.ts';

/** The state of a `followRun` connection, reported through `onConnectionChange`. */
export type ConnectionState =
  | { status: 'connecting'; attempt: number }
  | { status: 'open'; attempt: number }
  /** The connection dropped, failed or went silent; the next attempt starts after `delayMs`. */
  | { status: 'reconnecting'; attempt: number; delayMs: number; error: unknown }
  | { status: 'closed' };

export interface FollowRunOptions {
  /** Yield events with a sequence number greater than this (a message's `streamSeq`, say). @default 0 */
  after?: number;
  /** Ends the iteration (quietly) and closes the connection. */
  signal?: AbortSignal;
  /**
   * Reconnect when nothing at all, not even a keep-alive comment, arrives for this long. The server sends
   * a keep-alive at least every `keepAliveMs` (15 s by default), so the default is a little over twice that.
   * @default 35000
   */
  idleTimeoutMs?: number;
  /** The delay before the first reconnect; it doubles with each failed attempt, with full jitter. @default 500 */
  minRetryDelayMs?: number;
  /** The longest delay between reconnects. @default 10000 */
  maxRetryDelayMs?: number;
  /** Give up (throw the last error) after this many consecutive failed attempts. @default Infinity */
  maxRetries?: number;
  /** Called whenever the connection state changes; use it to show "reconnecting…". */
  onConnectionChange?: (state: ConnectionState) => void;
}

/** What `followRun` needs from its client. */
export interface StreamTransport {
  url: (path: string) => string;
  headers: () => Promise<Record<string, string>>;
  fetch: typeof fetch;
}

class IdleTimeoutError extends Error {
  constructor(ms: number) {
    super(`No data from the stream for ${ms} ms.`);
    this.name = 'IdleTimeoutError';
  }
}

class StreamInterruptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StreamInterruptedError';
  }
}

/**
 * Follows a run's event stream (`GET /v1/runs/:runId/stream`), yielding each event exactly once and in
 * order, until the run's last event (`data: [DONE]`). A dropped connection, a silent one, a network error,
 * a 429 or a 5xx reconnects with `Last-Event-ID` after an exponential backoff with jitter; any other error
 * answer (401, 404, …) is thrown as an `OutrunApiError`.
 */
export async function* followRunStream(
  transport: StreamTransport,
  runId: string,
  options: FollowRunOptions = {},
): AsyncGenerator<RunStreamEvent, void, undefined> {
  const idleTimeoutMs = options.idleTimeoutMs ?? 35_000;
  const minDelay = options.minRetryDelayMs ?? 500;
  const maxDelay = options.maxRetryDelayMs ?? 10_000;
  const maxRetries = options.maxRetries ?? Number.POSITIVE_INFINITY;
  const outer = options.signal;
  const notify = (state: ConnectionState) => options.onConnectionChange?.(state);
  let lastSeq = options.after ?? 0;
  let failures = 0;

  try {
    while (!outer?.aborted) {
      const controller = new AbortController();
      const abortFromOuter = () => controller.abort(outer?.reason);
      outer?.addEventListener('abort', abortFromOuter, { once: true });
      let idleTimer: ReturnType<typeof setTimeout> | undefined;
      const armIdleTimer = () => {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => controller.abort(new IdleTimeoutError(idleTimeoutMs)), idleTimeoutMs);
      };
      let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
      let retryAfterMs: number | undefined;
      try {
        notify({ status: 'connecting', attempt: failures });
        armIdleTimer();
        const headers: Record<string, string> = {
          ...(await transport.headers()),
          accept: 'text/event-stream',
        };
        if (lastSeq > 0) headers['last-event-id'] = String(lastSeq);
        let response: Response;
        try {
          response = await transport.fetch(transport.url(`/v1/runs/${encodeURIComponent(runId)}/stream`), {
            headers,
            signal: controller.signal,
            cache: 'no-store',
          });
        } catch (error) {
          throw controller.signal.aborted ? error : OutrunApiError.network(error);
        }
        if (!response.ok) {
          retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
          throw await OutrunApiError.fromResponse(response);
        }
        if (!response.body) throw new StreamInterruptedError('The stream response has no body.');
        notify({ status: 'open', attempt: failures });

        reader = response.body.getReader();
        const decoder = new TextDecoder();
        const parser = new SseParser();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new StreamInterruptedError('The stream ended before [DONE].');
          armIdleTimer();
          for (const message of parser.push(decoder.decode(value, { stream: true }))) {
            // Anything from the server, a keep-alive included, shows the connection is healthy.
            failures = 0;
            if (message.type !== 'event') continue;
            if (message.data === SSE_DONE_DATA) return;
            if (message.id === undefined) continue;
            const seq = Number(message.id);
            if (!Number.isSafeInteger(seq) || seq <= lastSeq) continue;
            if (seq !== lastSeq + 1) {
              throw new StreamInterruptedError(`Expected event ${lastSeq + 1} but got ${seq}.`);
            }
            const chunk = JSON.parse(message.data) as RunChunk;
            lastSeq = seq;
            yield { seq, chunk };
            if (outer?.aborted) return;
          }
        }
      } catch (error) {
        if (outer?.aborted) return;
        const reason =
          controller.signal.reason instanceof IdleTimeoutError ? controller.signal.reason : error;
        if (reason instanceof OutrunApiError && !reason.retryable) throw reason;
        if (!(
          reason instanceof OutrunApiError ||
          reason instanceof IdleTimeoutError ||
          reason instanceof StreamInterruptedError ||
          isNetworkFailure(reason)
        )) {
          throw reason;
        }
        failures++;
        if (failures > maxRetries) throw reason;
        const backoff = Math.min(maxDelay, minDelay * 2 ** (failures - 1));
        const delayMs = Math.max(retryAfterMs ?? 0, Math.round(Math.random() * backoff));
        notify({ status: 'reconnecting', attempt: failures, delayMs, error: reason });
        await sleep(delayMs, outer);
      } finally {
        clearTimeout(idleTimer);
        outer?.removeEventListener('abort', abortFromOuter);
        controller.abort();
        reader?.cancel().catch(() => {});
      }
    }
  } finally {
    notify({ status: 'closed' });
  }
}

/** A failure of the connection itself (reset, refused, aborted read) rather than of our own code. */
function isNetworkFailure(error: unknown): boolean {
  return isAbortError(error) || error instanceof TypeError;
}

function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, 60_000) : undefined;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
