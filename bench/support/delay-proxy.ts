import { createConnection, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/** A TCP proxy on loopback that holds every chunk for a while each way (see `startDelayProxy`). */
export interface DelayProxy {
  /** `url` with its host and port replaced by the proxy's. */
  rewrite(url: string): string;
  close(): Promise<void>;
}

/**
 * Puts a network between a benchmark's servers and a store on loopback: each chunk is forwarded `oneWayMs`
 * after it arrived, in either direction, in order (Node fires timers of the same delay in the order they were
 * set), so a round trip takes at least twice that. Node's timers count whole milliseconds, so 1 ms is the
 * smallest delay (a round trip of 2 ms, about that of a database in another availability zone). The proxy
 * runs in the benchmark's own process.
 */
export async function startDelayProxy(target: string, oneWayMs: number): Promise<DelayProxy> {
  const upstream = new URL(target);
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const forward = (from: Socket, to: Socket) => {
    from.on('data', (chunk) => void setTimeout(() => to.destroyed || to.write(chunk), oneWayMs));
    from.once('end', () => void setTimeout(() => to.end(), oneWayMs));
  };
  const server = createServer((client) => {
    client.setNoDelay(true);
    const remote = createConnection({ host: upstream.hostname, port: Number(upstream.port) });
    remote.setNoDelay(true);
    track(client);
    track(remote);
    const fail = () => {
      client.destroy();
      remote.destroy();
    };
    client.once('error', fail);
    remote.once('error', fail);
    client.once('close', () => remote.destroy());
    remote.once('close', () => setTimeout(() => client.destroy(), oneWayMs));
    forward(client, remote);
    forward(remote, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    rewrite(url) {
      const proxied = new URL(url);
      proxied.hostname = '127.0.0.1';
      proxied.port = String(port);
      return proxied.toString();
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * `BENCH_NETWORK_DELAY_MS`: the one-way delay of `startDelayProxy` to put in front of the stores, or undefined
 * (loopback as it is).
 */
export function networkDelayMs(): number | undefined {
  const given = process.env.BENCH_NETWORK_DELAY_MS;
  if (!given) return undefined;
  const delay = Number(given);
  if (!Number.isInteger(delay) || delay < 1) {
    throw new Error(`BENCH_NETWORK_DELAY_MS must be a whole number of milliseconds ≥ 1, not "${given}"`);
  }
  return delay;
}
