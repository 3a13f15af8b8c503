import { lookup as systemLookup, type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import { isNonPublicAddress, OutboundUrlError, privateAddressError } from './outbound-url.ts';

/** Resolves a host name the way `dns.lookup` does with `{all: true}`. */
export type LookupAll = (
  hostname: string,
  options: { family?: number; hints?: number },
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

const lookupAll: LookupAll = (hostname, options, callback) =>
  systemLookup(hostname, { ...options, all: true, verbatim: true }, callback);

/**
 * A `lookup` for `net.connect` that refuses a host with any non-public address. It runs when a connection is
 * dialled, on the addresses that connection will use.
 */
export function publicOnlyLookup(resolve: LookupAll = lookupAll): LookupFunction {
  return ((hostname: string, options: { all?: boolean; family?: number; hints?: number }, callback) => {
    resolve(hostname, { family: options.family, hints: options.hints }, (error, addresses) => {
      const refused = error ? undefined : addresses.find((entry) => isNonPublicAddress(entry.address));
      const failure =
        error ??
        (refused
          ? privateAddressError(hostname, refused.address)
          : addresses.length === 0
            ? new OutboundUrlError('unresolvable', `The host "${hostname}" does not resolve.`)
            : null);
      if (failure) return callback(failure, options.all ? [] : '', 0);
      if (options.all) return callback(null, addresses);
      return callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  }) as LookupFunction;
}

/**
 * A `fetch` that connects only to public addresses. `assertOutboundUrl` checks a URL's host before a call, but
 * `fetch` resolves the name again when it connects, and a name can answer a public address to the check and
 * 127.0.0.1 (or the cloud metadata address) a moment later: DNS rebinding. This `fetch` checks the addresses
 * each connection actually dials. A literal IP host is not resolved, so `assertOutboundUrl` stays the check
 * for those.
 */
export function publicOnlyFetch(options: { resolve?: LookupAll } = {}): typeof fetch {
  if (!options.resolve) return (shared ??= guardedFetch(lookupAll));
  return guardedFetch(options.resolve);
}

/** The process's public-only `fetch` on the system resolver: one connection pool, as `globalThis.fetch` has. */
let shared: typeof fetch | undefined;

function guardedFetch(resolve: LookupAll): typeof fetch {
  const dispatcher = new Agent({ connect: { lookup: publicOnlyLookup(resolve) } });
  return ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    undiciFetch(input as Parameters<typeof undiciFetch>[0], {
      ...(init as Parameters<typeof undiciFetch>[1]),
      dispatcher,
    })) as unknown as typeof fetch;
}
