import { onChatRequest } from './chat-request.ts';
import { randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { streamText, type LanguageModel } from 'ai';
import { Redis } from 'ioredis';
import { listenOnLoopback } from './environment.ts';

/** The module `resumable-stream` is imported from: its ioredis entry point, since ioredis is installed. */
const RESUMABLE_STREAM_MODULE = 'resumable-stream/ioredis';

/** The part of `resumable-stream`'s context the benchmark uses (its documented API, package version 2.x). */
interface ResumableStreamContext {
  createNewResumableStream(
    streamId: string,
    makeStream: () => ReadableStream<string>,
  ): Promise<ReadableStream<string> | null>;
  resumeExistingStream(
    streamId: string,
    skipCharacters?: number,
  ): Promise<ReadableStream<string> | null | undefined>;
}

interface ResumableStreamModule {
  createResumableStreamContext(options: {
    keyPrefix?: string;
    waitUntil: ((promise: Promise<unknown>) => void) | null;
    publisher?: Redis;
    subscriber?: Redis;
  }): ResumableStreamContext;
}

/** Thrown when the `resumable-stream` package is not installed; the benchmark skips target B. */
export class ResumableStreamMissingError extends Error {
  readonly code = 'resumable_stream_missing';
  constructor(cause: unknown) {
    super(
      `target B needs the npm package resumable-stream (npm install -D resumable-stream); ` +
        `importing ${RESUMABLE_STREAM_MODULE} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    );
  }
}

/** Imports `resumable-stream` (its ioredis entry), or throws `ResumableStreamMissingError`. */
export async function importResumableStream(): Promise<ResumableStreamModule> {
  // A variable specifier: the package is optional, so the type checker must not resolve it.
  const specifier: string = RESUMABLE_STREAM_MODULE;
  try {
    return (await import(specifier)) as ResumableStreamModule;
  } catch (error) {
    throw new ResumableStreamMissingError(error);
  }
}

/**
 * Target B: the plain pipe (`streamText` → `pipeUIMessageStreamToResponse`) plus `resumable-stream` on Redis,
 * wired as the AI SDK documents for resumable chat streams: the SSE response goes to the client, and a tee'd
 * copy is handed to `createNewResumableStream` through `consumeSseStream`, which keeps it reachable over Redis
 * pub/sub for readers that reconnect.
 *
 * - `POST /chat` with `{"text": "...", "model"?: "..."}` streams the answer; the response header
 *   `x-stream-id` names the stream.
 * - `GET /chat/<streamId>/stream?skip=<characters>` follows a stream in progress (`resumeExistingStream`);
 *   204 when it is finished or unknown.
 */
export async function startResumablePipeServer(options: {
  resolveModel: (modelId: string) => LanguageModel;
  defaultModel: string;
  redisUrl: string;
  /** Prefix of the keys and channels `resumable-stream` uses. */
  keyPrefix: string;
}): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const resumable = await importResumableStream();
  const publisher = new Redis(options.redisUrl);
  const subscriber = new Redis(options.redisUrl);
  // A long-running server needs no waitUntil (the library's documented value for servers is null).
  const context = resumable.createResumableStreamContext({
    keyPrefix: options.keyPrefix,
    waitUntil: null,
    publisher,
    subscriber,
  });

  const server = createServer((request, response) => {
    const resume = /^\/chat\/([\w-]+)\/stream(?:\?skip=(\d+))?$/.exec(request.url ?? '');
    if (request.method === 'GET' && resume) {
      void context.resumeExistingStream(resume[1]!, resume[2] ? Number(resume[2]) : undefined).then(
        (stream) => {
          if (!stream) return void response.writeHead(204).end();
          response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
          void pump(stream, response);
        },
        () => void response.writeHead(500).end(),
      );
      return;
    }
    onChatRequest(request, response, (input) => {
      const streamId = randomUUID();
      const result = streamText({
        model: options.resolveModel(input.model ?? options.defaultModel),
        messages: [{ role: 'user', content: input.text }],
      });
      result.pipeUIMessageStreamToResponse(response, {
        headers: { 'x-stream-id': streamId },
        async consumeSseStream({ stream }) {
          await context.createNewResumableStream(streamId, () => stream);
        },
      });
    });
  });
  const url = await listenOnLoopback(server);
  return {
    url,
    server,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      publisher.disconnect();
      subscriber.disconnect();
    },
  };
}

async function pump(stream: ReadableStream<string>, response: ServerResponse) {
  const reader = stream.getReader();
  response.on('close', () => void reader.cancel().catch(() => {}));
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      response.write(value);
    }
  } finally {
    response.end();
  }
}
