import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { errorHandler } from './error-mapper.ts';
import { registerWebApp } from './static.ts';

describe('the web app at /', () => {
  let app: FastifyInstance | undefined;
  let root: string | undefined;

  const serve = async (files: Record<string, string>) => {
    root = mkdtempSync(join(tmpdir(), 'outrun-web-'));
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), content);
    }
    app = Fastify();
    app.setErrorHandler(errorHandler);
    registerWebApp(app, { root });
    await app.ready();
    return app;
  };

  afterEach(async () => {
    await app?.close();
    if (root) rmSync(root, { recursive: true, force: true });
    app = undefined;
    root = undefined;
  });

  it('serves index.html at / and for client-side routes that accept HTML, never cached', async () => {
    const server = await serve({ 'index.html': '<!doctype html><title>app</title>' });
    for (const url of ['/', '/chats/chat_1/runs']) {
      const response = await server.inject({ url, headers: { accept: 'text/html,*/*' } });
      expect(response.statusCode).toBe(200);
      expect(response.body).toContain('<title>app</title>');
      expect(response.headers['cache-control']).toBe('no-cache');
      expect(response.headers['content-security-policy']).toContain("default-src 'self'");
    }
  });

  it('serves built files, hashed assets with a long immutable cache', async () => {
    const server = await serve({
      'index.html': 'index',
      'assets/app-1234.js': 'console.log(1)',
      'favicon.svg': '<svg/>',
    });
    const asset = await server.inject({ url: '/assets/app-1234.js' });
    expect(asset.statusCode).toBe(200);
    expect(asset.body).toBe('console.log(1)');
    expect(asset.headers['cache-control']).toContain('immutable');
    const icon = await server.inject({ url: '/favicon.svg' });
    expect(icon.statusCode).toBe(200);
    expect(icon.headers['cache-control']).not.toContain('immutable');
  });

  it('answers a JSON 404 for a missing file, an unknown /v1 path, or a path leaving the build', async () => {
    const server = await serve({ 'index.html': 'index' });
    for (const url of [
      '/assets/missing.js',
      '/v1/nothing-here',
      '/..%2f..%2fetc%2fpasswd',
      '/%2e%2e/package.json',
    ]) {
      const response = await server.inject({ url });
      expect(response.statusCode, url).toBe(404);
      expect(response.json().error.code).toBe('route_not_found');
    }
    const api = await server.inject({ url: '/v1/nothing-here', headers: { accept: 'text/html' } });
    expect(api.statusCode).toBe(404);
  });

  it('explains how to build the app when web/dist is missing, instead of failing', async () => {
    const server = await serve({});
    const response = await server.inject({ url: '/', headers: { accept: 'text/html' } });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toContain('text/html');
    expect(response.body).toContain('npm run build:web');
  });
});
