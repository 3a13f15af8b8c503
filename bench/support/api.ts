import { BENCH_ADMIN_KEY } from './server-process.ts';

/** A JSON client for the benchmark server's API, as the admin. */
export class BenchApi {
  constructor(
    readonly url: string,
    readonly key: string = BENCH_ADMIN_KEY,
  ) {}

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(this.url + path, {
      method,
      headers: {
        authorization: `Bearer ${this.key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
    return JSON.parse(text) as T;
  }

  async createChat(): Promise<string> {
    const { chat } = await this.json<{ chat: { id: string } }>('POST', '/v1/chats', { title: 'bench' });
    return chat.id;
  }

  /** Creates `count` chats, `concurrency` requests at a time. */
  async createChats(count: number, concurrency = 16): Promise<string[]> {
    const ids: string[] = [];
    await forEachLimit(Array.from({ length: count }), concurrency, async () => {
      ids.push(await this.createChat());
    });
    return ids;
  }

  async startRun(chatId: string, text: string, model?: string): Promise<{ id: string; status: string }> {
    const { run } = await this.json<{ run: { id: string; status: string } }>(
      'POST',
      `/v1/chats/${chatId}/runs`,
      {
        input: { text },
        model,
      },
    );
    return run;
  }

  async getRun(runId: string): Promise<{ id: string; status: string; stepCount: number }> {
    const { run } = await this.json<{ run: { id: string; status: string; stepCount: number } }>(
      'GET',
      `/v1/runs/${runId}`,
    );
    return run;
  }

  /** Polls until the run is terminal (at most `timeoutMs`). */
  async waitForRun(runId: string, timeoutMs = 120_000): Promise<{ id: string; status: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const run = await this.getRun(runId);
      if (run.status !== 'pending' && run.status !== 'running') return run;
      if (Date.now() > deadline) throw new Error(`run ${runId} is still ${run.status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  authorization(): Record<string, string> {
    return { authorization: `Bearer ${this.key}` };
  }
}

/** Calls `task` for each item, at most `limit` at a time. */
export async function forEachLimit<T>(
  items: T[],
  limit: number,
  task: (item: T, index: number) => Promise<void>,
) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await task(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
