import { randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { onChatRequest } from './chat-request.ts';
import { clockDelta, sleepUntil, type ClockScript } from './clock-model.ts';
import { wallNow } from './stats.ts';
import { listenOnLoopback } from './environment.ts';

/**
 * The floor under the floor: SSE frames written on a timer by bare `node:http`, with no AI SDK, no auth and no
 * database. `POST /chat` with `{"text": "{\"clock\": {...}}"}` (the clock model's script) answers with the same
 * frames a UI message stream carries (`start`, `text-start`, one `text-delta` per token paced like the clock
 * model, `text-end`, `finish`, `data: [DONE]`), each delta `@<emit>~<due> `, so the reader measures it the
 * same way.
 */
export async function startBareSseServer(): Promise<{ url: string; server: Server }> {
  const server = createServer((request, response) => {
    onChatRequest(request, response, (input) => {
      const { clock } = JSON.parse(input.text) as { clock: ClockScript };
      void stream(clock, response);
    });
  });
  const url = await listenOnLoopback(server);
  return { url, server };
}

async function stream(script: ClockScript, response: ServerResponse): Promise<void> {
  let closed = false;
  response.on('close', () => (closed = true));
  response.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  const frame = (chunk: object) => response.write(`data: ${JSON.stringify(chunk)}\n\n`);
  const id = `text-${randomUUID()}`;
  frame({ type: 'start' });
  frame({ type: 'text-start', id });
  const base = wallNow() + (script.phaseMs ?? 0);
  for (let index = 0; index < script.tokens && !closed; index++) {
    const due = base + index * script.delayMs;
    await sleepUntil(due);
    frame({ type: 'text-delta', id, delta: clockDelta(due) });
  }
  if (closed) return;
  frame({ type: 'text-end', id });
  frame({ type: 'finish' });
  response.end('data: [DONE]\n\n');
}
