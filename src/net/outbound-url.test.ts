import { describe, expect, it } from 'vitest';
import { assertOutboundUrl, isNonPublicAddress, OutboundUrlError } from './outbound-url.ts';

const publicResolver = async () => ['93.184.215.14'];

async function problemOf(url: string, options: Parameters<typeof assertOutboundUrl>[1] = {}) {
  try {
    await assertOutboundUrl(url, { resolve: publicResolver, ...options });
    return null;
  } catch (error) {
    expect(error).toBeInstanceOf(OutboundUrlError);
    return (error as OutboundUrlError).problem;
  }
}

describe('assertOutboundUrl', () => {
  it('accepts http and https URLs on public addresses', async () => {
    expect(await problemOf('https://mcp.example.com/mcp')).toBeNull();
    expect(await problemOf('http://93.184.215.14:8080/x')).toBeNull();
    expect(await problemOf('http://[2606:2800:220:1:248:1893:25c8:1946]/')).toBeNull();
  });

  it('refuses other schemes and malformed URLs', async () => {
    expect(await problemOf('ftp://example.com/')).toBe('scheme');
    expect(await problemOf('file:///etc/passwd')).toBe('scheme');
    expect(await problemOf('javascript:alert(1)')).toBe('scheme');
    expect(await problemOf('not a url')).toBe('invalid');
  });

  it('refuses IPv4 literals in loopback, private, link-local and other non-public ranges', async () => {
    for (const host of [
      '127.0.0.1',
      '127.1.2.3',
      '10.0.0.5',
      '172.16.3.4',
      '172.31.255.255',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
    ]) {
      expect(await problemOf(`http://${host}/`), host).toBe('private');
    }
    // Numeric shorthands are normalised by the URL parser and still refused.
    expect(await problemOf('http://2130706433/')).toBe('private');
    expect(await problemOf('http://0x7f.1/')).toBe('private');
    expect(await problemOf('http://172.32.0.1/')).toBeNull();
  });

  it('refuses IPv6 loopback, unique-local, link-local and IPv4-mapped private literals', async () => {
    for (const host of [
      '[::1]',
      '[::]',
      '[fd12:3456::1]',
      '[fc00::1]',
      '[fe80::1]',
      '[::ffff:127.0.0.1]',
      '[::ffff:10.0.0.1]',
    ]) {
      expect(await problemOf(`http://${host}:3000/`), host).toBe('private');
    }
  });

  it('refuses a name that resolves to loopback, also when only one of its addresses does', async () => {
    expect(await problemOf('http://localhost:3000/mcp', { resolve: undefined })).toBe('private');
    expect(await problemOf('http://sneaky.example/', { resolve: async () => ['8.8.8.8', '127.0.0.1'] })).toBe(
      'private',
    );
    expect(await problemOf('http://v6.example/', { resolve: async () => ['::1'] })).toBe('private');
  });

  it('reports a name that does not resolve', async () => {
    const problem = await problemOf('http://nowhere.invalid/', {
      resolve: async () => {
        throw new Error('ENOTFOUND');
      },
    });
    expect(problem).toBe('unresolvable');
  });

  it('allows private addresses when allowPrivate is set, but still only http(s)', async () => {
    expect(await problemOf('http://127.0.0.1:3000/mcp', { allowPrivate: true })).toBeNull();
    expect(await problemOf('http://localhost/', { allowPrivate: true })).toBeNull();
    expect(await problemOf('gopher://127.0.0.1/', { allowPrivate: true })).toBe('scheme');
  });
});

describe('isNonPublicAddress', () => {
  it('classifies addresses', () => {
    expect(isNonPublicAddress('8.8.8.8')).toBe(false);
    expect(isNonPublicAddress('2001:4860:4860::8888')).toBe(false);
    expect(isNonPublicAddress('::ffff:7f00:1')).toBe(true);
    expect(isNonPublicAddress('64:ff9b::a00:1')).toBe(true);
    expect(isNonPublicAddress('fe80::abcd')).toBe(true);
  });

  it('looks through every IPv6 form that carries an IPv4 address to the address it carries', () => {
    const refused = [
      '::ffff:127.0.0.1', // IPv4-mapped
      '0:0:0:0:0:ffff:7f00:1', // the same, written out
      '::ffff:0:7f00:1', // IPv4-translated (RFC 6145)
      '::127.0.0.1', // IPv4-compatible (deprecated)
      '::a9fe:a9fe', // IPv4-compatible: the cloud metadata address
      '64:ff9b::127.0.0.1', // NAT64
      '64:ff9b:1::8.8.8.8', // local-use NAT64 (RFC 8215): local whatever it carries
      '2002:7f00:1::', // 6to4 of 127.0.0.1
      '2002:a9fe:a9fe::1', // 6to4 of 169.254.169.254
      '2001:0:7f00:1::', // Teredo, server 127.0.0.1
      '2001:0:808:808::80ff:fffe', // Teredo, client 127.0.0.1 (bits inverted)
      'fe80::1%eth0', // with a zone
    ];
    for (const address of refused) expect(isNonPublicAddress(address), address).toBe(true);
    const allowed = [
      '::ffff:8.8.8.8',
      '64:ff9b::8.8.8.8',
      '2002:808:808::1',
      '2001:0:808:808::f7f7:f7f7', // Teredo, server and client 8.8.8.8
      '2a00:1450:4001::200e',
    ];
    for (const address of allowed) expect(isNonPublicAddress(address), address).toBe(false);
  });
});
