import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local OpenAI-compatible chat completions server (what `compatible:<model>` talks to: Ollama, vLLM, …):
 * `POST …/chat/completions` with `stream: true` answers the words of `answer` as `chat.completion.chunk` SSE
 * events, then `data: [DONE]`. It reports token usage (a last chunk with `usage` and no choices) only when the
 * request asks for it with `stream_options.include_usage` and `reportsUsage` is on, as such servers do.
 * With `stallAfterWords`, it sends that many words and then nothing more, keeping the connection open (a
 * wedged provider), with an SSE comment every `keepAliveMs` if set (a gateway's keep-alive), until the client
 * closes it.
 */
export async function startOpenAICompatibleServer(options: {
  answer: string;
  reportsUsage: boolean;
  usage?: { promptTokens: number; completionTokens: number };
  stallAfterWords?: number;
  keepAliveMs?: number;
}): Promise<{
  /** The base URL to set as `OUTRUN_COMPATIBLE_BASE_URL`. */
  baseUrl: string;
  /** Every request body received, parsed. */
  requests: Record<string, unknown>[];
  /** Stalled answers whose connection the client closed. */
  stallsEnded: () => number;
  close: () => Promise<void>;
}> {
  const requests: Record<string, unknown>[] = [];
  let stallsEnded = 0;
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (request.method !== 'POST' || !request.url?.endsWith('/chat/completions')) {
        response.writeHead(404).end();
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      requests.push(body);
      response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const frame = (data: unknown) => response.write(`data: ${JSON.stringify(data)}\n\n`);
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        frame({
          id: 'chatcmpl-local',
          object: 'chat.completion.chunk',
          created: Math.floor(Date.now() / 1000),
          model: body.model,
          choices,
          ...extra,
        });
      const words = options.answer.split(/(?<= )/);
      if (options.stallAfterWords !== undefined) {
        words.length = options.stallAfterWords;
        const keepAlive = options.keepAliveMs
          ? setInterval(() => response.write(': keep-alive\n\n'), options.keepAliveMs)
          : undefined;
        response.on('close', () => {
          clearInterval(keepAlive);
          stallsEnded += 1;
        });
      }
      words.forEach((word, index) =>
        chunk([
          {
            index: 0,
            delta: index === 0 ? { role: 'assistant', content: word } : { content: word },
            finish_reason: null,
          },
        ]),
      );
      if (options.stallAfterWords !== undefined) return;
      chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]);
      const streamOptions = body.stream_options as { include_usage?: boolean } | undefined;
      if (options.reportsUsage && streamOptions?.include_usage) {
        const usage = options.usage ?? { promptTokens: 1, completionTokens: words.length };
        chunk([], {
          usage: {
            prompt_tokens: usage.promptTokens,
            completion_tokens: usage.completionTokens,
            total_tokens: usage.promptTokens + usage.completionTokens,
          },
        });
      }
      response.end('data: [DONE]\n\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    stallsEnded: () => stallsEnded,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
