import type { Route } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { script, scriptedText } from '../support/sse.ts';
import { assistantWords, chromiumAvailable, screenshot, useWebApp } from './browser-support.ts';

describe.skipIf(!chromiumAvailable())('web app: what happened to each answer, in Chromium', () => {
  const web = useWebApp();
  const { open, openNewChat, send, latestRun } = web;

  it('says in place that an answer failed or was stopped, also after later messages and a reload', async () => {
    const { page, chatId, context, errors } = await openNewChat();
    await send(page, script({ steps: 2, failAtStep: 1 }));
    await expect.poll(async () => (await latestRun(chatId))?.status).toBe('failed');
    await send(page, script({ steps: 1, tokens: 400, delayMs: 20 }));
    await expect.poll(async () => (await assistantWords(page)).length).toBeGreaterThan(5);
    await page.locator('.composer').getByRole('button', { name: 'Stop' }).click();
    await expect.poll(async () => (await latestRun(chatId))?.status).toBe('aborted');
    await send(page, script({ steps: 1, tokens: 3 }));
    await expect.poll(async () => (await latestRun(chatId))?.status).toBe('succeeded');

    const reopened = await open(`/chats/${chatId}`, context);
    for (const shown of [page, reopened.page]) {
      const answers = shown.locator('.message-assistant');
      await expect.poll(() => answers.count()).toBe(3);
      await expect
        .poll(() => answers.nth(0).textContent())
        .toContain(
          'This answer failed: the model answered with an error: Scripted provider failure at step 1',
        );
      expect(await answers.nth(1).locator('.outcome').textContent()).toContain('Stopped on request');
      await expect.poll(() => answers.nth(2).textContent()).toContain(scriptedText(1, 3).trim());
      expect(await answers.nth(2).locator('.outcome').count()).toBe(0);
    }
    await screenshot(reopened.page, 'history-outcomes');
    expect([...errors, ...reopened.errors]).toEqual([]);
  });

  it('reports a bad script with the model’s own message', async () => {
    const { page, errors } = await openNewChat();
    await send(page, '{"script": {"steps": "many"}}');
    await expect.poll(() => page.locator('.outcome').textContent()).toContain('Invalid script (steps:');
    expect(await page.locator('.outcome').textContent()).not.toContain('failed to answer');
    expect(errors).toEqual([]);
  });

  it('retries a Stop pressed while offline until it lands, and leaves no stale banner', async () => {
    const { page, chatId, context, errors } = await openNewChat();
    await send(page, script({ steps: 1, tokens: 600, delayMs: 20 }));
    await expect.poll(async () => (await assistantWords(page)).length).toBeGreaterThan(5);

    await context.setOffline(true);
    await page.locator('.composer').getByRole('button', { name: /Stop/ }).click();
    await expect
      .poll(() => page.locator('.status-line').textContent())
      .toContain('when the connection is back');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect((await latestRun(chatId)).status).toBe('running');
    await context.setOffline(false);

    await expect.poll(async () => (await latestRun(chatId)).status, { timeout: 15_000 }).toBe('aborted');
    await expect
      .poll(() => page.locator('.outcome').textContent(), { timeout: 15_000 })
      .toContain('Stopped on request');
    await expect.poll(() => page.locator('.banner').count()).toBe(0);
    // The status line goes once the stopped run's final state is synced (a moment after the outcome shows).
    await expect.poll(() => page.locator('.status-line').count()).toBe(0);
    expect(errors.filter((error) => !error.includes('ERR_INTERNET_DISCONNECTED'))).toEqual([]);
  });

  it('shows one control set when a send is refused with 409, and Stop lives in the composer', async () => {
    const { page, chatId, errors } = await openNewChat();
    const run = await web.server.startRun(chatId, { steps: 2, tokens: 300, delayMs: 30 });
    const refuse = (route: Route) =>
      route.request().method() === 'POST'
        ? route.fulfill({
            status: 409,
            contentType: 'application/json',
            body: JSON.stringify({
              error: { code: 'run_already_active', message: 'A run is active.', runId: run.id },
            }),
          })
        : route.continue();
    await page.route('**/v1/chats/*/runs', refuse);
    await send(page, 'my carefully typed question');
    await expect
      .poll(() => page.locator('.banner-warning').textContent())
      .toContain('your message was not sent');
    await expect.poll(() => page.locator('.status-line').isVisible()).toBe(true);
    expect(await page.getByRole('button', { name: 'Stop' }).count()).toBe(1);
    expect(await page.getByRole('button', { name: 'Follow' }).count()).toBe(0);
    expect(await page.getByLabel('Message').inputValue()).toBe('my carefully typed question');
    await screenshot(page, 'conflict');
    await page.unroute('**/v1/chats/*/runs', refuse);
    await page.getByRole('button', { name: 'Stop' }).click();
    await expect
      .poll(async () => (await web.server.api(`/v1/runs/${run.id}`)).body.run.status)
      .toBe('aborted');
    expect(errors).toEqual([]);
  });

  it('shows a not-found page for a chat address that cannot exist, and for an unknown page', async () => {
    const { page, context, errors } = await openNewChat();
    const missing = await open('/chats/not-an-id', context);
    await expect.poll(() => missing.page.locator('.not-found').textContent()).toContain('does not exist');
    expect(await missing.page.title()).toBe('Not found · Outrun');
    const unknown = await open('/nowhere/at/all', context);
    await expect
      .poll(() => unknown.page.locator('.not-found').textContent())
      .toContain('no page at this address');
    expect([...errors, ...missing.errors, ...unknown.errors]).toEqual([]);
    await page.close();
  });

  it('shows a stopped run’s partial step in the inspector', async () => {
    const { page, chatId, errors } = await openNewChat();
    await send(page, script({ steps: 1, tokens: 400, delayMs: 20 }));
    await expect.poll(async () => (await assistantWords(page)).length).toBeGreaterThan(5);
    await page.locator('.composer').getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => page.locator('.outcome').textContent()).toContain('Stopped on request');
    await page.locator('.outcome').getByRole('link', { name: 'Details' }).click();
    await page.waitForURL(new RegExp(`/chats/${chatId}/runs/run_`));
    const partial = page.locator('.inspector .step-partial');
    await expect.poll(() => partial.textContent()).toContain('stopped before it finished');
    expect(await partial.textContent()).toContain('s1t0');
    expect(await page.locator('.inspector').textContent()).not.toContain('No step has');

    await page.locator('.event-log summary').click();
    await expect.poll(() => page.locator('.event-log tbody tr').count()).toBeGreaterThan(5);
    expect(await page.locator('.event-log tbody tr').first().textContent()).toContain('data-run');
    await screenshot(page, 'run-inspector-partial');
    expect(errors).toEqual([]);
  });

  it('offers Retry, Regenerate, Copy and Edit-and-resend on messages', async () => {
    const { page, context, errors } = await openNewChat();
    await context.grantPermissions(['clipboard-read', 'clipboard-write']);
    const failing = script({ steps: 2, failAtStep: 1 });
    await send(page, failing);
    await expect.poll(() => page.locator('.outcome').textContent()).toContain('This answer failed');
    await page.getByRole('button', { name: 'Retry' }).click();
    await expect.poll(() => page.locator('.message-user').count()).toBe(2);
    expect(await page.locator('.message-user').nth(1).textContent()).toContain(failing);

    await send(page, script({ steps: 1, tokens: 3 }));
    await expect.poll(async () => (await assistantWords(page)).join(' ')).toBe(scriptedText(1, 3).trim());
    const last = page.locator('.message-assistant').last();
    await last.getByRole('button', { name: 'Copy' }).click();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(scriptedText(1, 3));
    await last.getByRole('button', { name: 'Regenerate' }).click();
    await expect.poll(() => page.locator('.message-assistant').count()).toBe(4);

    await page.locator('.message-user').first().getByRole('button', { name: 'Edit and resend' }).click();
    expect(await page.getByLabel('Message').inputValue()).toBe(failing);
    expect(errors).toEqual([]);
  });

  it('marks chats with a run going, titles the page after the chat, and has one Tab stop per chat', async () => {
    const { page, chatId, errors } = await openNewChat();
    await page.getByRole('button', { name: 'New chat' }).first().click();
    await page.waitForURL((url) => !url.pathname.endsWith(chatId));
    const run = await web.server.startRun(chatId, { steps: 1, tokens: 400, delayMs: 30 });
    const item = page.locator('.chat-item', { has: page.locator(`a[href="/chats/${chatId}"]`) });
    await expect.poll(() => item.locator('.busy-dot').count(), { timeout: 15_000 }).toBe(1);
    await screenshot(page, 'chat-list-busy');
    await web.server.api(`/v1/runs/${run.id}/stop`, { method: 'POST' });
    await expect.poll(() => item.locator('.busy-dot').count(), { timeout: 15_000 }).toBe(0);

    await web.server.api(`/v1/chats/${chatId}`, { method: 'PATCH', body: { title: 'Quarterly plan' } });
    await page.goto(`${web.server.url}/chats/${chatId}`);
    await expect.poll(() => page.title()).toBe('Quarterly plan · Outrun');

    const chats = await page.locator('.chat-item').count();
    const stops = await page.evaluate(
      () =>
        Array.from(
          document.querySelectorAll<HTMLElement>('.chat-list a, .chat-list button, .chat-list input'),
        ).filter((element) => element.tabIndex >= 0).length,
    );
    expect(stops).toBe(chats);

    const firstTabStop = await page.evaluate(
      () =>
        Array.from(document.querySelectorAll<HTMLElement>('a[href], button, input, textarea, select')).find(
          (element) => element.tabIndex >= 0,
        )?.textContent,
    );
    expect(firstTabStop).toBe('Skip to the conversation');
    await page.locator('.skip-link').focus();
    expect(await page.locator('.skip-link').isVisible()).toBe(true);
    await page.keyboard.press('Enter');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('main-content');

    await page.locator(`.chat-list a[href="/chats/${chatId}"]`).focus();
    await page.keyboard.press('F2');
    expect(await page.getByLabel('Chat title').inputValue()).toBe('Quarterly plan');
    expect(errors).toEqual([]);
  });

  it('keeps the composer usable at phone width, without a keyboard hint, in the dark scheme', async () => {
    const { page, errors } = await openNewChat({
      viewport: { width: 390, height: 800 },
      colorScheme: 'dark',
      isMobile: true,
      hasTouch: true,
    });
    await send(page, script({ steps: 1, tokens: 200, delayMs: 30 }));
    await expect.poll(() => page.locator('.status-line').isVisible()).toBe(true);
    expect(await page.getByLabel('Message').isEnabled()).toBe(true);
    expect(await page.locator('.keyboard-hint').isVisible()).toBe(false);
    expect(await page.locator('.composer-hint').innerText()).not.toContain('Esc');
    await send(page, script({ steps: 1, tokens: 2 }));
    await expect.poll(() => page.locator('.queued-note').count()).toBe(1);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await screenshot(page, 'phone-queued');
    await page.locator('.composer').getByRole('button', { name: 'Stop' }).tap();
    await expect
      .poll(async () => (await assistantWords(page)).join(' '), { timeout: 15_000 })
      .toBe(scriptedText(1, 2).trim());
    expect(errors).toEqual([]);
  });
});
