import type { useChat as useChatHook } from '@ai-sdk/react';
import type { UIMessage } from 'ai';
import { Window } from 'happy-dom';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutrunClient, type OutrunClient } from '../../src/client/index.ts';
import { script, scriptedText } from '../support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from '../support/test-server.ts';
import { waitUntil } from '../support/wait.ts';

type UseChatHelpers = ReturnType<typeof useChatHook>;

interface Rendered {
  /** Every state useChat rendered with, in order. */
  renders: Array<{ status: string; messages: UIMessage[]; error: Error | undefined }>;
  /** The status of each response the transport received. */
  responses: number[];
  current: () => UseChatHelpers;
  unmount: () => void;
}

function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((part) => (part.type === 'text' ? part.text : '')).join('');
}

/**
 * Drives the real `useChat` of `@ai-sdk/react` with `DefaultChatTransport`, rendered by react-dom into a
 * happy-dom document, against a running Outrun server. Only `window` and `document` come from happy-dom;
 * fetch and streams stay Node's.
 */
describe('AI SDK useChat against Outrun', () => {
  let server: TestServer;
  let client: OutrunClient;
  let windowInstance: Window;
  let removeGlobals: (() => void) | undefined;
  let render: (options: {
    chatId: string;
    messages?: UIMessage[];
    resume?: boolean;
    sendAutomaticallyWhen?: Parameters<typeof useChatHook>[0] extends infer O
      ? O extends { sendAutomaticallyWhen?: infer W }
        ? W
        : never
      : never;
  }) => Rendered;

  beforeAll(async () => {
    server = await startTestServer('pglite', { config: { keepAliveMs: 200 } });
    client = createOutrunClient({ baseUrl: server.url, apiKey: ADMIN_KEY });
    windowInstance = new Window({ url: 'http://localhost/' });
    Object.assign(globalThis, { window: windowInstance, document: windowInstance.document });
    // Node 20 has no `navigator`, which react-dom reads when it loads.
    const addedNavigator = !('navigator' in globalThis);
    if (addedNavigator) Object.assign(globalThis, { navigator: windowInstance.navigator });
    removeGlobals = () => {
      Reflect.deleteProperty(globalThis, 'window');
      Reflect.deleteProperty(globalThis, 'document');
      if (addedNavigator) Reflect.deleteProperty(globalThis, 'navigator');
    };
    const { createElement } = await import('react');
    const { createRoot } = await import('react-dom/client');
    const { useChat } = await import('@ai-sdk/react');
    const { DefaultChatTransport } = await import('ai');

    render = ({ chatId, messages, resume, sendAutomaticallyWhen }) => {
      const rendered: Rendered = {
        renders: [],
        responses: [],
        current: () => latest!,
        unmount: () => root.unmount(),
      };
      let latest: UseChatHelpers | undefined;
      const transport = new DefaultChatTransport({
        api: `${server.url}/v1/ui/chats`,
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
        fetch: async (input, init) => {
          const response = await fetch(input, init);
          rendered.responses.push(response.status);
          return response;
        },
      });
      function Probe() {
        latest = useChat({ id: chatId, messages, resume, transport, sendAutomaticallyWhen });
        rendered.renders.push({ status: latest.status, messages: latest.messages, error: latest.error });
        return null;
      }
      const container = windowInstance.document.createElement('div');
      const root = createRoot(container as unknown as Element);
      root.render(createElement(Probe));
      return rendered;
    };
  });
  afterAll(async () => {
    await server?.close();
    await windowInstance?.happyDOM.close();
    removeGlobals?.();
  });

  it('sends a message and streams the run into one assistant message', async () => {
    const chat = await client.createChat();
    const view = render({ chatId: chat.id });
    await waitUntil(() => view.renders.length > 0);
    await view.current().sendMessage({ text: script({ steps: 2, tokens: 10, delayMs: 5 }) });
    await waitUntil(() => view.current().status === 'ready');
    view.unmount();

    const messages = view.current().messages;
    expect(messages.map((message) => message.role)).toEqual(['user', 'assistant']);
    expect(textOf(messages[1])).toBe(scriptedText(2, 10));
    // Run lifecycle chunks are transient: they never become parts of the message.
    expect(messages[1]!.parts.some((part) => part.type === 'data-run')).toBe(false);
    const latest = await client.latestRun(chat.id);
    expect(messages[1]!.id).toBe(latest.run!.assistantMessageId);
    expect(latest.run!.status).toBe('succeeded');
  });

  it('resumes a run that is still going and shows its text exactly once', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 3, tokens: 30, delayMs: 15 }) },
    });
    await server.waitForRun(run.id, (current) => current.stepCount >= 1);
    // A reloaded page starts from the server's messages, the assistant one holding the finished step.
    const initial = (await client.allMessages(chat.id)).map(
      ({ id, role, parts }) => ({ id, role, parts }) as UIMessage,
    );
    expect(textOf(initial[1]).length).toBeGreaterThan(0);

    const view = render({ chatId: chat.id, messages: initial, resume: true });
    await waitUntil(() => view.renders.some((state) => state.status === 'streaming'));
    await waitUntil(() => view.current().status === 'ready');
    view.unmount();

    const expected = scriptedText(3, 30);
    for (const state of view.renders) {
      expect(state.messages.filter((message) => message.role === 'assistant')).toHaveLength(1);
      expect(expected.startsWith(textOf(state.messages.at(-1)))).toBe(true);
    }
    const messages = view.current().messages;
    expect(messages.map((message) => message.id)).toEqual(initial.map((message) => message.id));
    expect(textOf(messages[1])).toBe(expected);
    expect((await client.getRun(run.id)).status).toBe('succeeded');
  });

  it('leaves the messages as they are when there is nothing to resume (204)', async () => {
    const chat = await client.createChat();
    const response = await server.fetch(`/v1/ui/chats/${chat.id}/stream`);
    expect(response.status).toBe(204);
    const view = render({ chatId: chat.id, messages: [], resume: true });
    await waitUntil(() => view.responses.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    view.unmount();
    expect(view.responses).toEqual([204]);
    expect(view.current()).toMatchObject({ status: 'ready', messages: [], error: undefined });
  });

  it('reports a send during an active run as an error and keeps the run going', async () => {
    const chat = await client.createChat();
    const run = await client.startRun(chat.id, {
      input: { text: script({ steps: 2, tokens: 50, delayMs: 10 }) },
    });
    const view = render({ chatId: chat.id });
    await waitUntil(() => view.renders.length > 0);
    await view.current().sendMessage({ text: 'hello' });
    await waitUntil(() => view.current().status === 'error');
    view.unmount();
    expect(view.current().error?.message).toContain('run_already_active');
    expect((await server.waitForRun(run.id)).status).toBe('succeeded');
  });

  it('rejects a useChat id that is not an Outrun chat id with a clear 400', async () => {
    const response = await server.api('/v1/ui/chats', {
      method: 'POST',
      body: {
        id: 'generated-by-useChat',
        messages: [{ id: 'm1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }],
      },
    });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_id');
    expect(response.body.error.message).toContain('POST /v1/chats');
  });

  it('answers a tool approval with addToolApprovalResponse and sendAutomaticallyWhen, and the run goes on', async () => {
    const { lastAssistantMessageIsCompleteWithApprovalResponses } = await import('ai');
    const agent = await server.api('/v1/agents', {
      method: 'POST',
      body: { name: 'asks first', tools: [{ name: 'echo', needsApproval: true }] },
    });
    const chatId = (await server.api('/v1/chats', { method: 'POST', body: { agentId: agent.body.agent.id } }))
      .body.chat.id as string;
    const view = render({
      chatId,
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    });
    await waitUntil(() => view.renders.length > 0);
    await view.current().sendMessage({ text: script({ steps: 2, tokens: 3, tool: true }) });
    // The response ends when the run starts waiting; the tool part asks for approval.
    await waitUntil(() => view.current().status === 'ready');
    const asking = view
      .current()
      .messages[1]!.parts.find((part) => 'state' in part && part.state === 'approval-requested') as
      { approval: { id: string } } | undefined;
    expect(asking).toBeDefined();
    expect((await client.latestRun(chatId)).run!.status).toBe('waiting');

    await view.current().addToolApprovalResponse({ id: asking!.approval.id, approved: true });
    await waitUntil(async () => (await client.latestRun(chatId)).run!.status === 'succeeded');
    await waitUntil(
      () => view.current().status === 'ready' && textOf(view.current().messages[1]) === scriptedText(2, 3),
    );
    view.unmount();
    const messages = view.current().messages;
    expect(messages.map((message) => message.role)).toEqual(['user', 'assistant']);
    const tool = messages[1]!.parts.find((part) => part.type === 'tool-echo') as
      { state: string } | undefined;
    expect(tool?.state).toBe('output-available');
    expect(view.responses.filter((status) => status === 200)).toHaveLength(2);

    // The same answer again, after the run ended: useChat's route and the approvals route say the same, also
    // once a later run of the chat ended; an approval no run had is `run_not_waiting` on both.
    const runId = (await client.latestRun(chatId)).run!.id;
    const replay = (approvalId: string) =>
      server.api('/v1/ui/chats', {
        method: 'POST',
        body: {
          id: chatId,
          messages: [
            {
              id: 'm2',
              role: 'assistant',
              parts: [
                {
                  type: 'tool-echo',
                  state: 'approval-responded',
                  approval: { id: approvalId, approved: true },
                },
              ],
            },
          ],
        },
      });
    const direct = (approvalId: string) =>
      server.api(`/v1/runs/${runId}/approvals`, { method: 'POST', body: { approvalId, approved: true } });
    const sayAlike = async (approvalId: string, expected: Record<string, unknown>) => {
      for (const answer of [await replay(approvalId), await direct(approvalId)]) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(409);
        expect(answer.body.error).toMatchObject(expected);
      }
    };
    await sayAlike(asking!.approval.id, { code: 'approval_already_answered', approved: true });
    const later = await client.startRun(chatId, { input: { text: script({ steps: 1, tokens: 2 }) } });
    await server.waitForRun(later.id);
    await sayAlike(asking!.approval.id, { code: 'approval_already_answered', approved: true });
    await sayAlike('no-such-approval', { code: 'run_not_waiting' });
  });
});
