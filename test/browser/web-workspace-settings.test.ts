import type { Page } from 'playwright-core';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { ADMIN_KEY } from '../support/test-server.ts';
import { startReceiver, type Received } from '../support/webhooks.ts';
import { chromiumAvailable, screenshot, useWebApp } from './browser-support.ts';

function headersOf(received: Received): Record<string, string> {
  return Object.fromEntries(Object.entries(received.headers).map(([name, value]) => [name, String(value)]));
}

/** The words of a limit's meter, as a screen reader reads them. */
const meterText = (page: Page, name: string) =>
  page.getByRole('meter', { name, exact: true }).getAttribute('aria-valuetext');

describe.skipIf(!chromiumAvailable())('web app: usage and webhooks, in Chromium', () => {
  // The receiver listens on 127.0.0.1.
  const web = useWebApp({ config: { allowPrivateUrls: true } });
  const { open } = web;
  const storedQuota = async () => (await web.server.api('/v1/workspaces/current/quota')).body;

  it('shows the day’s usage against the limits an admin sets, refuses a bad value, and removes the limits', async () => {
    const { page, errors } = await open(`/usage#key=${ADMIN_KEY}`);
    await expect.poll(() => page.getByText('No limits', { exact: true }).isVisible()).toBe(true);
    expect(await page.title()).toBe('Usage · Outrun');
    expect(await page.locator('.usage').textContent()).toMatch(/resets in \d+ (h|min)/);

    await page.getByLabel('Tokens per day').fill('10,000');
    await page.getByLabel('Cost per day (USD)').fill('5');
    await page.getByLabel('Runs per minute').fill('30');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect
      .poll(async () => (await storedQuota()).quota)
      .toEqual({ tokensPerDay: 10_000, costUsdPerDay: 5, runsPerMinute: 30 });
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Saved.');
    expect(await meterText(page, 'Tokens today')).toBe('0 of 10,000 tokens today');
    expect(await meterText(page, 'Cost today')).toBe('$0 of $5.00 today');

    const chatId = await web.server.createChat();
    await web.server.waitForRun((await web.server.startRun(chatId, { steps: 1, tokens: 20 })).id);
    const used = (await storedQuota()).usage.tokens as number;
    expect(used).toBeGreaterThan(0);
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect
      .poll(() => meterText(page, 'Tokens today'))
      .toBe(`${used.toLocaleString('en-US')} of 10,000 tokens today`);
    expect(await meterText(page, 'Runs in the last minute')).toMatch(
      /^[1-9]\d* of 30 runs in the last minute$/,
    );
    await screenshot(page, 'usage');

    await page.getByLabel('Tokens per day').fill('1.5');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('tokensPerDay');
    expect((await storedQuota()).quota).toEqual({
      tokensPerDay: 10_000,
      costUsdPerDay: 5,
      runsPerMinute: 30,
    });
    expect(await meterText(page, 'Tokens today')).toContain('of 10,000 tokens today');

    await page.getByRole('button', { name: 'Remove limits' }).click();
    await expect.poll(() => page.getByText('No limits', { exact: true }).isVisible()).toBe(true);
    expect((await storedQuota()).quota).toBeNull();
    expect(await page.getByRole('meter').count()).toBe(0);
    expect(await page.getByLabel('Tokens per day').inputValue()).toBe('');
    expect(errors).toEqual([]);
  });

  it('shows a member the usage without the limits form, and no webhooks', async () => {
    const limits = { tokensPerDay: 50_000, runsPerMinute: 20 };
    await web.server.api('/v1/workspaces/current/quota', { method: 'PATCH', body: { quota: limits } });
    try {
      const memberKey = await web.server.createUser('member@example.com');
      const { page, errors } = await open(`/usage#key=${memberKey}`);
      await expect.poll(() => meterText(page, 'Tokens today')).toMatch(/ of 50,000 tokens today$/);
      expect(await page.getByRole('meter', { name: 'Cost today' }).count()).toBe(0);
      expect(await page.locator('.usage').textContent()).toContain('no limit');
      expect(await page.getByRole('button', { name: 'Save' }).count()).toBe(0);
      expect(await page.getByLabel('Tokens per day').count()).toBe(0);
      expect(await page.getByRole('link', { name: 'Usage' }).isVisible()).toBe(true);
      expect(await page.getByRole('link', { name: 'Webhooks' }).count()).toBe(0);

      await page.goto(`${web.server.url}/webhooks`);
      await expect
        .poll(() => page.locator('.main').textContent())
        .toContain('Only workspace admins manage webhooks.');
      expect(errors).toEqual([]);
    } finally {
      await web.server.api('/v1/workspaces/current/quota', { method: 'PATCH', body: { quota: null } });
    }
  });

  it('adds a webhook, shows its secret once, verifies a real delivery with it, retries it, rotates the secret, disables and enables it, then deletes it', async () => {
    const receiver = await startReceiver(() => 204);
    try {
      const { page, errors } = await open(`/usage#key=${ADMIN_KEY}`);
      await page.getByRole('link', { name: 'Webhooks' }).click();
      await page.waitForURL(/\/webhooks$/);
      await expect.poll(() => page.getByText('No webhooks yet.').isVisible()).toBe(true);

      await page.getByLabel('URL').fill(receiver.url);
      for (const event of ['run.succeeded', 'run.failed', 'run.aborted', 'run.waiting']) {
        expect(await page.getByLabel(event).isChecked()).toBe(true);
      }
      await page.getByLabel('run.waiting').uncheck();
      await page.getByRole('button', { name: 'Add webhook' }).click();
      const secretField = page.getByLabel(/Signing secret/);
      await expect.poll(() => secretField.inputValue()).toMatch(/^whsec_/);
      const secret = await secretField.inputValue();
      expect(await secretField.getAttribute('readonly')).not.toBeNull();
      expect(await page.locator('.webhook-secret').textContent()).toContain('will not be shown again');

      const listed = (await web.server.api('/v1/webhooks')).body.items;
      expect(listed).toHaveLength(1);
      expect(listed[0]).toMatchObject({
        url: receiver.url,
        events: ['run.succeeded', 'run.failed', 'run.aborted'],
      });
      expect(listed[0]).not.toHaveProperty('secret');
      expect(await page.locator('.webhook-list').textContent()).toContain(receiver.url);

      const chatId = await web.server.createChat();
      const run = await web.server.waitForRun(
        (await web.server.startRun(chatId, { steps: 1, tokens: 2 })).id,
      );
      await expect.poll(() => receiver.received.length, { timeout: 15_000 }).toBeGreaterThan(0);
      const [request] = receiver.received;
      const payload = new Webhook(secret).verify(request!.body, headersOf(request!)) as {
        type: string;
        data: { run: { id: string } };
      };
      expect(payload.type).toBe('run.succeeded');
      expect(payload.data.run.id).toBe(run.id);

      await page.getByRole('button', { name: 'Deliveries' }).click();
      const deliveries = page.getByRole('table', { name: 'Latest deliveries' });
      await expect
        .poll(
          async () => {
            await page.getByRole('button', { name: 'Refresh deliveries' }).click();
            return deliveries
              .locator('tbody tr')
              .first()
              .textContent({ timeout: 1000 })
              .catch(() => '');
          },
          { timeout: 10_000 },
        )
        .toMatch(/run\.succeeded\s*delivered\s*1\s*204/);
      await screenshot(page, 'webhooks');

      // Retry sends the delivered delivery again, with the same webhook-id.
      await deliveries.locator('tbody tr').first().getByRole('button', { name: 'Retry' }).click();
      await expect.poll(() => receiver.received.length, { timeout: 10_000 }).toBe(2);
      expect(receiver.received[1]!.headers['webhook-id']).toBe(receiver.received[0]!.headers['webhook-id']);

      await page.reload();
      await expect.poll(() => page.locator('.webhook-list').textContent()).toContain(receiver.url);
      expect(await page.getByLabel(/Signing secret/).count()).toBe(0);

      // Rotating asks first, then shows the new secret once; the old one keeps signing for a day.
      await page.getByRole('button', { name: `Rotate secret of ${receiver.url}` }).click();
      expect(await page.getByText('Rotate the signing secret?').isVisible()).toBe(true);
      await page.getByRole('button', { name: 'Rotate', exact: true }).click();
      const rotatedField = page.getByLabel(/New signing secret/);
      await expect.poll(() => rotatedField.inputValue()).toMatch(/^whsec_/);
      const rotated = await rotatedField.inputValue();
      expect(rotated).not.toBe(secret);
      expect(await page.locator('.webhook-secret').textContent()).toContain('previous secret too until');
      await expect
        .poll(() => page.locator('.webhook-list').textContent())
        .toContain('previous secret signs until');
      await page.getByRole('button', { name: 'Done' }).click();
      expect(await page.getByLabel(/New signing secret/).count()).toBe(0);

      // Disabled, its finished deliveries cannot be retried; enabled again, they can.
      await page.getByRole('button', { name: `Disable ${receiver.url}` }).click();
      await expect.poll(async () => (await web.server.api('/v1/webhooks')).body.items[0].enabled).toBe(false);
      const disabledBadge = page.locator('.webhook-list').getByText('disabled', { exact: true });
      await expect.poll(() => disabledBadge.isVisible()).toBe(true);
      await page.getByRole('button', { name: 'Deliveries' }).click();
      const retryButton = deliveries.locator('tbody tr').first().getByRole('button', { name: 'Retry' });
      await expect.poll(() => retryButton.isDisabled()).toBe(true);
      await page.getByRole('button', { name: `Enable ${receiver.url}` }).click();
      await expect.poll(async () => (await web.server.api('/v1/webhooks')).body.items[0].enabled).toBe(true);
      await expect.poll(() => retryButton.isEnabled()).toBe(true);
      expect(await disabledBadge.count()).toBe(0);

      await page.getByRole('button', { name: `Delete ${receiver.url}` }).click();
      expect(await page.getByText('Delete this webhook?').isVisible()).toBe(true);
      await page.getByRole('button', { name: 'Delete', exact: true }).click();
      await expect.poll(async () => (await web.server.api('/v1/webhooks')).body.items).toEqual([]);
      await expect.poll(() => page.getByText('No webhooks yet.').isVisible()).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      await receiver.close();
    }
  });
});
