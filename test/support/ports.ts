import { createServer } from 'node:net';

/**
 * Ports for servers a test starts itself (a Redis, a PostgreSQL, an Outrun process), drawn below Linux's
 * ephemeral range (32768 and up): an outgoing connection of any test takes its local port from that range, and
 * could take a port the test was given between the check and the server's listen, or while the test has its
 * server stopped (an outage test restarts it on the same port). Above 20000, clear of well-known services.
 */
const LOWEST = 20_000;
const COUNT = 12_000;

/** Whether nobody listens on `port` of 127.0.0.1 right now. */
async function isFree(port: number): Promise<boolean> {
  const server = createServer();
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (listening) await new Promise<void>((resolve) => server.close(() => resolve()));
  return listening;
}

/** `count` consecutive ports, from the one returned, that nobody listens on right now (see above). */
async function freePorts(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = LOWEST + Math.floor(Math.random() * (COUNT - count));
    let free = true;
    for (let offset = 0; free && offset < count; offset++) free = await isFree(port + offset);
    if (free) return port;
  }
  throw new Error(`no ${count} free consecutive ports between ${LOWEST} and ${LOWEST + COUNT}`);
}

/** A port nobody listens on right now, below the ephemeral range. */
export const freePort = (): Promise<number> => freePorts(1);

/** Two consecutive free ports, P and P + 1: for a program given P that listens on P and P + 1. */
export const freePortPair = (): Promise<number> => freePorts(2);
