import { createServer, type Server, type ServerResponse } from 'node:http';
import { wallNow } from './stats.ts';
import { listenOnLoopback } from './environment.ts';

/**
 * The fan-out floor: bare `node:http` broadcasting one paced producer's SSE frames to every connected reader,
 * with no auth, no database, no bus and no AI SDK. Each frame (`id: <seq>` / `data: <chunk>`, the run
 * stream's framing) is built once and written to every reader, so what a reader adds is the write itself.
 *
 * - `GET /fan-out/:name` opens a reader of stream `name`;
 * - `POST /fan-out/:name/start?tokens=N&delayMs=D` sends N text deltas, one every D ms (paced against
 *   absolute times), then `data: [DONE]` to every reader of `name`, and ends their responses.
 */
export async function startBareFanOutServer(): Promise<{ url: string; server: Server }> {
  const readers = new Map<string, Set<ServerResponse>>();
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const match = /^\/fan-out\/([\w-]+)(\/start)?$/.exec(url.pathname);
    if (!match) {
      response.writeHead(404).end();
      return;
    }
    const name = match[1]!;
    let group = readers.get(name);
    if (!group) readers.set(name, (group = new Set()));
    if (request.method === 'GET' && !match[2]) {
      response.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store, no-transform',
        connection: 'keep-alive',
      });
      response.flushHeaders();
      const readersOfName = group;
      readersOfName.add(response);
      response.on('close', () => readersOfName.delete(response));
      // One event so that the client knows it is connected and caught up.
      response.write(`id: 0\ndata: {"type":"start"}\n\n`);
      return;
    }
    if (request.method === 'POST' && match[2]) {
      const tokens = Number(url.searchParams.get('tokens') ?? 100);
      const delayMs = Number(url.searchParams.get('delayMs') ?? 10);
      response.writeHead(202).end();
      void broadcast(group, tokens, delayMs).then(() => readers.delete(name));
      return;
    }
    response.writeHead(405).end();
  });
  const url = await listenOnLoopback(server);
  return { url, server };
}

async function broadcast(readers: Set<ServerResponse>, tokens: number, delayMs: number): Promise<void> {
  const base = wallNow();
  for (let index = 0; index < tokens; index++) {
    const due = base + index * delayMs;
    const wait = due - wallNow();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    // A chunk of the size Outrun's clock deltas have.
    const data = JSON.stringify({
      type: 'text-delta',
      id: 'text-00000000-0000-0000-0000-000000000000',
      delta: `@${wallNow().toFixed(3)}~${due.toFixed(3)} `,
    });
    const frame = `id: ${index + 1}\ndata: ${data}\n\n`;
    for (const response of readers) response.write(frame);
  }
  for (const response of readers) response.end('data: [DONE]\n\n');
}
