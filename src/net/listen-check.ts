import { createServer } from 'node:net';

/**
 * What a failed `listen` on `host:port` means, naming the variable to change (DESIGN §7: a wrong setting
 * fails start-up with a message that names it). Other errors are returned as they are.
 */
export function describeListenError(error: unknown, host: string, port: number): Error {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const where = `${host}:${port}`;
  switch (code) {
    case 'EADDRINUSE':
      return new Error(`PORT: ${where} is already in use (another process listens there).`);
    case 'EACCES':
      return new Error(`PORT: this process may not listen on ${where} (ports below 1024 need privileges).`);
    case 'EADDRNOTAVAIL':
      return new Error(`HOST: ${host} is not an address of this machine.`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new Error(`HOST: ${host} does not resolve to an address.`);
    default:
      return error instanceof Error ? error : new Error(String(error));
  }
}

/**
 * Checks that this process can listen on `host:port` by binding it and letting it go at once, so a `serve`
 * that could never answer fails before it touches a run. Throws `describeListenError`'s error.
 */
export async function assertCanListen(host: string, port: number): Promise<void> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (error) => reject(describeListenError(error, host, port)));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}
