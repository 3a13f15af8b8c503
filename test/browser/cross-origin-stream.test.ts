import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scriptedText } from '../support/sse.ts';
import { startTestServer, type TestServer } from '../support/test-server.ts';
import { chromiumAvailable, launchChromium, newProfile } from './browser-support.ts';

/** A product's page on its own origin, following a run with `EventSource` and a scoped token in the URL. */
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>product</title></head><body><script>
  const params = new URLSearchParams(location.search);
  window.result = { text: '', done: false, error: null };
  const source = new EventSource(params.get('stream'));
  source.onmessage = (event) => {
    if (event.data === '[DONE]') { window.result.done = true; source.close(); return; }
    const chunk = JSON.parse(event.data);
    if (chunk.type === 'text-delta') window.result.text += chunk.delta;
  };
  source.onerror = () => { if (!window.result.done) window.result.error = 'error'; source.close(); };
</script></body></html>`;

describe.skipIf(!chromiumAvailable())('a cross-origin stream in Chromium', () => {
  let server: TestServer;
  let page: Server;
  let pageOrigin: string;
  let browser: Browser;

  beforeAll(async () => {
    page = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(PAGE);
    });
    await new Promise<void>((resolve) => page.listen(0, '127.0.0.1', resolve));
    pageOrigin = `http://127.0.0.1:${(page.address() as AddressInfo).port}`;
    server = await startTestServer('pglite', { config: { corsOrigins: [pageOrigin] } });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await new Promise((resolve) => page?.close(resolve));
  });

  /** Opens the product page in a fresh profile and waits until its stream ended or failed. */
  const follow = async (url: string) => {
    const tab = await (await newProfile(browser)).newPage();
    await tab.goto(url);
    await tab.waitForFunction(() => {
      const result = (window as unknown as { result: { done: boolean; error: string | null } }).result;
      return result.done || result.error !== null;
    });
    const result = await tab.evaluate(() => (window as unknown as { result: unknown }).result);
    await tab.context().close();
    return result;
  };

  it('follows a run from another origin with EventSource and a scoped token', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 5 });
    const issued = await server.api('/v1/tokens', { method: 'POST', body: { chatId, scopes: ['read'] } });
    const stream = `${server.url}/v1/runs/${run.id}/stream?access_token=${issued.body.token}`;
    expect(new URL(stream).origin).not.toBe(pageOrigin);

    expect(await follow(`${pageOrigin}/?stream=${encodeURIComponent(stream)}`)).toEqual({
      text: scriptedText(1, 5),
      done: true,
      error: null,
    });
    // The same page on an origin missing from OUTRUN_CORS_ORIGINS cannot read the stream.
    const otherOrigin = pageOrigin.replace('127.0.0.1', 'localhost');
    expect(await follow(`${otherOrigin}/?stream=${encodeURIComponent(stream)}`)).toMatchObject({
      done: false,
      error: 'error',
    });
  });
});
