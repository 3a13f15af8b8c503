import { createServer, type Server } from 'node:http';
import { streamText, type LanguageModel } from 'ai';
import { onChatRequest } from './chat-request.ts';
import { listenOnLoopback } from './environment.ts';

/**
 * The floor Outrun is measured against: `streamText` piped straight to the response as a UI message stream
 * over SSE (`pipeUIMessageStreamToResponse`), on bare `node:http`, with no auth, no database and no event log.
 * `POST /chat` with `{"text": "...", "model"?: "..."}` streams the answer.
 */
export async function startPlainPipeServer(options: {
  resolveModel: (modelId: string) => LanguageModel;
  defaultModel: string;
}): Promise<{ url: string; server: Server }> {
  const server = createServer((request, response) => {
    onChatRequest(request, response, (input) => {
      const result = streamText({
        model: options.resolveModel(input.model ?? options.defaultModel),
        messages: [{ role: 'user', content: input.text }],
      });
      result.pipeUIMessageStreamToResponse(response);
    });
  });
  const url = await listenOnLoopback(server);
  return { url, server };
}
