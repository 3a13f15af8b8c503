/**
 * Scratch measurement (2026-12-07 h): a run's cost as its chat grows. One chat; each turn a two-step run whose
 * tool call carries SIZE characters in and returns them (the scripted model's `toolInput` to `echo`), about
 * 2 × SIZE of history a turn; after the first turn and every fifth, 1.6 s to settle, then five one-token runs in
 * the chat: the median wall time (POST → `[DONE]`) and the server's CPU per run. Outrun on PostgreSQL, Node 24.
 *
 *   npx tsx bench/passes/2026-12-07h-intel-xeon/long-chat/long-chat.ts [TURNS] [SIZE]
 */
import { BenchApi } from '../../../support/api.ts';
import { BENCH_ADMIN_KEY, launchServer } from '../../../support/server-process.ts';
import { streamSse } from '../../../support/sse-client.ts';
import { createBenchStore } from '../../../support/store.ts';

const turns = Number(process.argv[2] ?? 30);
const size = Number(process.argv[3] ?? 20_000);
const store = await createBenchStore('postgres');
const server = await launchServer({ mode: 'outrun', store });
const run = async (chatId: string, script: object) => {
  const started = performance.now();
  const r = await streamSse({
    url: `${server.url}/v1/chats/${chatId}/runs`,
    method: 'POST',
    headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ input: { text: JSON.stringify({ script }) } }),
  });
  if (!r.done) throw new Error('no done');
  return performance.now() - started;
};
try {
  const api = new BenchApi(server.url);
  const [warm] = await api.createChats(1);
  for (let i = 0; i < 30; i++) await run(warm!, { steps: 1, tokens: 1, tool: false });
  const [chat] = await api.createChats(1);
  for (let turn = 1; turn <= turns; turn++) {
    // A turn that grows the history: a tool call with `size` characters in, the same out.
    await run(chat!, { steps: 2, tokens: 2, tool: 'echo', toolInput: { text: 'w'.repeat(size) } });
    if (turn % 5 === 0 || turn === 1) {
      await new Promise((r) => setTimeout(r, 1600));
      const walls: number[] = [];
      const before = await server.stats();

      for (let k = 0; k < 5; k++) walls.push(await run(chat!, { steps: 1, tokens: 1, tool: false }));
      const after = await server.stats();

      walls.sort((a, b) => a - b);
      console.log(
        `after ${turn} turns: one-token run wall median ${walls[2]!.toFixed(1)} ms, server CPU ${((after.cpuMicros - before.cpuMicros) / 5000).toFixed(1)} ms/run`,
      );
    }
  }
} finally {
  await server.close();
  await store.cleanup();
}
