import { existsSync, statSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyCompress from '@fastify/compress';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../errors.ts';
import { routeNotFound } from './route-not-found.ts';

/** Where `npm run build:web` puts the web app. */
export const DEFAULT_WEB_ROOT = fileURLToPath(new URL('../../web/dist/', import.meta.url));

export interface WebAppOptions {
  /** The built web app (holding `index.html`). @default web/dist of the package */
  root?: string;
}

/** The app's scripts and styles are all same-origin files; markdown is rendered without raw HTML. */
export const CONTENT_SECURITY_DIRECTIVES: Record<string, string[]> = {
  'default-src': ["'self'"],
  'img-src': ["'self'", 'data:', 'https:'],
  'style-src': ["'self'", "'unsafe-inline'"],
  'connect-src': ["'self'"],
  'object-src': ["'none'"],
  'frame-ancestors': ["'none'"],
  'base-uri': ["'none'"],
  'form-action': ["'self'"],
};

const CONTENT_SECURITY_POLICY = Object.entries(CONTENT_SECURITY_DIRECTIVES)
  .map(([name, values]) => `${name} ${values.join(' ')}`)
  .join('; ');

const NOT_BUILT_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Outrun</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}
code{background:#8882;padding:.1em .3em;border-radius:4px}</style></head>
<body><h1>Outrun is running</h1>
<p>The web app has not been built yet. Run <code>npm run build:web</code> in the Outrun directory, then reload this page.</p>
<p>The API is available under <code>/v1</code>.</p></body></html>`;

/**
 * Serves the web app at `/`: files of the build as they are (hashed assets cached for a year), and
 * `index.html` for any other GET that accepts HTML, so client-side routes survive a reload. `/v1` stays
 * the API's: an unknown `/v1` path is a JSON 404. Without a build, a page explains how to make one.
 */
export function registerWebApp(app: FastifyInstance, options: WebAppOptions = {}): void {
  const root = resolve(options.root ?? DEFAULT_WEB_ROOT);
  // Its own plugin scope: compression (gzip or brotli, as the browser accepts) applies to the web app only,
  // never to API responses carrying secrets.
  void app.register(async (web) => {
    await web.register(fastifyCompress, { global: true });
    // `serve: false` only adds `reply.sendFile`; the route below decides what to send.
    await web.register(fastifyStatic, { root, serve: false, index: false });
    registerWebAppRoute(web, root);
  });
}

function registerWebAppRoute(app: FastifyInstance, root: string): void {
  const sendIndex = (reply: FastifyReply) => {
    void reply.header('cache-control', 'no-cache').header('content-security-policy', CONTENT_SECURITY_POLICY);
    void reply.header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
    if (!existsSync(resolve(root, 'index.html'))) {
      return reply.status(200).type('text/html; charset=utf-8').send(NOT_BUILT_PAGE);
    }
    return reply.sendFile('index.html', { cacheControl: false });
  };

  app.get('/*', async (request: FastifyRequest<{ Params: { '*': string } }>, reply) => {
    const path = request.params['*'] ?? '';
    if (path === 'v1' || path.startsWith('v1/')) throw routeNotFound(request.url);
    const file = builtFile(root, path);
    if (file) {
      const immutable = file.split(sep)[0] === 'assets';
      return reply.sendFile(file, {
        cacheControl: true,
        immutable,
        maxAge: immutable ? 365 * 24 * 3600 * 1000 : 0,
      });
    }
    if (path === '' || acceptsHtml(request)) return sendIndex(reply);
    throw new NotFoundError('route');
  });
}

/** The path of a regular file under `root` named by a URL path, or undefined. Never leaves `root`. */
function builtFile(root: string, urlPath: string): string | undefined {
  if (urlPath === '' || urlPath.endsWith('/')) return undefined;
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0')) return undefined;
  // Source maps are not published, even when a build left some behind.
  if (decoded.endsWith('.map')) return undefined;
  const absolute = resolve(root, decoded);
  if (!absolute.startsWith(root + sep)) return undefined;
  try {
    return statSync(absolute).isFile() ? absolute.slice(root.length + 1) : undefined;
  } catch {
    return undefined;
  }
}

function acceptsHtml(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes('text/html');
}
