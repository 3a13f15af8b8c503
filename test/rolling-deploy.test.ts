import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from './support/databases.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import { answeredText, readSse, script, scriptedText, type StreamEvent } from './support/sse.ts';
import { pollUntil } from './support/wait.ts';

const DATABASE_URL = process.env.DATABASE_URL;
const REDIS_URL = process.env.REDIS_URL;
const ADMIN_KEY = 'rolling-deploy-admin-key-0123456789';
const STEPS = 2;
const TOKENS = 150;

/**
 * A rolling deploy with real processes: `outrun serve` instances on one PostgreSQL and one Redis, replaced one
 * at a time with SIGTERM while runs execute and a client follows one of them. Every run ends `succeeded` with
 * its whole answer, and the client, reconnecting with `Last-Event-ID` to whichever instance is up, reads every
 * event exactly once.
 */
describe.skipIf(!DATABASE_URL || !REDIS_URL)('a rolling deploy of two serve processes', () => {
  const prefix = `outrun-test-${randomBytes(4).toString('hex')}`;
  let database: { url: string; drop: () => Promise<void> };
  const processes: ServerProcess[] = [];

  const start = async () => {
    const started = await startServerProcess({
      DATABASE_URL: database.url,
      REDIS_URL: REDIS_URL!,
      OUTRUN_REDIS_PREFIX: prefix,
      OUTRUN_ADMIN_KEY: ADMIN_KEY,
      // Runs still executing after this are handed to the other instance.
      OUTRUN_SHUTDOWN_GRACE_MS: '300',
    });
    processes.push(started);
    return started;
  };
  const request = (instance: ServerProcess, path: string, init: RequestInit = {}) =>
    fetch(instance.url + path, {
      ...init,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json', ...init.headers },
    });

  beforeAll(async () => {
    database = await createPostgresDatabase();
  });
  afterAll(async () => {
    for (const { child } of processes) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await Promise.all(processes.map((started) => started.exited));
    await database?.drop();
    const redis = new Redis(REDIS_URL!);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('finishes every run and gives a following client each event once, across two replacements', async () => {
    // The next version comes up before the running one is stopped, as a rolling deploy does.
    const [first, second] = await Promise.all([start(), start()]);
    const runIds: string[] = [];
    for (let index = 0; index < 3; index++) {
      const { chat } = await (await request(first, '/v1/chats', { method: 'POST', body: '{}' })).json();
      const started = await request(first, `/v1/chats/${chat.id}/runs`, {
        method: 'POST',
        body: JSON.stringify({ input: { text: script({ steps: STEPS, tokens: TOKENS, delayMs: 30 }) } }),
      });
      expect(started.status).toBe(201);
      runIds.push((await started.json()).run.id);
    }
    const followed = runIds[0]!;

    // The client follows the first run on whichever instance is up, from the last event it has.
    const seen: StreamEvent[] = [];
    let up = first;
    let done = false;
    let reconnects = 0;
    const following = (async () => {
      while (!done) {
        const last = seen.at(-1)?.seq;
        try {
          const response = await request(up, `/v1/runs/${followed}/stream`, {
            headers: last === undefined ? {} : { 'last-event-id': String(last) },
          });
          if (response.status !== 200) throw new Error(`stream answered ${response.status}`);
          for await (const frame of readSse(response.body!)) {
            if (frame.data === '[DONE]') done = true;
            else if (frame.data !== null && frame.id !== null)
              seen.push({ seq: frame.id, chunk: JSON.parse(frame.data) });
          }
        } catch {
          // The instance went away under the stream, or refused it while leaving: reconnect.
        }
        if (!done) {
          reconnects += 1;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    })();

    // Replace the first instance while the runs are mid-answer, then the second.
    await pollUntil(
      () => seen.length,
      (count) => count >= 20,
    );
    first.child.kill('SIGTERM');
    // The next replacement starts while the first is leaving: its start-up is not waited out by the runs.
    const starting = start();
    expect((await first.exited).code, first.output()).toBe(0);
    up = second;
    // The runs go on on the second instance, as their second attempt, before it is stopped in turn.
    for (const runId of runIds) {
      await pollUntil(
        async () => (await (await request(second, `/v1/runs/${runId}`)).json()).run,
        (run) => run.attempt >= 2 && run.status === 'running',
      );
    }
    const third = await starting;
    const before = seen.length;
    await pollUntil(
      () => seen.length,
      (count) => count >= before + 20,
    );
    second.child.kill('SIGTERM');
    expect((await second.exited).code, second.output()).toBe(0);
    up = third;

    for (const runId of runIds) {
      const run = await pollUntil(
        async () => (await (await request(third, `/v1/runs/${runId}`)).json()).run,
        (current) => current.status === 'succeeded' || current.status === 'failed',
      );
      expect(run, runId).toMatchObject({ status: 'succeeded', error: null });
      // Each replacement caught the run mid-answer and handed it on: a new attempt each time.
      expect(run.attempt).toBe(3);
    }
    await following;

    // Every event once, in order, whichever instance sent it; the answer whole.
    expect(seen.map((event) => event.seq)).toEqual(seen.map((_, index) => index + 1));
    expect(answeredText(seen)).toBe(scriptedText(STEPS, TOKENS));
    expect(seen.at(-1)?.chunk).toMatchObject({ type: 'data-run', data: { status: 'succeeded' } });
    expect(reconnects).toBeGreaterThanOrEqual(1);
  });
});
