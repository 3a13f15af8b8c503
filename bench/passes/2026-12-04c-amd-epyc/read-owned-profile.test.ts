// `RunService.readOwned` (a resume's first statement) in a loop under V8's sampling profiler: its time per
// call and where the server's thread spends it, by package and by function. A test file so it can use the
// test server; vitest runs only src/ and test/, so run it from a copy there:
//   cp bench/passes/2026-12-04c-amd-epyc/read-owned-profile.test.ts test/zz.test.ts
//   sed -i 's|../../../test/support|./support|' test/zz.test.ts
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test PATH=node_modules/node/bin:$PATH npx vitest run test/zz.test.ts
import { Session } from 'node:inspector/promises';
import { it } from 'vitest';
import { startTestServer } from '../../../test/support/test-server.ts';
it('profiles readOwned', async () => {
  const server = await startTestServer('postgres');
  const chatId = await server.createChat();
  const run = await server.startRun(chatId, { steps: 1, tokens: 3000, delayMs: 20 });
  await new Promise((r) => setTimeout(r, 1500));
  const o = server.outrun;
  const chat = await o.db.selectFrom('chats').selectAll().where('id', '=', chatId).executeTakeFirstOrThrow();
  const options = {
    runId: run.id,
    workspaceId: chat.workspace_id,
    userId: chat.owner_id,
    after: 10,
    limit: 50,
  };
  for (let i = 0; i < 300; i++) await o.runs.readOwned(options);
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 50 });
  await session.post('Profiler.start');
  const t = performance.now();
  const n = 2000;
  for (let i = 0; i < n; i++) await o.runs.readOwned(options);
  const per = (performance.now() - t) / n;
  const { profile } = await session.post('Profiler.stop');
  const self = new Map<string, number>();
  const total = profile.samples!.length;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const counts = new Map<number, number>();
  for (const s of profile.samples!) counts.set(s, (counts.get(s) ?? 0) + 1);
  for (const [id, c] of counts) {
    const node = byId.get(id)!;
    const f = node.callFrame;
    const key = `${f.functionName || '(anon)'} ${f.url.replace(/.*node_modules\//, '').replace(/.*\/work\/main\//, '')}:${f.lineNumber}`;
    self.set(key, (self.get(key) ?? 0) + c);
  }
  // by package
  const pkg = new Map<string, number>();
  for (const [key, c] of self) {
    const m = key.split(' ')[1] ?? '';
    const p = m.startsWith('src/') ? m.split(':')[0]! : m.split('/')[0]!.split(':')[0]!;
    pkg.set(p || '(native)', (pkg.get(p || '(native)') ?? 0) + c);
  }
  console.log('per call ms', per.toFixed(3), 'samples', total);
  console.log(
    [...pkg]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15)
      .map(([k, c]) => `${((100 * c) / total).toFixed(1)}% ${k}`)
      .join('\n'),
  );
  console.log(
    [...self]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 30)
      .map(([k, c]) => `${((100 * c) / total).toFixed(1)}% ${k}`)
      .join('\n'),
  );
  await server.close();
}, 120000);
