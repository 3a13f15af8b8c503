import { describe, expect, it } from 'vitest';
import { script, scriptedText } from '../support/sse.ts';
import { ADMIN_KEY } from '../support/test-server.ts';
import { assistantWords, chromiumAvailable, screenshot, useWebApp } from './browser-support.ts';

const PHONE_DARK = {
  viewport: { width: 390, height: 800 },
  colorScheme: 'dark' as const,
  isMobile: true,
  hasTouch: true,
};

describe.skipIf(!chromiumAvailable())('web app: approvals, budgets and schedules, in Chromium', () => {
  const web = useWebApp({ config: { waitTtlMs: 600_000, schedulePollIntervalMs: 100 } });
  const { open, send, latestRun } = web;
  const chatWithAgent = async (agent: Record<string, unknown>) => {
    const created = await web.server.api('/v1/agents', { method: 'POST', body: agent });
    expect(created.status).toBe(201);
    const chat = await web.server.api('/v1/chats', {
      method: 'POST',
      body: { agentId: created.body.agent.id },
    });
    return chat.body.chat.id as string;
  };

  it('approves a tool call from a phone after a reload, and the laptop tab sees it go on', async () => {
    const chatId = await chatWithAgent({ name: 'Careful', tools: [{ name: 'echo', needsApproval: true }] });
    const laptop = await open(`/chats/${chatId}#key=${ADMIN_KEY}`);
    await send(laptop.page, script({ steps: 2, tokens: 3, tool: true }));
    const card = laptop.page.locator('.approval-card');
    await expect.poll(() => card.count(), { timeout: 15_000 }).toBe(1);
    expect(await card.textContent()).toContain('echo');
    expect(await card.locator('.approval-input').textContent()).toContain('"step": 1');
    await expect.poll(() => laptop.page.locator('.status-line').textContent()).toContain('waiting for you');
    expect(await laptop.page.locator('.status-line .spending').textContent()).toMatch(/tokens · \$/);

    const phone = await open(`/chats/${chatId}#key=${ADMIN_KEY}`, undefined, PHONE_DARK);
    await phone.page.reload();
    const phoneCard = phone.page.locator('.approval-card');
    await expect.poll(() => phoneCard.count(), { timeout: 15_000 }).toBe(1);
    const overflow = await phone.page.evaluate(
      () => document.documentElement.scrollWidth - window.innerWidth,
    );
    expect(overflow).toBeLessThanOrEqual(0);
    const background = await phone.page.evaluate(
      () => getComputedStyle(document.querySelector('.approval-card')!).backgroundColor,
    );
    expect(background).not.toBe('rgb(255, 246, 224)');
    await screenshot(phone.page, 'phone-approval');
    await phoneCard.getByRole('button', { name: 'Approve' }).tap();

    for (const { page } of [phone, laptop]) {
      await expect
        .poll(async () => (await assistantWords(page)).join(' '), { timeout: 15_000 })
        .toBe(scriptedText(2, 3).trim());
      expect(await page.locator('.approval-card').count()).toBe(0);
    }
    const run = await latestRun(chatId);
    expect(run.status).toBe('succeeded');
    // The inspector shows the approved call as it ended (done, with its output), not as it waited.
    await laptop.page.goto(`${web.server.url}/chats/${chatId}/runs/${run.id}`);
    const firstStep = laptop.page.locator('.inspector .step').first();
    await expect.poll(() => firstStep.textContent(), { timeout: 10_000 }).toContain('done');
    expect(await firstStep.textContent()).not.toContain('waiting for approval');
    expect([...laptop.errors, ...phone.errors]).toEqual([]);
  });

  it('denies a tool call with a reason', async () => {
    const chatId = await chatWithAgent({
      name: 'Careful too',
      tools: [{ name: 'echo', needsApproval: true }],
    });
    const { page, errors } = await open(`/chats/${chatId}#key=${ADMIN_KEY}`);
    await send(page, script({ steps: 2, tokens: 3, tool: true }));
    const card = page.locator('.approval-card');
    await expect.poll(() => card.count(), { timeout: 15_000 }).toBe(1);
    await card.getByLabel(/Reason/).fill('not now');
    await card.getByRole('button', { name: 'Deny' }).click();
    await expect.poll(async () => (await latestRun(chatId)).status, { timeout: 15_000 }).toBe('succeeded');
    await expect.poll(() => card.count()).toBe(0);
    expect(errors).toEqual([]);
  });

  it('says a call whose approval a Stop cut off was not answered, in the thread and the inspector', async () => {
    const chatId = await chatWithAgent({ name: 'Stopped', tools: [{ name: 'echo', needsApproval: true }] });
    const { page, errors } = await open(`/chats/${chatId}#key=${ADMIN_KEY}`);
    await send(page, script({ steps: 2, tokens: 3, tool: true }));
    await expect.poll(() => page.locator('.approval-card').count(), { timeout: 15_000 }).toBe(1);
    const state = page.locator('.message-assistant .tool-state');
    expect(await state.textContent()).toBe('waiting for approval');
    await page.locator('.composer').getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => page.locator('.outcome').textContent()).toContain('Stopped on request');
    await expect.poll(() => state.textContent()).toBe('not answered');
    await page.reload();
    await expect.poll(() => state.textContent(), { timeout: 10_000 }).toBe('not answered');

    const run = await latestRun(chatId);
    await page.goto(`${web.server.url}/chats/${chatId}/runs/${run.id}`);
    const inspected = page.locator('.inspector .tool-state');
    await expect.poll(() => inspected.first().textContent(), { timeout: 10_000 }).toBe('not answered');
    expect(errors).toEqual([]);
  });

  it('pauses at the budget and continues with more from the card', async () => {
    const chatId = await chatWithAgent({
      name: 'Thrifty',
      tools: [{ name: 'echo' }],
      budget: { maxSteps: 1, onExceeded: 'pause' },
    });
    const { page, errors } = await open(`/chats/${chatId}#key=${ADMIN_KEY}`, undefined, {
      colorScheme: 'dark',
    });
    await send(page, script({ steps: 2, tokens: 3 }));
    const card = page.locator('.budget-card');
    await expect.poll(() => card.count(), { timeout: 15_000 }).toBe(1);
    expect(await card.textContent()).toContain('reached its steps budget');
    expect(await card.textContent()).toContain('Limit 1 step');
    expect(await card.textContent()).toContain('up to 2 steps');
    await screenshot(page, 'budget-paused');
    await card.getByRole('button', { name: 'Continue with more' }).click();
    await expect
      .poll(async () => (await assistantWords(page)).join(' '), { timeout: 15_000 })
      .toBe(scriptedText(2, 3).trim());
    expect(await card.count()).toBe(0);
    expect((await latestRun(chatId)).status).toBe('succeeded');
    expect(errors).toEqual([]);
  });

  it('labels a step the budget cut as cut, and as redone only once the run continues', async () => {
    const budget = { maxTokens: 40, onExceeded: 'pause' };
    const chatId = await chatWithAgent({ name: 'Cut short', budget });
    const { page, errors } = await open(`/chats/${chatId}#key=${ADMIN_KEY}`);
    const card = page.locator('.budget-card');
    const label = page.locator('.message-assistant .step-interrupted-label');
    const cutStep = page.locator('.inspector .step-interrupted-item');
    await send(page, script({ tokens: 80 }));
    await expect.poll(() => card.count(), { timeout: 15_000 }).toBe(1);
    await expect.poll(() => label.textContent(), { timeout: 10_000 }).toBe('Cut at the budget');
    const continued = await latestRun(chatId);
    expect(continued.waiting).toMatchObject({ reason: 'budget', exceeded: 'tokens' });
    const answer = await web.server.api(`/v1/runs/${continued.id}/continue`, {
      method: 'POST',
      body: { budget: { maxTokens: 100_000 } },
    });
    expect(answer.status).toBe(200);
    await expect
      .poll(async () => (await assistantWords(page)).join(' '), { timeout: 15_000 })
      .toBe(scriptedText(1, 80).trim());
    await expect.poll(() => label.textContent()).toBe('Cut at the budget — redone below');
    await page.goto(`${web.server.url}/chats/${chatId}/runs/${continued.id}`);
    await expect.poll(() => cutStep.textContent(), { timeout: 10_000 }).toContain('cut at the budget');
    expect(await cutStep.textContent()).toContain('redone in the next step');
    await expect
      .poll(() => page.locator('.notable-events').textContent(), { timeout: 10_000 })
      .toContain('Step 1 was cut at the budget.');

    // Stopped while it waits, the run never redoes the step.
    const otherChatId = await chatWithAgent({ name: 'Cut short and stopped', budget });
    await page.goto(`${web.server.url}/chats/${otherChatId}`);
    await send(page, script({ tokens: 80 }));
    await expect.poll(() => card.count(), { timeout: 15_000 }).toBe(1);
    const stopped = await latestRun(otherChatId);
    const stop = await web.server.api(`/v1/runs/${stopped.id}/stop`, { method: 'POST' });
    expect(stop.status).toBe(200);
    await expect.poll(() => card.count(), { timeout: 15_000 }).toBe(0);
    await expect.poll(() => label.textContent(), { timeout: 10_000 }).toBe('Cut at the budget');
    await page.goto(`${web.server.url}/chats/${otherChatId}/runs/${stopped.id}`);
    await expect
      .poll(() => cutStep.textContent(), { timeout: 10_000 })
      .toContain('not redone: the run ended');
    expect(await page.locator('.inspector').textContent()).not.toContain('redone in the next step');
    expect(errors).toEqual([]);
  });

  it('lists, creates with a preview in words, pauses and deletes schedules, with the last fire and its run', async () => {
    const chatId = await web.server.createChat();
    const fired = await web.server.api(`/v1/chats/${chatId}/schedules`, {
      method: 'POST',
      body: {
        at: new Date(Date.now() + 500).toISOString(),
        input: { text: script({ steps: 1, tokens: 2 }) },
      },
    });
    expect(fired.status).toBe(201);
    await expect
      .poll(
        async () => (await web.server.api(`/v1/schedules/${fired.body.schedule.id}`)).body.schedule.lastRunId,
        {
          timeout: 15_000,
        },
      )
      .toMatch(/^run_/);

    const { page, errors } = await open(`/chats/${chatId}/schedules#key=${ADMIN_KEY}`);
    const list = page.locator('.schedule-list li');
    await expect.poll(() => list.count()).toBe(1);
    expect(await list.first().textContent()).toContain('Once,');
    expect(await list.first().getByRole('link', { name: 'its run' }).count()).toBe(1);
    // A one-time schedule that fired is over: its time is past, so it cannot be resumed.
    expect(await list.first().locator('.badge').textContent()).toBe('done');
    expect(await list.first().textContent()).toContain('Ran ');
    expect(await list.first().getByRole('button', { name: 'Resume' }).count()).toBe(0);

    await page.getByLabel(/^Cron/).fill('0 8 * * 1-5');
    await expect.poll(() => page.locator('.cron-preview').textContent()).toBe('Every weekday at 08:00');
    await page.getByLabel('Message', { exact: true }).fill('Morning summary, please.');
    await page.getByRole('button', { name: 'Add schedule' }).click();
    await expect.poll(() => list.count()).toBe(2);
    const created = list.filter({ hasText: 'Every weekday at 08:00' });
    expect(await created.textContent()).toContain('Morning summary, please.');
    await screenshot(page, 'schedules');

    await created.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => created.locator('.badge').textContent()).toBe('paused');
    const stored = (await web.server.api(`/v1/chats/${chatId}/schedules`)).body.items as {
      cron: string | null;
      enabled: boolean;
    }[];
    expect(stored.find((item) => item.cron === '0 8 * * 1-5')?.enabled).toBe(false);
    await created.getByRole('button', { name: 'Delete' }).click();
    await expect.poll(() => list.count()).toBe(1);
    expect(errors).toEqual([]);
  });
});
