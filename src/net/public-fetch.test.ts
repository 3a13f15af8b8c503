import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LookupAddress } from 'node:dns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OutboundUrlError } from './outbound-url.ts';
import { publicOnlyFetch, publicOnlyLookup, type LookupAll } from './public-fetch.ts';

/** A resolver that answers every name with `addresses`. */
const answering =
  (...addresses: string[]): LookupAll =>
  (_hostname, _options, callback) =>
    callback(
      null,
      addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
    );

/** What `lookup` hands `net.connect`: the error, or the addresses. */
function lookUp(
  resolve: LookupAll,
  all: boolean,
): Promise<{ error: Error | null; address: string | LookupAddress[]; family?: number }> {
  return new Promise((resolve_) =>
    publicOnlyLookup(resolve)('example.test', { all }, (error, address, family) =>
      resolve_({ error, address, family }),
    ),
  );
}

describe('publicOnlyLookup', () => {
  it('passes public addresses through, one or all as asked', async () => {
    const resolve = answering('93.184.216.34', '2606:2800:220:1::1');
    expect(await lookUp(resolve, false)).toEqual({ error: null, address: '93.184.216.34', family: 4 });
    const all = await lookUp(resolve, true);
    expect(all.error).toBeNull();
    expect(all.address).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
    ]);
  });

  it('refuses a name with any private, loopback or link-local address, naming it', async () => {
    for (const addresses of [
      ['127.0.0.1'],
      ['93.184.216.34', '169.254.169.254'],
      ['::1'],
      ['::ffff:10.0.0.1'],
    ]) {
      const { error } = await lookUp(answering(...addresses), true);
      expect(error, addresses.join()).toBeInstanceOf(OutboundUrlError);
      expect((error as OutboundUrlError).problem).toBe('private');
      expect(error!.message).toContain(addresses.at(-1));
    }
  });

  it('refuses a name that resolves to nothing, and passes a resolver error on', async () => {
    expect(((await lookUp(answering(), true)).error as OutboundUrlError).problem).toBe('unresolvable');
    const failing: LookupAll = (_hostname, _options, callback) =>
      callback(Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' }), []);
    expect((await lookUp(failing, true)).error?.message).toBe('getaddrinfo ENOTFOUND');
  });
});

describe('publicOnlyFetch against a real server on 127.0.0.1', () => {
  let server: Server;
  let port: number;
  let requests = 0;

  beforeAll(async () => {
    server = createServer((_request, response) => {
      requests += 1;
      response.end('reached');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('does not connect when the name resolves to loopback at connect time', async () => {
    const fetchPublic = publicOnlyFetch({ resolve: answering('127.0.0.1') });
    const failure = await fetchPublic(`http://rebound.test:${port}/`).then(
      () => null,
      (error: unknown) => error as Error,
    );
    expect(failure).toBeInstanceOf(Error);
    expect(failure!.cause).toBeInstanceOf(OutboundUrlError);
    expect(requests).toBe(0);
  });

  it('reaches a literal address without resolving it: assertOutboundUrl is the check for literals', async () => {
    let resolved = 0;
    const fetchPublic = publicOnlyFetch({
      resolve: (hostname, options, callback) => {
        resolved += 1;
        answering('127.0.0.1')(hostname, options, callback);
      },
    });
    const response = await fetchPublic(`http://127.0.0.1:${port}/`);
    expect(await response.text()).toBe('reached');
    expect(requests).toBe(1);
    expect(resolved).toBe(0);
  });
});
