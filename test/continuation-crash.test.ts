import { describe, expect, it } from 'vitest';
import { STORE_KINDS } from './support/databases.ts';
import { client, durableStore, serverProcesses } from './support/durable-store.ts';
import { script } from './support/sse.ts';
import { pollUntil } from './support/wait.ts';

/**
 * A run whose step budget ran out under `onExceeded: "continue"` owes a follow-up from the moment its ending
 * commits (migration 0019): a process killed before it starts that follow-up leaves the debt on record, and
 * the restart starts it, once.
 */
describe.each(STORE_KINDS)('a continuation owed by a dead process on %s', (kind) => {
  const { start, cleanups } = serverProcesses();

  it('is started after the restart when the process died between the parent’s ending and the follow-up', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const first = await start({ ...store.env, OUTRUN_FAULTS: 'run.before-continuation:exit' });
    const api = client(first.url);
    const agent = await api.json('/v1/agents', 'POST', {
      name: 'persistent',
      budget: { maxSteps: 1, onExceeded: 'continue' },
      continuation: { maxRuns: 1 },
    });
    expect(agent.status).toBe(201);
    const chatId = (await api.json('/v1/chats', 'POST', { agentId: agent.body.agent.id })).body.chat
      .id as string;
    const parent = await api.json(`/v1/chats/${chatId}/runs`, 'POST', {
      input: { text: script({ steps: 3, tokens: 2, tool: true }) },
    });
    expect(parent.status).toBe(201);
    // The process exits at the fault point: the parent's ending has committed, its follow-up has not begun.
    expect((await first.exited).code).toBe(137);

    const second = await start(store.env);
    const again = client(second.url);
    const runs = await pollUntil(
      async () => (await again.json(`/v1/chats/${chatId}/runs`)).body.items as Record<string, unknown>[],
      (items) => items.length === 2 && items.every((run) => run.status === 'succeeded'),
      { timeoutMs: 30_000 },
    );
    const parentId = parent.body.run.id as string;
    expect(runs.find((run) => run.id === parentId)).toMatchObject({ status: 'succeeded', stepCount: 1 });
    expect(runs.find((run) => run.id !== parentId)).toMatchObject({
      trigger: 'continue',
      parentRunId: parentId,
      status: 'succeeded',
    });
    expect(second.output()).toContain('started the follow-up a run owed');
  });
});
