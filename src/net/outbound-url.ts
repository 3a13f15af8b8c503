import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { OutrunError } from '../errors.ts';

/** Why an outbound URL was refused. */
export type OutboundUrlProblem = 'invalid' | 'scheme' | 'private' | 'unresolvable';

/** An outbound URL (MCP server, webhook) the server will not call. */
export class OutboundUrlError extends OutrunError {
  readonly problem: OutboundUrlProblem;

  constructor(problem: OutboundUrlProblem, message: string) {
    super({ code: 'url_refused', status: 400, message, details: { problem } });
    this.problem = problem;
  }
}

/**
 * Addresses that reach the server's own host or network rather than the public internet: loopback,
 * private (RFC 1918), carrier-grade NAT, link-local (cloud metadata lives at 169.254.169.254),
 * unique-local IPv6, "this network", multicast and reserved ranges.
 */
const NON_PUBLIC = new BlockList();
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
  NON_PUBLIC.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  NON_PUBLIC.addSubnet(network, prefix, 'ipv6');
}

/** IPv6 ranges that only ever reach a local network, whatever they embed: RFC 8215's local-use NAT64 prefix. */
const LOCAL_ONLY_IPV6: readonly [ipaddr.IPv6, number][] = [[ipaddr.IPv6.parse('64:ff9b:1::'), 48]];

/** The IPv4 address a pair of 16-bit parts spells. */
function ipv4Of(high: number, low: number): string {
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
}

/**
 * The IPv4 addresses an IPv6 address carries, which is where a packet to it may end up: IPv4-mapped
 * (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64
 * (`64:ff9b::/96`), 6to4 (`2002:AABB:CCDD::/48`) and Teredo (`2001:0::/32`: its server, and its client
 * with the bits inverted).
 */
function embeddedIpv4s(address: ipaddr.IPv6): string[] {
  const parts = address.parts;
  const last = ipv4Of(parts[6]!, parts[7]!);
  switch (address.range()) {
    case 'ipv4Mapped':
    case 'rfc6145':
    case 'rfc6052':
      return [last];
    case '6to4':
      return [ipv4Of(parts[1]!, parts[2]!)];
    case 'teredo':
      return [ipv4Of(parts[2]!, parts[3]!), ipv4Of(~parts[6]! & 0xffff, ~parts[7]! & 0xffff)];
    default:
      // IPv4-compatible: 96 zero bits, then the IPv4 address (not `::` or `::1`, which are IPv6's own).
      return parts.slice(0, 6).every((part) => part === 0) && (parts[6] !== 0 || parts[7]! > 1) ? [last] : [];
  }
}

/** Whether an IP address literal is loopback, private, link-local, unique-local or otherwise not public. */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return NON_PUBLIC.check(address, 'ipv4');
  if (family === 6) {
    const parsed = ipaddr.IPv6.parse(address.split('%')[0]!);
    if (LOCAL_ONLY_IPV6.some((range) => parsed.match(range))) return true;
    const carried = embeddedIpv4s(parsed);
    if (carried.some((v4) => NON_PUBLIC.check(v4, 'ipv4'))) return true;
    return NON_PUBLIC.check(parsed.toNormalizedString(), 'ipv6');
  }
  return false;
}

/**
 * Whether a URL names a user or a password (`https://user:secret@host/`); false for what is not a URL.
 * The API shows outbound URLs as they are, so such a URL would show its secret.
 */
export function urlHasCredentials(url: string): boolean {
  try {
    const parsed = new URL(url);
    return parsed.username !== '' || parsed.password !== '';
  } catch {
    return false;
  }
}

export interface AssertOutboundUrlOptions {
  /** Allow private, loopback and link-local addresses (`OUTRUN_ALLOW_PRIVATE_URLS`). @default false */
  allowPrivate?: boolean;
  /** Resolves a host name to its addresses. @default `dns.lookup` with every address */
  resolve?: (hostname: string) => Promise<string[]>;
}

async function resolveAll(hostname: string): Promise<string[]> {
  const results = await lookup(hostname, { all: true, verbatim: true });
  return results.map((result) => result.address);
}

/**
 * Checks a URL the server is about to call: http(s) only and, unless `allowPrivate`, a host whose every
 * resolved address is public. Returns the parsed URL; throws `OutboundUrlError` saying what is wrong.
 * The check resolves the name itself, so a name pointing at 127.0.0.1 is refused like the literal.
 */
export async function assertOutboundUrl(url: string, options: AssertOutboundUrlOptions = {}): Promise<URL> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new OutboundUrlError('invalid', `"${url.slice(0, 200)}" is not a valid URL.`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new OutboundUrlError('scheme', `Only http and https URLs are allowed, not ${parsed.protocol}.`);
  }
  if (options.allowPrivate) return parsed;

  // WHATWG URL parsing already normalised numeric hosts (`0x7f.1`, `2130706433`) to dotted IPv4.
  const host = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    try {
      addresses = await (options.resolve ?? resolveAll)(host);
    } catch (error) {
      throw new OutboundUrlError(
        'unresolvable',
        `The host "${host}" does not resolve: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    if (addresses.length === 0)
      throw new OutboundUrlError('unresolvable', `The host "${host}" does not resolve.`);
  }
  const refused = addresses.find(isNonPublicAddress);
  if (refused !== undefined) throw privateAddressError(host, refused);
  return parsed;
}

/** The refusal of a host that resolves to `address`, a non-public one. */
export function privateAddressError(host: string, address: string): OutboundUrlError {
  return new OutboundUrlError(
    'private',
    `The host "${host}" resolves to ${address}, a private, loopback or link-local address; ` +
      'set OUTRUN_ALLOW_PRIVATE_URLS=true to allow such addresses.',
  );
}
