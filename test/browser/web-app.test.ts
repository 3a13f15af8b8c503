import type { Page, Route } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { script, scriptedText } from '../support/sse.ts';
import { ADMIN_KEY } from '../support/test-server.ts';
import { assistantWords, chromiumAvailable, screenshot, useWebApp } from './browser-support.ts';

const words = (text: string) => text.split(/\s+/).filter(Boolean);

/** Until `check` passes (assertions inside may throw), polling. */
async function eventually(check: () => Promise<void>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

describe.skipIf(!chromiumAvailable())('web app in Chromium', () => {
  const web = useWebApp();
  const { open, openNewChat, send, latestRun } = web;
  const statusLine = (page: Page) => page.locator('.status-line');

  it('signs in from the #key link, keeps the key out of the address bar, and rejects a wrong key', async () => {
    const { page, errors } = await open(`/#key=${ADMIN_KEY}`);
    await expect.poll(() => page.getByText('admin@localhost').isVisible()).toBe(true);
    expect(page.url()).not.toContain('key=');
    expect(await page.evaluate(() => localStorage.getItem('outrun.apiKey'))).toBe(ADMIN_KEY);
    await screenshot(page, 'home');

    const wrong = await open('/#key=not-a-real-key-0000000000');
    await expect.poll(() => wrong.page.getByRole('alert').textContent()).toContain('not accepted');
    await expect.poll(() => wrong.page.getByLabel('API key').isVisible()).toBe(true);
    await screenshot(wrong.page, 'sign-in');
    expect(errors).toEqual([]);
    expect(wrong.errors).toEqual([]);
  });

  it('signs in from a #key link opened in a tab that already shows the app, and switches users with one', async () => {
    const { page, errors } = await open('/');
    await expect.poll(() => page.getByLabel('API key').isVisible(), { timeout: 10_000 }).toBe(true);
    await page.evaluate((key) => (window.location.hash = `#key=${key}`), ADMIN_KEY);
    await expect.poll(() => page.getByText('admin@localhost').isVisible(), { timeout: 15_000 }).toBe(true);
    await expect.poll(() => page.url(), { timeout: 10_000 }).not.toContain('key=');

    const memberKey = await web.server.createUser('linked@example.com');
    await page.evaluate((key) => (window.location.hash = `#key=${key}`), memberKey);
    await expect.poll(() => page.getByText('linked@example.com').isVisible(), { timeout: 15_000 }).toBe(true);
    expect(await page.getByText('admin@localhost').count()).toBe(0);
    await expect.poll(() => page.url(), { timeout: 10_000 }).not.toContain('key=');
    expect(await page.evaluate(() => localStorage.getItem('outrun.apiKey'))).toBe(memberKey);
    expect(errors).toEqual([]);
  });

  it('continues a run after the page is closed and reopened, showing the answer exactly once', async () => {
    const first = await openNewChat();
    // Long enough (about 7 s) to be still running when the page comes back on a loaded machine.
    await send(first.page, script({ steps: 3, tokens: 60, delayMs: 40 }));
    await expect
      .poll(async () => (await assistantWords(first.page)).length, { timeout: 10_000 })
      .toBeGreaterThan(10);
    await screenshot(first.page, 'chat-running');
    expect(first.errors).toEqual([]);
    await first.close();

    await new Promise((resolve) => setTimeout(resolve, 1500));
    const second = await open(`/chats/${first.chatId}`, first.context);
    const expected = words(scriptedText(3, 60));
    // While it streams, what the page shows is always a prefix of the answer: no repeat, no gap.
    let sawRunning = false;
    await eventually(async () => {
      const shown = await assistantWords(second.page);
      expect(expected.slice(0, shown.length)).toEqual(shown);
      if (await statusLine(second.page).isVisible()) sawRunning = true;
      expect(shown).toEqual(expected);
      expect(await statusLine(second.page).count()).toBe(0);
    });
    expect(sawRunning).toBe(true);
    expect(await second.page.locator('.message-assistant').count()).toBe(1);
    expect((await latestRun(first.chatId)).status).toBe('succeeded');
    await screenshot(second.page, 'chat-finished');
    expect(second.errors).toEqual([]);
  });

  it('stops a run from a second page, and both pages show it stopped with the same partial answer', async () => {
    const first = await openNewChat();
    await send(first.page, script({ steps: 3, tokens: 60, delayMs: 40 }));
    await expect.poll(() => statusLine(first.page).isVisible()).toBe(true);
    const second = await open(`/chats/${first.chatId}`, first.context);
    await expect.poll(() => statusLine(second.page).textContent()).toContain('running');
    await expect.poll(async () => (await assistantWords(second.page)).length).toBeGreaterThan(5);

    await second.page.getByRole('button', { name: 'Stop' }).click();
    for (const { page } of [first, second]) {
      await expect.poll(() => page.locator('.outcome').textContent()).toContain('Stopped on request');
      expect(await statusLine(page).count()).toBe(0);
      await expect.poll(() => page.getByLabel('Message').isEnabled()).toBe(true);
    }
    const shownFirst = await assistantWords(first.page);
    const shownSecond = await assistantWords(second.page);
    const full = words(scriptedText(3, 60));
    expect(shownFirst).toEqual(shownSecond);
    expect(shownFirst.length).toBeGreaterThan(0);
    expect(shownFirst.length).toBeLessThan(full.length);
    expect(full.slice(0, shownFirst.length)).toEqual(shownFirst);
    await screenshot(second.page, 'chat-stopped');
    expect([...first.errors, ...second.errors]).toEqual([]);
  });

  it('queues a message sent during a run started elsewhere, and starts it when that run ends', async () => {
    const { page, chatId, errors } = await openNewChat();
    const run = await web.server.startRun(chatId, { steps: 2, tokens: 150, delayMs: 30 });
    // An idle page looks for runs started elsewhere every few seconds.
    await expect.poll(() => statusLine(page).isVisible(), { timeout: 10_000 }).toBe(true);
    expect(await page.getByLabel('Message').isEnabled()).toBe(true);
    await send(page, script({ steps: 1, tokens: 4 }));

    await expect.poll(() => page.locator('.queued-note').count()).toBe(1);
    expect(await page.getByLabel('Message').inputValue()).toBe('');
    await screenshot(page, 'queued');
    expect(await page.getByRole('button', { name: 'Stop' }).count()).toBe(1);
    expect(await page.locator('.composer').getByRole('button', { name: 'Stop' }).count()).toBe(1);

    await expect
      .poll(async () => (await web.server.api(`/v1/runs/${run.id}`)).body.run.status, { timeout: 15_000 })
      .toBe('succeeded');
    await expect
      .poll(async () => (await assistantWords(page)).join(' '), { timeout: 15_000 })
      .toBe(scriptedText(1, 4).trim());
    await expect.poll(() => page.locator('.queued-note').count()).toBe(0);
    expect(await page.locator('.message-assistant').count()).toBe(2);
    expect(errors).toEqual([]);
  });

  it('explains a failed run in words, in the thread and in the run inspector', async () => {
    const { page, chatId, errors } = await openNewChat();
    await send(page, script({ steps: 3, tokens: 5, failAtStep: 2 }));
    await expect
      .poll(() => page.locator('.outcome').textContent())
      .toContain('This answer failed: the model answered with an error: Scripted provider failure at step 2');
    await screenshot(page, 'chat-failed');

    await page.locator('.outcome').getByRole('link', { name: 'Details' }).click();
    await page.waitForURL(new RegExp(`/chats/${chatId}/runs/run_`));
    const inspector = page.locator('.inspector');
    await expect.poll(() => inspector.locator('.badge').first().textContent()).toBe('failed');
    expect(await inspector.textContent()).toContain('model_error');
    await expect.poll(() => inspector.locator('.step').count()).toBe(1);
    await inspector.locator('.tool summary').first().click();
    expect(await inspector.locator('.tool pre').first().textContent()).toContain('"step": 1');
    await screenshot(page, 'run-inspector');

    await page.getByRole('link', { name: 'Runs' }).click();
    await expect.poll(() => page.locator('.run-list li').count()).toBe(1);
    expect(await page.locator('.run-list').textContent()).toContain('failed');
    await screenshot(page, 'run-history');
    expect(errors).toEqual([]);
  });

  it('shows "reconnecting…" while the network is down and picks up where it left off', async () => {
    const { page, errors } = await openNewChat();
    await send(page, script({ steps: 2, tokens: 80, delayMs: 30 }));
    await expect.poll(async () => (await assistantWords(page)).length).toBeGreaterThan(10);

    // The network goes away: the open stream is cut and every new attempt fails, until it comes back.
    const offline = (route: Route) => route.abort('internetdisconnected');
    await page.route('**/v1/runs/*/stream', offline);
    web.server.outrun.server.server.closeAllConnections();
    await expect.poll(() => statusLine(page).textContent()).toContain('reconnecting…');
    await screenshot(page, 'reconnecting');
    await page.unroute('**/v1/runs/*/stream', offline);

    const expected = words(scriptedText(2, 80));
    await eventually(async () => {
      expect(await assistantWords(page)).toEqual(expected);
      expect(await statusLine(page).count()).toBe(0);
    });
    expect(errors).toEqual([]);
  });

  it('never stays "running" after a send answered with a 5xx, and keeps the text', async () => {
    const { page, errors } = await openNewChat();
    await page.route('**/v1/chats/*/runs', (route) =>
      route.request().method() === 'POST'
        ? route.fulfill({
            status: 503,
            contentType: 'application/json',
            body: JSON.stringify({ error: { code: 'unavailable', message: 'down for a moment' } }),
          })
        : route.continue(),
    );
    const box = page.getByLabel('Message');
    await box.click();
    await page.keyboard.type('an important');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('question');
    expect(await box.inputValue()).toBe('an important\nquestion');
    await page.keyboard.press('Enter');
    await expect
      .poll(() => page.locator('.banner-error').textContent())
      .toContain('The server had a problem');
    expect(await statusLine(page).count()).toBe(0);
    expect(await page.getByLabel('Message').isEnabled()).toBe(true);
    expect(await page.getByLabel('Message').inputValue()).toBe('an important\nquestion');

    await page.unroute('**/v1/chats/*/runs');
    await page.getByLabel('Message').press('Enter');
    await expect.poll(async () => (await assistantWords(page)).length).toBeGreaterThan(0);
    expect(await page.locator('.banner-error').count()).toBe(0);
    expect(await page.getByLabel('Message').inputValue()).toBe('');
    expect(errors).toEqual([]);
  });

  it('works at phone width in the dark color scheme, with Esc stopping the run', async () => {
    const watched = await open(`/#key=${ADMIN_KEY}`, undefined, {
      viewport: { width: 390, height: 800 },
      colorScheme: 'dark',
      isMobile: true,
      hasTouch: true,
    });
    const { page } = watched;
    await page.getByRole('button', { name: 'Chats' }).click();
    await page.getByRole('button', { name: 'New chat' }).first().click();
    await page.waitForURL(/\/chats\/chat_/);
    await send(page, script({ steps: 2, tokens: 100, delayMs: 30 }));
    await expect.poll(() => statusLine(page).isVisible()).toBe(true);
    await expect.poll(async () => (await assistantWords(page)).length).toBeGreaterThan(10);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(background).not.toBe('rgb(255, 255, 255)');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await screenshot(page, 'phone-dark');

    await page.keyboard.press('Escape');
    await expect.poll(() => page.locator('.outcome').textContent()).toContain('Stopped on request');
    expect(watched.errors).toEqual([]);
  });
});
