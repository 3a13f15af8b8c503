import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createOutrun, type Outrun } from '../src/app.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { ManualClock } from '../src/clock.ts';
import type { RunChunk } from '../src/protocol/chunks.ts';
import { MessageProjector } from '../src/protocol/message-projector.ts';
import type { RunObject } from '../src/protocol/run.ts';
import { MemoryQueue } from '../src/queue/memory-queue.ts';
import { STORE_KINDS } from './support/databases.ts';
import { collectStream, script, type StreamEvent } from './support/sse.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

type Part = { type: string; [key: string]: unknown };

/** The parts `MessageProjector` gives for `events`, as JSON carries them. */
function project(events: StreamEvent[]): Part[] {
  const projector = new MessageProjector();
  for (const { chunk } of events) projector.push(chunk as unknown as RunChunk);
  return JSON.parse(JSON.stringify(projector.parts())) as Part[];
}

const countOf = (parts: Part[], type: string) => parts.filter((part) => part.type === type).length;

/**
 * Invariant 6: the assistant message is a projection of the run's stream. Whatever paths a run took (one
 * execution, a pause, an approval, a resume, a compaction), the message it stores equals `MessageProjector`
 * over its stream, so a client that follows the stream after the message's `streamSeq` ends where it does.
 */
describe.each(STORE_KINDS)('the stored message as the projection of its stream on %s', (kind) => {
  let server: TestServer;
  const others: Outrun[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { config: { leaseMs: 60_000 } });
  });
  afterAll(async () => {
    await server?.close();
  });
  afterEach(async () => {
    for (const other of others.splice(0)) await other.close({ graceMs: 0 });
  });

  async function start(chatId: string, body: Record<string, unknown>): Promise<RunObject> {
    const response = await server.api(`/v1/chats/${chatId}/runs`, { method: 'POST', body });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body.run as RunObject;
  }

  async function chatWithAgent(agent: Record<string, unknown>): Promise<string> {
    const created = await server.api('/v1/agents', { method: 'POST', body: agent });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const chat = await server.api('/v1/chats', { method: 'POST', body: { agentId: created.body.agent.id } });
    return chat.body.chat.id as string;
  }

  async function storedMessage(
    chatId: string,
  ): Promise<{ parts: Part[]; status: string; streamSeq: number | null }> {
    const items = (await server.api(`/v1/chats/${chatId}/messages`)).body.items as {
      parts: Part[];
      status: string;
      streamSeq: number | null;
    }[];
    return items.at(-1)!;
  }

  async function events(runId: string): Promise<StreamEvent[]> {
    return (await collectStream(await server.fetch(`/v1/runs/${runId}/stream`))).events;
  }

  /** The run's stored message equals the projection of its whole stream; returns those parts. */
  async function expectStoredProjection(chatId: string, runId: string): Promise<Part[]> {
    const final = await server.waitForRun(runId);
    const message = await storedMessage(chatId);
    const projected = project(await events(runId));
    expect(message.parts).toEqual(projected);
    // One `data-budget` after each finished step (DESIGN §5), kept in the message as in the stream.
    expect(countOf(projected, 'data-budget')).toBe(final.stepCount);
    return projected;
  }

  /** While the run waits, its message shows the projection of its stream through `streamSeq`. */
  async function expectWaitingProjection(chatId: string, runId: string): Promise<void> {
    const message = await storedMessage(chatId);
    expect(message.status).toBe('streaming');
    const streamSeq = message.streamSeq ?? 0;
    // A waiting run's stream stays open: read it only through `streamSeq`.
    const through =
      streamSeq > 0
        ? (await collectStream(await server.fetch(`/v1/runs/${runId}/stream`), { stopAfter: streamSeq }))
            .events
        : [];
    expect(message.parts).toEqual(project(through));
  }

  it('stores the projection of the stream for a run finished in one execution', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 3, tokens: 3 });
    const parts = await expectStoredProjection(chatId, run.id);
    expect(countOf(parts, 'step-start')).toBe(3);
  });

  it('stores the projection of the stream for a run paused by its step budget and continued', async () => {
    const chatId = await server.createChat();
    const run = await start(chatId, {
      input: { text: script({ steps: 4, tokens: 2, tool: true }) },
      budget: { maxSteps: 2 },
    });
    const paused = await server.waitForRun(run.id, (r) => r.status === 'waiting');
    expect(paused.waiting).toMatchObject({ reason: 'budget', exceeded: 'steps' });
    await expectWaitingProjection(chatId, run.id);
    const continued = await server.api(`/v1/runs/${run.id}/continue`, {
      method: 'POST',
      body: { budget: { maxSteps: 10 } },
    });
    expect(continued.status, JSON.stringify(continued.body)).toBe(200);
    await expectStoredProjection(chatId, run.id);
    expect((await server.waitForRun(run.id)).status).toBe('succeeded');
  });

  it('stores the projection of the stream for a run whose token budget cut a step, continued', async () => {
    const chatId = await server.createChat();
    const run = await start(chatId, {
      input: { text: script({ steps: 2, tokens: 40, tool: true }) },
      budget: { maxTokens: 60 },
    });
    await server.waitForRun(run.id, (r) => r.status === 'waiting');
    await expectWaitingProjection(chatId, run.id);
    await server.api(`/v1/runs/${run.id}/continue`, {
      method: 'POST',
      body: { budget: { maxTokens: 100_000 } },
    });
    const parts = await expectStoredProjection(chatId, run.id);
    expect(countOf(parts, 'data-step-interrupted')).toBe(1);
  });

  it('stores the projection of the stream for a run that waited for an approval and was answered', async () => {
    const chatId = await chatWithAgent({
      name: 'asks first',
      tools: [{ name: 'echo', needsApproval: true }],
    });
    const run = await start(chatId, { input: { text: script({ steps: 2, tokens: 3, tool: true }) } });
    const waiting = await server.waitForRun(run.id, (r) => r.status === 'waiting');
    await expectWaitingProjection(chatId, run.id);
    const approvalId = (waiting.waiting as { approvals: { approvalId: string }[] }).approvals[0]!.approvalId;
    const answered = await server.api(`/v1/runs/${run.id}/approvals`, {
      method: 'POST',
      body: { approvalId, approved: true },
    });
    expect(answered.status).toBe(200);
    const parts = await expectStoredProjection(chatId, run.id);
    expect(countOf(parts, 'data-tool-approval')).toBe(1);
  });

  it('stores the projection of the stream for a run resumed by another worker after its lease ran out', async () => {
    const other = await createOutrun({
      // Runs a lease ahead: to it, this server's leases have run out.
      clock: new ManualClock(new Date(Date.now() + 120_000)),
      database: server.outrun.database,
      logger: pino({ level: 'silent' }),
      bus: new MemoryBus(),
      queue: new MemoryQueue(),
      singleInstance: false,
      worker: true,
      config: { port: 0, host: '127.0.0.1', adminKey: ADMIN_KEY },
    });
    others.push(other);
    await other.start();
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 3, tokens: 40, delayMs: 5 });
    await server.waitForRun(run.id, (r) => r.stepCount >= 1);
    expect(await other.engine.sweep({ all: false })).toBe(1);
    const parts = await expectStoredProjection(chatId, run.id);
    expect((await server.waitForRun(run.id)).attempt).toBe(2);
    expect(countOf(parts, 'data-step-interrupted')).toBe(1);
  });

  it('stores the projection of the stream for a run whose history was compacted', async () => {
    const chatId = await chatWithAgent({ name: 'compacts', context: { maxTokens: 300, keepLastTurns: 1 } });
    const padded = JSON.stringify({ script: { tokens: 3 }, padding: 'lorem ipsum '.repeat(60) });
    for (let turn = 0; turn < 4; turn++) {
      await server.waitForRun((await start(chatId, { input: { text: padded } })).id);
    }
    const run = await start(chatId, { input: { text: script({ steps: 2, tokens: 3 }) } });
    const parts = await expectStoredProjection(chatId, run.id);
    // The history before the first call, then the second step's prompt, which the first step took over again.
    expect(countOf(parts, 'data-compaction')).toBe(2);
  });

  it('stores the projection of the stream for a run whose first call was retried after a context overflow', async () => {
    const chatId = await chatWithAgent({ name: 'overflows', context: { keepLastTurns: 1 } });
    const padded = JSON.stringify({ script: { tokens: 2 }, padding: 'lorem ipsum '.repeat(60) });
    for (let turn = 0; turn < 4; turn++) {
      await server.waitForRun((await start(chatId, { input: { text: padded } })).id);
    }
    // The scripted model refuses prompts over 400 tokens; the history is well over that.
    const text = JSON.stringify({ script: { tokens: 3, contextWindow: 400 } });
    const run = await start(chatId, { input: { text } });
    const parts = await expectStoredProjection(chatId, run.id);
    expect((await server.waitForRun(run.id)).status).toBe('succeeded');
    expect(parts.find((part) => part.type === 'data-compaction')).toMatchObject({
      data: { trigger: 'context_overflow' },
    });
  });
});
