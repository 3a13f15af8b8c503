import { request as httpRequest } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Metrics } from '../metrics.ts';
import type { EventLog, LogEvent } from '../stream/event-log.ts';
import { sendRunStream, type RunStreamOptions } from './sse.ts';

/** A log with no events yet whose subscriptions the test can count. */
function emptyLog() {
  const handlers = new Set<(events: LogEvent[]) => void>();
  const log = {
    read: async () => [] as LogEvent[],
    listening: () => true,
    subscribe: async (_runId: string, handler: (events: LogEvent[]) => void) => {
      handlers.add(handler);
      return async () => void handlers.delete(handler);
    },
  };
  return { handlers, log: log as unknown as EventLog };
}

describe('sendRunStream', () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  /**
   * Serves a run's stream at /stream with `options`, recording how each call ended (a failure answers 404, as
   * a route that checks access would) and the socket it answered on.
   */
  async function serve(options: { log: EventLog } & Pick<RunStreamOptions, 'readFirst'>) {
    const served: string[] = [];
    const sockets: Socket[] = [];
    app = Fastify();
    const metrics = new Metrics();
    app.get('/stream', async (request, reply) => {
      sockets.push(reply.raw.socket as Socket);
      try {
        await sendRunStream(request, reply, {
          runId: 'run_1',
          isFinished: async () => false,
          metrics,
          ...options,
        });
        served.push('returned');
      } catch (error) {
        served.push(`threw ${String(error)}`);
        return reply.status(404).send({ error: 'not found' });
      }
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    return { served, sockets, metrics, port, url: `http://127.0.0.1:${port}/stream` };
  }

  it('ends the follow of a reader that disconnects while its access is checked, once the check answers', async () => {
    const { handlers, log } = emptyLog();
    let grant!: () => void;
    const granted = new Promise<void>((resolve) => (grant = resolve));
    const readFirst = async () => {
      await granted;
      return [];
    };
    const { served, metrics, url } = await serve({ log, readFirst });

    const client = httpRequest(url);
    client.on('error', () => {});
    client.end();
    // Subscribed while the access check (the first read) is still open.
    await vi.waitFor(() => expect(handlers.size).toBe(1));
    client.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));

    grant();
    await vi.waitFor(() => expect(served).toEqual(['returned']));
    expect(handlers.size).toBe(0);
    expect((await metrics.streamReaders.get()).values[0]?.value ?? 0).toBe(0);
  });

  it('answers nothing of the stream when a first read that checks access refuses: the route answers', async () => {
    const { log } = emptyLog();
    const { served, url } = await serve({ log, readFirst: () => Promise.reject(new Error('not yours')) });
    const response = await fetch(url);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({ error: 'not found' });
    expect(served).toEqual(['threw Error: not yours']);
  });

  it('returns for a reader that disconnects before the first read that checks access was made', async () => {
    const { handlers, log } = emptyLog();
    // A subscription that takes until the test says: the first read waits for it.
    let confirm!: () => void;
    const confirmed = new Promise<void>((resolve) => (confirm = resolve));
    const subscribe = log.subscribe.bind(log);
    log.subscribe = async (runId, handler) => {
      await confirmed;
      return subscribe(runId, handler);
    };
    const firstReads: number[] = [];
    const readFirst = async (page: { after: number }) => {
      firstReads.push(page.after);
      return [];
    };
    const { served, url } = await serve({ log, readFirst });
    const client = httpRequest(url);
    client.on('error', () => {});
    client.end();
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.destroy();
    await vi.waitFor(() => expect(served).toEqual(['returned']));
    confirm();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(firstReads).toEqual([]);
    expect(handlers.size).toBe(0);
  });

  it('sends the headers and the first events in one write, before the follower reads on', async () => {
    /** How corked the response's socket was at each read of the log. */
    const corkedAtRead: number[] = [];
    const first: LogEvent[] = [1, 2].map((seq) => ({ seq, data: `{"seq":${seq}}`, terminal: false }));
    // A log on a bus that must confirm subscriptions: the follower reads beside the subscription, then again.
    const log = {
      listening: () => false,
      subscribe: async () => async () => {},
      read: async ({ after }: { after: number }) => {
        corkedAtRead.push(sockets[0]?.writableCorked ?? 0);
        return after === 0 ? first : [];
      },
    } as unknown as EventLog;
    const { sockets, port } = await serve({ log });

    const client = connect(port, '127.0.0.1');
    client.on('error', () => {});
    const firstChunk = new Promise<string>((resolve) => client.once('data', (data) => resolve(String(data))));
    client.write('GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const chunk = await firstChunk;
    await vi.waitFor(() => expect(corkedAtRead).toHaveLength(2)).finally(() => client.destroy());
    expect(chunk).toMatch(/^HTTP\/1.1 200/);
    expect(chunk).toContain('id: 2\n');
    // The second read began in the turn of the first delivery: the write had left already.
    expect(corkedAtRead[1]).toBe(0);
  });
});
