import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { STORE_KINDS } from './support/databases.ts';
import { client, durableStore, serverProcesses } from './support/durable-store.ts';
import { runUntilExit } from './support/server-process.ts';
import { answeredText, collectStream, messageText, scriptedText, streamedText } from './support/sse.ts';
import { pollUntil } from './support/wait.ts';

describe.each(STORE_KINDS)('crash and restart on %s', (kind) => {
  const { start, cleanups } = serverProcesses();

  it('resumes a run killed mid-stream by kill -9 after the restart: exactly the scripted answer, a dense stream', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const first = await start(store.env);
    const api = client(first.url);
    const { chatId, runId } = await api.startRun({ steps: 3, tokens: 40, delayMs: 10 }, { title: 'crash' });
    // A reader attached before the crash, killed mid-step: it has a finished step and part of the next.
    const seen = await collectStream(await api.stream(`/v1/runs/${runId}/stream`), { stopAfter: 60 });

    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = await start(store.env);
    const again = client(second.url);
    // The reader reconnects where it left off and follows the resumed run to its end.
    const lastSeen = seen.events.at(-1)!.seq;
    const rest = await collectStream(await again.stream(`/v1/runs/${runId}/stream?after=${lastSeen}`));
    expect(rest.done).toBe(true);
    const events = [...seen.events, ...rest.events];
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
    expect(events.some((event) => event.chunk.type === 'data-step-interrupted')).toBe(true);
    expect(answeredText(events)).toBe(scriptedText(3, 40));

    const run = (await again.json(`/v1/runs/${runId}`)).body.run;
    expect(run).toMatchObject({ status: 'succeeded', error: null, attempt: 2, stepCount: 3 });
    // The final message marks the interrupted partial step; without it, the text is the scripted answer.
    const latest = (await again.json(`/v1/chats/${chatId}/runs/latest`)).body;
    expect(latest.message.status).toBe('completed');
    expect(latest.message.parts.some((part: { type: string }) => part.type === 'data-step-interrupted')).toBe(
      true,
    );
    expect(messageText(latest.message.parts)).toBe(scriptedText(3, 40));
  });

  it('ends a run whose process died inside its ending transaction, on restart, with its whole answer', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const first = await start({ ...store.env, OUTRUN_FAULTS: 'run.settle.before-commit:exit' });
    const api = client(first.url);
    const { runId } = await api.startRun({ tokens: 3 });
    const exit = await first.exited;
    expect(exit.code).toBe(137);

    const second = await start(store.env);
    const run = await pollUntil(
      async () => (await client(second.url).json(`/v1/runs/${runId}`)).body.run,
      (current) => current.status === 'succeeded',
    );
    expect(run).toMatchObject({ status: 'succeeded', stepCount: 1 });
    const replay = await collectStream(await client(second.url).stream(`/v1/runs/${runId}/stream`));
    expect(streamedText(replay.events)).toBe(scriptedText(1, 3));
  });

  // A step is recorded (its `run_steps` row, the run's step count) when the next one starts: the process dies
  // with step 1's events durable, its tool called, and its record not written.
  it('resumes a run killed between a step’s end and its record: every step recorded once, each tool called once', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const first = await start({ ...store.env, OUTRUN_FAULTS: 'run.before-step-record:exit' });
    const api = client(first.url);
    const { runId } = await api.startRun({ steps: 3, tokens: 5 });
    expect((await first.exited).code).toBe(137);

    const second = await start(store.env);
    const again = client(second.url);
    const run = await pollUntil(
      async () => (await again.json(`/v1/runs/${runId}`)).body.run,
      (current) => current.status === 'succeeded',
    );
    expect(run).toMatchObject({ error: null, attempt: 2, stepCount: 3 });
    const steps = (await again.json(`/v1/runs/${runId}/steps`)).body.items as { step: number }[];
    expect(steps.map((item) => item.step)).toEqual([1, 2, 3]);
    const replay = await collectStream(await again.stream(`/v1/runs/${runId}/stream`));
    expect(replay.events.map((event) => event.seq)).toEqual(replay.events.map((_, index) => index + 1));
    expect(answeredText(replay.events)).toBe(scriptedText(3, 5));
    // Steps 1 and 2 each called the echo tool once, and each call has one output: none was called again.
    const calls = replay.events.filter((event) => event.chunk.type === 'tool-input-available');
    const outputs = replay.events.filter((event) => event.chunk.type === 'tool-output-available');
    expect(calls).toHaveLength(2);
    expect(outputs.map((event) => event.chunk.toolCallId)).toEqual(
      calls.map((event) => event.chunk.toolCallId),
    );
  });

  it('keeps a reader streaming through the SIGTERM grace period, then hands the run back; the restart finishes it', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const server = await start({ ...store.env, OUTRUN_SHUTDOWN_GRACE_MS: '1500' });
    const api = client(server.url);
    const { runId } = await api.startRun({ steps: 2, tokens: 150, delayMs: 20 });
    // Ended by the shutdown once the run is handed back: cleanly, without `[DONE]` (reconnect), not cut.
    const reader = collectStream(await api.stream(`/v1/runs/${runId}/stream`));
    await pollUntil(
      () => api.json(`/v1/runs/${runId}`),
      (response) => response.body.run.status === 'running',
    );
    const signalledAt = Date.now();
    server.child.kill('SIGTERM');
    // A request during the grace period is still answered (readiness says 503 so no new work comes),
    // once the process has handled the signal.
    await pollUntil(
      async () => (await fetch(`${server.url}/readyz`)).status,
      (status) => status === 503,
      { intervalMs: 20 },
    );
    const cut = await reader;
    expect((await server.exited).code).toBe(0);
    // A hand-back on shutdown is what a restart expects: nothing warns or errs about it.
    const complaints = server
      .output()
      .split('\n')
      .filter((line) => /"level":(40|50|60)/.test(line));
    expect(complaints).toEqual([]);
    // The reader kept receiving for the grace period: events kept arriving well after the signal.
    expect(Date.now() - signalledAt).toBeGreaterThanOrEqual(1_000);
    expect(cut.done).toBe(false);
    expect(cut.events.length).toBeGreaterThan(0);
    expect(cut.events.map((event) => event.seq)).toEqual(cut.events.map((_, index) => index + 1));

    const second = await start(store.env);
    const again = client(second.url);
    const run = await pollUntil(
      async () => (await again.json(`/v1/runs/${runId}`)).body.run,
      (current) => current.status === 'succeeded',
    );
    expect(run.error).toBeNull();
    const replay = await collectStream(await again.stream(`/v1/runs/${runId}/stream`));
    expect(replay.events.map((event) => event.seq)).toEqual(replay.events.map((_, index) => index + 1));
    expect(answeredText(replay.events)).toBe(scriptedText(2, 150));
    const statuses = replay.events
      .filter((event) => event.chunk.type === 'data-run')
      .map((event) => (event.chunk.data as { status: string }).status);
    expect(statuses).toEqual(['pending', 'running', 'pending', 'running', 'succeeded']);
  });

  it('ends a run aborted/lease_expired after exactly OUTRUN_MAX_ATTEMPTS executions', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    // Single-instance mode, as `start` runs the others (`runUntilExit` passes on the test run's REDIS_URL): it
    // resumes the run at once instead of after the killed process's lease.
    const dying = {
      ...store.env,
      REDIS_URL: '',
      OUTRUN_MAX_ATTEMPTS: '2',
      OUTRUN_FAULTS: 'run.before-loop:exit',
    };
    // The first process starts the run and dies as it executes; so does the next one, resuming it.
    const first = await start({
      ...store.env,
      OUTRUN_MAX_ATTEMPTS: '2',
      OUTRUN_FAULTS: 'run.before-loop:delay=400',
    });
    const api = client(first.url);
    const { runId } = await api.startRun({ tokens: 3 });
    await pollUntil(
      () => api.json(`/v1/runs/${runId}`),
      (response) => response.body.run.status === 'running',
    );
    first.child.kill('SIGKILL');
    await first.exited;
    expect((await runUntilExit(dying)).code).toBe(137);

    const last = await start({ ...store.env, OUTRUN_MAX_ATTEMPTS: '2' });
    const run = (await client(last.url).json(`/v1/runs/${runId}`)).body.run;
    expect(run).toMatchObject({ status: 'aborted', attempt: 2, error: { code: 'lease_expired' } });
  });

  it('delivers the webhook of a status change made just before a kill -9, after the restart', async () => {
    const store = await durableStore(kind);
    cleanups.push(store.cleanup);
    const env = {
      ...store.env,
      OUTRUN_ALLOW_PRIVATE_URLS: 'true',
      OUTRUN_WEBHOOK_POLL_INTERVAL_MS: '200',
      // A claim the killed process held mid-attempt runs out quickly.
      OUTRUN_WEBHOOK_CLAIM_LEASE_MS: '1000',
    };
    // The receiver is down while the first process runs, so the delivery cannot happen before the kill.
    const received: { headers: IncomingHttpHeaders; body: string }[] = [];
    const receiver = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        received.push({ headers: request.headers, body });
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as AddressInfo).port;
    await new Promise<void>((resolve) => receiver.close(() => resolve()));

    const first = await start(env);
    const api = client(first.url);
    const hook = await api.json('/v1/webhooks', 'POST', {
      url: `http://127.0.0.1:${port}/hook`,
      events: ['run.succeeded'],
    });
    expect(hook.status).toBe(201);
    const { runId } = await api.startRun({ tokens: 3 });
    await pollUntil(
      () => api.json(`/v1/runs/${runId}`),
      (response) => response.body.run.status === 'succeeded',
    );
    first.child.kill('SIGKILL');
    await first.exited;

    receiver.listen(port, '127.0.0.1');
    cleanups.push(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
    await start(env);
    await pollUntil(
      async () => received.length,
      (count) => count > 0,
      { timeoutMs: 30_000 },
    );
    const delivery = received[0]!;
    const verified = new Webhook(hook.body.secret as string).verify(delivery.body, {
      'webhook-id': String(delivery.headers['webhook-id']),
      'webhook-timestamp': String(delivery.headers['webhook-timestamp']),
      'webhook-signature': String(delivery.headers['webhook-signature']),
    }) as { type: string; data: { run: { id: string; status: string } } };
    expect(verified).toMatchObject({
      type: 'run.succeeded',
      data: { run: { id: runId, status: 'succeeded' } },
    });
  });
});
