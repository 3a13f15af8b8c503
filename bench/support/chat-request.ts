import type { IncomingMessage, ServerResponse } from 'node:http';

/** What the baseline servers' `POST /chat` takes: the prompt (a model script) and, optionally, the model. */
export interface ChatInput {
  text: string;
  model?: string;
}

/**
 * Handles the baselines' one route: `POST /chat` with a JSON `ChatInput` body calls `answer` once the body is
 * in; anything else is a 404. Returns false when the request was not `POST /chat` (already answered).
 */
export function onChatRequest(
  request: IncomingMessage,
  response: ServerResponse,
  answer: (input: ChatInput) => void,
): boolean {
  if (request.method !== 'POST' || request.url !== '/chat') {
    response.writeHead(404).end();
    return false;
  }
  let body = '';
  request.setEncoding('utf8');
  request.on('data', (chunk: string) => (body += chunk));
  request.on('end', () => answer(JSON.parse(body) as ChatInput));
  return true;
}
