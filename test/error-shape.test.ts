import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

const MIB = 1024 * 1024;

/** Sends `request` as raw bytes and reads the whole answer until the server closes or `timeoutMs` passes. */
async function rawRequest(url: string, request: string | Buffer, timeoutMs = 5_000) {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve();
    }, timeoutMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on('error', () => {});
    socket.write(request);
  });
  const text = Buffer.concat(chunks).toString();
  const [head = '', ...rest] = text.split('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
  return {
    status,
    head,
    body: JSON.parse(rest.join('\r\n\r\n')) as { error: { code: string; message: string } },
  };
}

/** Every response the server gives, whoever produced it (Node, Fastify or a route), has the error shape. */
describe('error responses', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('pglite');
  });
  afterAll(async () => {
    await server?.close();
  });

  const expectShape = (body: unknown, code: string) => {
    expect(body).toEqual({ error: expect.objectContaining({ code, message: expect.any(String) }) });
  };

  it('answers an over-long path segment with 414 uri_too_long in the error shape', async () => {
    const response = await server.api(`/v1/chats/chat_${'a'.repeat(300)}/runs`, {
      method: 'POST',
      body: { input: { text: 'hi' } },
    });
    expect(response.status).toBe(414);
    expectShape(response.body, 'uri_too_long');
    // Also where the router, finding the parameter too long, matches no route at all.
    for (const path of [`/v1/runs/run_${'a'.repeat(150)}`, `/v1/chats/chat_${'a'.repeat(101)}/runs`]) {
      const long = await server.api(path);
      expect(long.status, path).toBe(414);
      expectShape(long.body, 'uri_too_long');
    }
    expect((await server.api(`/v1/nope/${'a'.repeat(20)}`)).status).toBe(404);
  });

  it('answers an OPTIONS request that is no allowed preflight without a 5xx or an error outside the shape', async () => {
    const requests: Record<string, string>[] = [
      {},
      { origin: 'http://elsewhere.test', 'access-control-request-method': 'POST' },
    ];
    for (const headers of requests) {
      for (const path of ['/v1/chats', '/v1/me', '/v1/nope']) {
        const response = await fetch(`${server.url}${path}`, { method: 'OPTIONS', headers });
        expect(response.status, `${path} ${JSON.stringify(headers)}`).toBeLessThan(500);
        const text = await response.text();
        if (response.status >= 400) expectShape(JSON.parse(text), 'route_not_found');
      }
    }
  });

  it('answers headers over the size limit with 431 headers_too_large in the error shape', async () => {
    const response = await rawRequest(
      server.url,
      `GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_KEY}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    expect(response.status).toBe(431);
    expectShape(response.body, 'headers_too_large');
  });

  it('answers a request line over the size limit with 431 headers_too_large in the error shape', async () => {
    const response = await rawRequest(
      server.url,
      `GET /v1/chats?x=${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    expect(response.status).toBe(431);
    expectShape(response.body, 'headers_too_large');
  });

  it('answers an over-long URL sent by fetch with a readable error', async () => {
    const response = await server.fetch(`/v1/chats?x=${'a'.repeat(20_000)}`);
    expect(response.status).toBe(431);
    expectShape(await response.json(), 'headers_too_large');
  });

  it('answers a malformed URL with 400 invalid_request in the error shape', async () => {
    const response = await server.api('/v1/chats/%E0%A4%A');
    expect(response.status).toBe(400);
    expectShape(response.body, 'invalid_request');
    const bare = await rawRequest(
      server.url,
      'GET /v1/chats/% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    expect(bare.status).toBe(400);
    expectShape(bare.body, 'invalid_request');
  });

  it('answers an invalid Content-Length with 400 invalid_request in the error shape', async () => {
    const response = await rawRequest(
      server.url,
      'POST /v1/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}',
    );
    expect(response.status).toBe(400);
    expectShape(response.body, 'invalid_request');
  });

  it('answers a malformed request line with 400 invalid_request in the error shape', async () => {
    const response = await rawRequest(server.url, 'HELLO THERE\r\n\r\n');
    expect(response.status).toBe(400);
    expectShape(response.body, 'invalid_request');
  });

  it('answers malformed JSON with 400 invalid_json in the error shape', async () => {
    const response = await server.api('/v1/chats', { method: 'POST', raw: '{"title":' });
    expect(response.status).toBe(400);
    expectShape(response.body, 'invalid_json');
  });

  it('answers a body shorter than its Content-Length with a 4xx in the error shape', async () => {
    const response = await rawRequest(
      server.url,
      `POST /v1/chats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{}`,
      1_500,
    ).catch(() => null);
    // The server waits for the rest of the body; either it times the request out in the error shape or
    // the client gives up first. It never answers outside the shape.
    if (response && !Number.isNaN(response.status)) {
      expect(response.status).toBeGreaterThanOrEqual(400);
      expect(response.status).toBeLessThan(500);
    }
  });

  for (const size of [2 * MIB, 3.9 * MIB]) {
    it(`answers a ${size / MIB} MiB body with a 413 body_too_large that Node's fetch can read`, async () => {
      const response = await server.fetch('/v1/chats', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'x'.repeat(Math.floor(size)) }),
      });
      expect(response.status).toBe(413);
      expectShape(await response.json(), 'body_too_large');
    });
  }

  it('answers a 2 MiB chunked body with a 413 body_too_large that Node’s fetch can read', async () => {
    const chunk = new Uint8Array(64 * 1024).fill(0x20);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 2 * MIB) return controller.close();
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const response = await server.fetch('/v1/chats', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      duplex: 'half',
    } as RequestInit);
    expect(response.status).toBe(413);
    expectShape(await response.json(), 'body_too_large');
  });

  it('keeps serving after a too-large body', async () => {
    const response = await server.api('/v1/me');
    expect(response.status).toBe(200);
  });
});
