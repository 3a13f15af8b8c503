import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, BrowserContextOptions, Page } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { ADMIN_KEY, startTestServer, type TestServer } from '../support/test-server.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEB_INDEX = join(ROOT, 'web/dist/index.html');
export const SCREENSHOT_DIR = join(ROOT, 'docs/screenshots');

/** Debian's Chromium, or the browser named by `CHROMIUM_PATH`. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Whether the browser tests can run here. In CI a missing Chromium is an error (the tests must not pass
 * by skipping); elsewhere they are skipped with a note on how to enable them.
 */
export function chromiumAvailable(): boolean {
  if (existsSync(CHROMIUM_PATH)) return true;
  const message = `Chromium not found at ${CHROMIUM_PATH}: install it (apt-get install -y chromium) or set CHROMIUM_PATH.`;
  if (process.env.CI) throw new Error(`${message} Browser tests are required in CI.`);
  console.warn(`Skipping the browser tests. ${message}`);
  return false;
}

function newestMtime(directory: string): number {
  let newest = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path));
    else newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** Whether web/dist is there and no older than the sources it is built from. */
function webBuildIsFresh(): boolean {
  const sources = [
    'web/src',
    'web/index.html',
    'web/vite.config.ts',
    'src/protocol',
    'src/client',
    'src/react',
  ].map((path) => join(ROOT, path));
  const newestSource = Math.max(
    ...sources.map((path) => (statSync(path).isDirectory() ? newestMtime(path) : statSync(path).mtimeMs)),
  );
  return existsSync(WEB_INDEX) && statSync(WEB_INDEX).mtimeMs >= newestSource;
}

/** Held by the one test file building web/dist; a lock older than this was left by a killed run. */
const BUILD_LOCK = join(ROOT, 'web/.build-lock');
const BUILD_LOCK_STALE_MS = 5 * 60_000;

/**
 * Builds web/dist when it is missing or older than the sources it is built from. The browser test files run
 * in parallel, and a build empties web/dist before it writes it again: a page another file loads in that
 * moment gets no app. So one file builds, under a lock, and the others wait for it and find the build fresh.
 */
export async function ensureWebBuild(): Promise<void> {
  for (;;) {
    if (webBuildIsFresh()) return;
    try {
      mkdirSync(BUILD_LOCK);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      // The holder may release it between the two calls: then there is nothing to age.
      const heldSince = statSync(BUILD_LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now();
      if (Date.now() - heldSince > BUILD_LOCK_STALE_MS) rmSync(BUILD_LOCK, { force: true, recursive: true });
      await new Promise((resolve) => setTimeout(resolve, 250));
      continue;
    }
    try {
      if (webBuildIsFresh()) return;
      execFileSync(
        process.execPath,
        [join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', '--config', 'web/vite.config.ts'],
        // Vitest sets NODE_ENV=test, which would make Vite bundle React's development build.
        { cwd: ROOT, stdio: 'pipe', env: { ...process.env, NODE_ENV: 'production' } },
      );
      return;
    } finally {
      rmSync(BUILD_LOCK, { force: true, recursive: true });
    }
  }
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** A page that records console errors and uncaught exceptions, so a test can assert there were none. */
export interface WatchedPage {
  page: Page;
  context: BrowserContext;
  /** Console errors and page errors, besides the browser's own notes about HTTP error answers. */
  errors: string[];
  /** Closes the page (the tab); its context (the browser profile, with the stored key) stays. */
  close(): Promise<void>;
}

/** Opens a tab in `context` (a browser profile: tabs of one context share the stored API key). */
export async function openTab(context: BrowserContext): Promise<WatchedPage> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('console', (message) => {
    // Chromium logs every 4xx answer to fetch; those the app expects (409, 401) are not app errors.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      errors.push(message.text());
    }
  });
  page.on('pageerror', (error) => errors.push(error.message));
  return { page, context, errors, close: () => page.close() };
}

export async function newProfile(
  browser: Browser,
  options: BrowserContextOptions = {},
): Promise<BrowserContext> {
  return browser.newContext({ viewport: { width: 1100, height: 760 }, ...options });
}

/**
 * The words of the last assistant message on the page (or of the `index`th), whitespace-normalized, without
 * steps shown as interrupted.
 */
export async function assistantWords(page: Page, index = -1): Promise<string[]> {
  const text = await page.evaluate((at) => {
    const messages = document.querySelectorAll('.message-assistant');
    const last = messages[at < 0 ? messages.length + at : at] as HTMLElement | undefined;
    if (!last) return '';
    return Array.from(last.querySelectorAll('.markdown'))
      .filter((element) => !element.closest('.step-interrupted'))
      .map((element) => (element as HTMLElement).innerText)
      .join(' ');
  }, index);
  return text.split(/\s+/).filter(Boolean);
}

export async function screenshot(page: Page, name: string): Promise<void> {
  if (!process.env.OUTRUN_SCREENSHOTS) return;
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`) });
}

/** A PGlite Outrun server and Chromium for one browser test file, with the steps its tests share. */
export interface WebApp {
  /** The server under test; there once `beforeAll` ran. */
  readonly server: TestServer;
  /** The browser; there once `beforeAll` ran. */
  readonly browser: Browser;
  /** Opens `path` in a new tab of `context`, or of a new browser profile made with `options`. */
  open(path: string, context?: BrowserContext, options?: BrowserContextOptions): Promise<WatchedPage>;
  /** Opens the app with the sign-in link and creates a chat; returns the tab and the chat id. */
  openNewChat(options?: BrowserContextOptions): Promise<WatchedPage & { chatId: string }>;
  /** Types `text` into the composer and sends it. */
  send(page: Page, text: string): Promise<void>;
  /** The chat's latest run, as the API shows it. */
  latestRun(chatId: string): Promise<any>;
}

/**
 * Registers the `beforeAll`/`afterAll` of a browser test file: builds the web app if it is stale, starts a
 * PGlite server with `options`, launches Chromium, and closes both after the file. Call it inside the
 * `describe` so a skipped describe starts nothing.
 */
export function useWebApp(options: Parameters<typeof startTestServer>[1] = {}): WebApp {
  let server: TestServer | undefined;
  let browser: Browser | undefined;
  beforeAll(async () => {
    await ensureWebBuild();
    server = await startTestServer('pglite', options);
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });
  const app: WebApp = {
    get server() {
      if (!server) throw new Error('The server starts in beforeAll.');
      return server;
    },
    get browser() {
      if (!browser) throw new Error('Chromium starts in beforeAll.');
      return browser;
    },
    async open(path, context, profileOptions) {
      const watched = await openTab(context ?? (await newProfile(app.browser, profileOptions)));
      await watched.page.goto(app.server.url + path);
      return watched;
    },
    async openNewChat(profileOptions) {
      const watched = await app.open(`/#key=${ADMIN_KEY}`, undefined, profileOptions);
      // On a phone the chat list sits behind the Chats button.
      if (profileOptions?.isMobile) await watched.page.getByRole('button', { name: 'Chats' }).click();
      await watched.page.getByRole('button', { name: 'New chat' }).first().click();
      await watched.page.waitForURL(/\/chats\/chat_/);
      const chatId = new URL(watched.page.url()).pathname.split('/')[2]!;
      return { ...watched, chatId };
    },
    async send(page, text) {
      await page.getByLabel('Message').fill(text);
      await page.getByLabel('Message').press('Enter');
    },
    async latestRun(chatId) {
      return (await app.server.api(`/v1/chats/${chatId}/runs/latest`)).body.run;
    },
  };
  return app;
}
