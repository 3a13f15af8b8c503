import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Metrics } from '../metrics.ts';
import type { EventLog, LogEvent } from '../stream/event-log.ts';
import { sendRunStream } from './sse.ts';

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

  it('ends the follow of a reader that disconnects while its access is checked, once the check answers', async () => {
    const { handlers, log } = emptyLog();
    const metrics = new Metrics();
    let grant!: () => void;
    const access = new Promise<void>((resolve) => (grant = resolve));
    const served: string[] = [];
    app = Fastify();
    app.get('/stream', async (request, reply) => {
      try {
        await sendRunStream(request, reply, {
          log,
          runId: 'run_gone',
          isFinished: async () => false,
          metrics,
          access,
        });
        served.push('returned');
      } catch (error) {
        served.push(`threw ${String(error)}`);
      }
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;

    const client = httpRequest({ host: '127.0.0.1', port, path: '/stream' });
    client.on('error', () => {});
    client.end();
    // Subscribed while the access check is still open.
    await vi.waitFor(() => expect(handlers.size).toBe(1));
    client.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));

    grant();
    await vi.waitFor(() => expect(served).toEqual(['returned']));
    expect(handlers.size).toBe(0);
    expect((await metrics.streamReaders.get()).values[0]?.value ?? 0).toBe(0);
  });
});
