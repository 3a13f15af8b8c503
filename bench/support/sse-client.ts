import { request as httpRequest, type Agent, type IncomingHttpHeaders } from 'node:http';
import { wallNow } from './stats.ts';

export interface SseStreamOptions {
  /** Full URL of the stream (`http://127.0.0.1:port/v1/runs/…/stream`). */
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /**
   * The connection: `false` (the default) opens a fresh TCP connection, as a reconnecting client does;
   * an `Agent` reuses its connections.
   */
  agent?: Agent | false;
  /** Called once the response headers are in (the stream is open). */
  onOpen?(headers: IncomingHttpHeaders): void;
  /** Called for each event with its id, its data and when the bytes carrying it arrived (`wallNow()`). */
  onEvent?(id: number, data: string, receivedAt: number): void;
  /** Gives up (and rejects) after this long. @default 120000 */
  timeoutMs?: number;
  /**
   * Closes the connection when aborted: the stream then ends with `done: false` (or rejects when the response
   * had not started).
   */
  signal?: AbortSignal;
}

export interface SseStreamResult {
  status: number;
  headers: IncomingHttpHeaders;
  events: number;
  lastId: number;
  /** Whether `data: [DONE]` arrived. */
  done: boolean;
  /** `wallNow()` when the request was sent, when the first event arrived, and when the stream ended. */
  sentAt: number;
  firstEventAt: number | null;
  endedAt: number;
}

/**
 * Reads a Server-Sent Events stream over `node:http` until `data: [DONE]` or the end of the response,
 * parsing frames as they arrive (the same framing as test/support/sse.ts, without building objects per frame).
 */
export function streamSse(options: SseStreamOptions): Promise<SseStreamResult> {
  return new Promise((resolve, reject) => {
    const sentAt = wallNow();
    const request = httpRequest(options.url, {
      method: options.method ?? 'GET',
      headers: { accept: 'text/event-stream', ...options.headers },
      agent: options.agent ?? false,
    });
    const timer = setTimeout(() => {
      request.destroy(new Error(`SSE stream ${options.url} timed out`));
    }, options.timeoutMs ?? 120_000);
    const onAbort = () => request.destroy(new Error(`SSE stream ${options.url} aborted`));
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
    request.on('close', () => options.signal?.removeEventListener('abort', onAbort));
    request.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.on('response', (response) => {
      const result: SseStreamResult = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        events: 0,
        lastId: 0,
        done: false,
        sentAt,
        firstEventAt: null,
        endedAt: 0,
      };
      const finish = () => {
        clearTimeout(timer);
        result.endedAt = wallNow();
        resolve(result);
      };
      if (result.status !== 200 && result.status !== 201) {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => {
          clearTimeout(timer);
          reject(new Error(`SSE stream ${options.url} answered ${result.status}: ${text}`));
        });
        return;
      }
      options.onOpen?.(response.headers);
      response.setEncoding('utf8');
      let buffer = '';
      response.on('data', (chunk: string) => {
        const receivedAt = wallNow();
        buffer += chunk;
        let start = 0;
        let end: number;
        while ((end = buffer.indexOf('\n\n', start)) !== -1) {
          const block = buffer.slice(start, end);
          start = end + 2;
          if (block.startsWith(':')) continue;
          let id = -1;
          let data: string | null = null;
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) id = Number(line.slice(4));
            else if (line.startsWith('data: ')) data = line.slice(6);
          }
          if (data === '[DONE]') {
            result.done = true;
            continue;
          }
          if (data === null) continue;
          result.events += 1;
          if (id !== -1) result.lastId = id;
          result.firstEventAt ??= receivedAt;
          options.onEvent?.(id, data, receivedAt);
        }
        buffer = start === 0 ? buffer : buffer.slice(start);
        if (result.done) {
          response.destroy();
          finish();
        }
      });
      response.on('end', () => {
        if (!result.done) finish();
      });
      response.on('close', () => {
        if (!result.done) finish();
      });
      // A connection cut mid-stream (an abort) ends the stream with `done: false` on 'close'.
      response.on('error', () => {});
    });
    request.end(options.body);
  });
}

/**
 * Waits for `readers` readers to have each received a first event: call `reader()` once per reader and call
 * what it returns on every event of that reader (only its first call counts); `ready` resolves when all have.
 */
export function firstEventLatch(readers: number): { ready: Promise<void>; reader(): () => void } {
  let caughtUp = 0;
  let allCaughtUp!: () => void;
  const ready = new Promise<void>((resolve) => (allCaughtUp = resolve));
  if (readers === 0) allCaughtUp();
  return {
    ready,
    reader() {
      let first = true;
      return () => {
        if (!first) return;
        first = false;
        if (++caughtUp === readers) allCaughtUp();
      };
    },
  };
}
