import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loggableUrl } from '../src/http/request-observer.ts';
import { captureLogger } from './support/logger.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

describe('request observability', () => {
  let server: TestServer;
  const { logger, records } = captureLogger<{ method: string; url: string; status: number; ms: number }>();

  beforeAll(async () => {
    server = await startTestServer('pglite', { logger });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('logs one debug line per request with method, URL, status and duration', async () => {
    const chatId = await server.createChat();
    await server.api(`/v1/chats/${chatId}/messages?limit=5`);
    const line = records.find((record) => record.msg === 'request' && record.url?.includes('/messages'));
    expect(line).toMatchObject({ level: 20, method: 'GET', status: 200 });
    expect(line!.url).toBe(`/v1/chats/${chatId}/messages?limit=5`);
    expect(typeof line!.ms).toBe('number');
  });

  it('never logs a credential from the query string', () => {
    expect(loggableUrl('/v1/runs/run_1/stream?after=3&access_token=secret')).toBe(
      '/v1/runs/run_1/stream?after=3&access_token=***',
    );
    expect(loggableUrl('/v1/chats')).toBe('/v1/chats');
  });

  it('measures HTTP latency by route pattern, method and status, including streams', async () => {
    const chatId = await server.createChat();
    const run = await server.startRun(chatId, { steps: 1, tokens: 2 });
    await server.waitForRun(run.id);
    await (await server.fetch(`/v1/runs/${run.id}/stream`)).text();
    await server.api(`/v1/runs/run_${'0'.repeat(32)}`);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(
      /^outrun_http_request_duration_seconds_count\{route="\/v1\/runs\/:runId",method="GET",status="200"\} [1-9]/m,
    );
    expect(text).toMatch(
      /^outrun_http_request_duration_seconds_count\{route="\/v1\/runs\/:runId",method="GET",status="404"\} 1/m,
    );
    expect(text).toMatch(
      /^outrun_http_request_duration_seconds_count\{route="\/v1\/runs\/:runId\/stream",method="GET",status="200"\} 1/m,
    );
    expect(text).toMatch(/^outrun_queue_depth 0/m);
    expect(text).not.toContain(run.id);
  });
});
