import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { InvalidRequestError } from '../errors.ts';

/**
 * Addresses an outbound request must not reach unless private URLs are allowed: loopback, private,
 * link-local (cloud metadata), carrier-grade NAT, unspecified, multicast and reserved ranges.
 */
const REFUSED = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  REFUSED.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  REFUSED.addSubnet(network, prefix, 'ipv6');
}

/** Whether `address` (an IPv4 or IPv6 literal) is one outbound requests must not reach. */
export function isRefusedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return REFUSED.check(address, 'ipv4');
  if (family !== 6) return true;
  // An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is checked as the IPv4 address it carries.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return REFUSED.check(mapped[1]!, 'ipv4');
  return REFUSED.check(address, 'ipv6');
}

export interface OutboundUrlOptions {
  /** Allow loopback and private addresses (`OUTRUN_ALLOW_PRIVATE_URLS=true`; tests and private networks). */
  allowPrivate: boolean;
  /** The body field the URL came from, named in the error. @default 'url' */
  field?: string;
}

/**
 * Checks a URL the server will call (a webhook, an MCP server): http(s) only, and, unless `allowPrivate`,
 * neither its literal address nor any address its host name resolves to may be private or loopback.
 * Throws `InvalidRequestError` naming the field; returns the parsed URL.
 */
export async function assertOutboundUrl(url: string, options: OutboundUrlOptions): Promise<URL> {
  const field = options.field ?? 'url';
  const refuse = (reason: string) =>
    new InvalidRequestError(`${field}: ${reason}`, { issues: [{ path: [field], message: reason }] });
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw refuse('must be an absolute http(s) URL.');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw refuse('must use http or https.');
  if (parsed.username || parsed.password) throw refuse('must not carry credentials.');
  if (options.allowPrivate) return parsed;

  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    try {
      addresses = (await lookup(host, { all: true, verbatim: true })).map((entry) => entry.address);
    } catch {
      throw refuse(`the host ${host} does not resolve.`);
    }
  }
  if (addresses.length === 0 || addresses.some(isRefusedAddress)) {
    throw refuse('points at a private, loopback or link-local address, which is not allowed.');
  }
  return parsed;
}
