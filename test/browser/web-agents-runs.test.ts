import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { startServerProcess } from '../support/server-process.ts';
import { script, scriptedText } from '../support/sse.ts';
import { ADMIN_KEY } from '../support/test-server.ts';
import {
  assistantWords,
  chromiumAvailable,
  newProfile,
  openTab,
  screenshot,
  useWebApp,
} from './browser-support.ts';

describe.skipIf(!chromiumAvailable())('web app: agents, run chains and the inspector, in Chromium', () => {
  const web = useWebApp({ config: { schedulePollIntervalMs: 100 } });
  const { open, send } = web;

  it('creates an agent in the form, starts a chat with it, and edits it', async () => {
    const { page, errors } = await open(`/agents#key=${ADMIN_KEY}`);
    await page.getByRole('link', { name: 'New agent' }).click();
    await page.getByLabel('Name', { exact: true }).fill('Terse helper');
    await page.getByLabel(/Instructions/).fill('Answer in one line.');
    await page.getByLabel('Tool name').fill('echo');
    await page.getByRole('button', { name: 'Add tool' }).click();
    await page.getByLabel('Needs approval').check();
    await page.getByLabel('Steps', { exact: true }).fill('5');
    await page.getByLabel(/Continuation runs/).fill('2');
    await screenshot(page, 'agent-form');
    await page.getByRole('button', { name: 'Create agent' }).click();
    await page.waitForURL(/\/agents\/agt_/);
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Saved.');
    const agentId = new URL(page.url()).pathname.split('/')[2]!;
    const stored = (await web.server.api(`/v1/agents/${agentId}`)).body.agent;
    expect(stored).toMatchObject({
      name: 'Terse helper',
      instructions: 'Answer in one line.',
      tools: [{ name: 'echo', needsApproval: true }],
      budget: { maxSteps: 5, onExceeded: 'pause' },
      continuation: { maxRuns: 2 },
      autostart: null,
    });

    await page.getByLabel('Name', { exact: true }).fill('Terser helper');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect
      .poll(async () => (await web.server.api(`/v1/agents/${agentId}`)).body.agent.name)
      .toBe('Terser helper');

    await page.getByLabel('Agent for new chats').selectOption({ label: 'Terser helper' });
    await page.getByRole('button', { name: 'New chat' }).first().click();
    await page.waitForURL(/\/chats\/chat_/);
    const chatId = new URL(page.url()).pathname.split('/')[2]!;
    expect((await web.server.api(`/v1/chats/${chatId}`)).body.chat.agentId).toBe(agentId);
    await send(page, script({ echoInput: true }));
    await expect
      .poll(async () => (await assistantWords(page)).join(' '), { timeout: 10_000 })
      .toContain('Answer in one line.');
    expect(errors).toEqual([]);
  });

  it('says which runs a schedule, a continuation or autostart started, links the run before, and filters runs', async () => {
    const quick = script({ steps: 1, tokens: 2 });
    const agent = await web.server.api('/v1/agents', {
      method: 'POST',
      body: {
        name: 'Follows up',
        tools: [{ name: 'schedule_followup' }],
        autostart: {
          text: script({
            steps: 2,
            tokens: 2,
            tool: 'schedule_followup',
            toolInput: { inSeconds: 1, note: quick },
          }),
        },
      },
    });
    expect(agent.status).toBe(201);
    const created = await web.server.api('/v1/chats', {
      method: 'POST',
      body: { agentId: agent.body.agent.id },
    });
    const chatId = created.body.chat.id as string;
    const autostartRun = created.body.run.id as string;
    const runsOf = async () =>
      (await web.server.api(`/v1/chats/${chatId}/runs`)).body.items as { status: string }[];
    await expect
      .poll(async () => (await runsOf()).filter((run) => run.status === 'succeeded').length, {
        timeout: 20_000,
      })
      .toBe(2);
    const schedule = await web.server.api(`/v1/chats/${chatId}/schedules`, {
      method: 'POST',
      body: { at: new Date(Date.now() + 1000).toISOString(), input: { text: quick } },
    });
    expect(schedule.status).toBe(201);
    await expect
      .poll(async () => (await runsOf()).filter((run) => run.status === 'succeeded').length, {
        timeout: 20_000,
      })
      .toBe(3);

    const { page, errors } = await open(`/chats/${chatId}#key=${ADMIN_KEY}`);
    await send(page, script({ steps: 2, failAtStep: 1 }));
    const answers = page.locator('.message-assistant');
    await expect.poll(() => answers.count(), { timeout: 15_000 }).toBe(4);
    await expect
      .poll(() => answers.nth(0).locator('.run-trigger').textContent())
      .toContain('Started when the chat was created');
    expect(await answers.nth(1).locator('.run-trigger').textContent()).toContain('Continued by the agent');
    expect(await answers.nth(2).locator('.run-trigger').textContent()).toContain('Started by a schedule');
    expect(await answers.nth(3).locator('.run-trigger').count()).toBe(0);
    await screenshot(page, 'chat-triggers');

    await answers.nth(1).getByRole('link', { name: 'after an earlier run' }).click();
    await page.waitForURL(new RegExp(`/runs/${autostartRun}$`));
    await expect.poll(() => page.locator('.inspector .run-trigger').textContent()).toContain('autostart');

    await page.getByRole('link', { name: 'Runs' }).click();
    await expect.poll(() => page.locator('.run-list li').count()).toBe(4);
    await page.getByLabel('Started by').selectOption('schedule');
    await expect.poll(() => page.locator('.run-list li').count()).toBe(1);
    expect(await page.locator('.run-list').textContent()).toContain('by a schedule');
    await page.getByLabel('Started by').selectOption('');
    await page.getByLabel('Status').selectOption('failed');
    await expect.poll(() => page.locator('.run-list li').count()).toBe(1);
    await screenshot(page, 'run-history-filtered');
    await page.getByLabel('Status').selectOption('succeeded');
    await expect.poll(() => page.locator('.run-list li').count()).toBe(3);
    expect(errors).toEqual([]);
  });

  it('shows a run resumed after a server crash with its interrupted step once, dimmed, and the final text once', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'outrun-browser-crash-'));
    cpSync(inject('pgliteTemplateDir'), dataDir, { recursive: true });
    const env = {
      OUTRUN_ADMIN_KEY: ADMIN_KEY,
      OUTRUN_DATA_DIR: dataDir,
      DATABASE_URL: '',
      REDIS_URL: '',
    };
    const first = await startServerProcess(env);
    let second: Awaited<ReturnType<typeof startServerProcess>> | undefined;
    try {
      const headers = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
      const chat = await (
        await fetch(`${first.url}/v1/chats`, { method: 'POST', headers, body: '{"title":"crash"}' })
      ).json();
      const chatId = chat.chat.id as string;
      const started = await (
        await fetch(`${first.url}/v1/chats/${chatId}/runs`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ input: { text: script({ steps: 3, tokens: 40, delayMs: 25 }) } }),
        })
      ).json();
      const runId = started.run.id as string;
      // Killed in the middle of a later step: step 1 is finished, the step going has some of its text.
      for (;;) {
        const messages = await (await fetch(`${first.url}/v1/chats/${chatId}/messages`, { headers })).json();
        const text = JSON.stringify(messages.items.at(-1)?.parts ?? []);
        if (text.includes('s2t10')) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      first.child.kill('SIGKILL');
      await first.exited;
      second = await startServerProcess(env);

      const watched = await openTab(await newProfile(web.browser));
      const { page, errors } = watched;
      await page.goto(`${second.url}/chats/${chatId}#key=${ADMIN_KEY}`);
      await expect
        .poll(async () => (await assistantWords(page)).join(' '), { timeout: 30_000 })
        .toBe(scriptedText(3, 40).trim());
      expect(await page.locator('.message-assistant .step-interrupted').count()).toBe(1);
      expect(await page.locator('.step-interrupted-label').textContent()).toContain(
        'Interrupted — redone below',
      );
      // What the cut step had streamed before the crash (possibly nothing yet) is a prefix of a step's text.
      const interrupted = (
        await page.locator('.message-assistant .step-interrupted .markdown').allTextContents()
      )
        .join(' ')
        .trim();
      expect(interrupted).toMatch(/^(s[23]t\d+ ?)*$/);
      await screenshot(page, 'chat-interrupted-step');

      await page.goto(`${second.url}/chats/${chatId}/runs/${runId}`);
      await expect.poll(() => page.locator('.inspector .step-interrupted-item').count()).toBe(1);
      expect(await page.locator('.inspector .step').count()).toBe(4);
      await expect.poll(() => page.locator('.notable-events').textContent()).toContain('was interrupted');
      expect(errors).toEqual([]);
    } finally {
      for (const server of [first, second]) {
        if (server && server.child.exitCode === null && server.child.signalCode === null)
          server.child.kill('SIGKILL');
        await server?.exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
