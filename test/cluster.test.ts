import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePortPair } from './support/ports.ts';
import { collectStream, script } from './support/sse.ts';

const SCRIPT = fileURLToPath(new URL('../scripts/cluster.ts', import.meta.url));
const hasServices = Boolean(process.env.DATABASE_URL && process.env.REDIS_URL);

interface Cluster {
  urls: string[];
  adminKey: string;
  databaseUrl: string;
  pids: Record<string, number>;
}

describe.runIf(hasServices)('npm run cluster (2 serve, 2 workers on PostgreSQL + Redis)', () => {
  let child: ChildProcess;
  let cluster: Cluster;
  let output = '';

  beforeAll(async () => {
    const suffix = randomBytes(4).toString('hex');
    const port = await freePortPair();
    child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        SCRIPT,
        '--port',
        String(port),
        '--database',
        `outrun_cluster_${suffix}`,
        '--redis-prefix',
        `outrun-cluster-${suffix}`,
        '--drop',
        '--quiet',
      ],
      { env: { ...process.env, OUTRUN_ADMIN_KEY: '' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    cluster = await new Promise<Cluster>((resolve, reject) => {
      const onData = (data: Buffer) => {
        output += data.toString();
        const ready = /^cluster ready (.*)$/m.exec(output);
        if (ready) resolve(JSON.parse(ready[1]!) as Cluster);
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`cluster exited with ${code}:\n${output}`)));
    });
  });

  afterAll(async () => {
    if (!child || child.exitCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code] = await exited;
    expect(code, output).toBe(0);
    for (const pid of Object.values(cluster?.pids ?? {})) {
      expect(() => process.kill(pid, 0), `process ${pid} is gone`).toThrow();
    }
  });

  it('runs a chat started on serve #1 to the end while serve #2 streams it, executed by a cluster process', async () => {
    const [first, second] = cluster.urls as [string, string];
    const headers = { authorization: `Bearer ${cluster.adminKey}`, 'content-type': 'application/json' };
    const chat = await fetch(`${first}/v1/chats`, { method: 'POST', headers, body: '{"title":"cluster"}' });
    expect(chat.status).toBe(201);
    const chatId = ((await chat.json()) as { chat: { id: string } }).chat.id;
    const started = await fetch(`${first}/v1/chats/${chatId}/runs`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ input: { text: script({ steps: 2, tokens: 20, delayMs: 5 }) } }),
    });
    expect(started.status).toBe(201);
    const runId = ((await started.json()) as { run: { id: string } }).run.id;

    // Which process holds the run's lease while it runs (instance ids are `host:pid:random`).
    const database = new pg.Client({ connectionString: cluster.databaseUrl });
    await database.connect();
    const owners = new Set<string>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const { rows } = await database.query<{ lease_owner: string | null }>(
          'select lease_owner from runs where id = $1',
          [runId],
        );
        if (rows[0]?.lease_owner) owners.add(rows[0].lease_owner);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();

    const stream = await fetch(`${second}/v1/runs/${runId}/stream`, { headers });
    expect(stream.status).toBe(200);
    const { events, done } = await collectStream(stream);
    watching = false;
    await watcher;
    await database.end();
    expect(done).toBe(true);
    const deltas = events.filter((event) => event.chunk.type === 'text-delta');
    expect(deltas).toHaveLength(40);
    expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));

    const run = await fetch(`${second}/v1/runs/${runId}`, { headers });
    expect(((await run.json()) as { run: { status: string } }).run.status).toBe('succeeded');
    const clusterPids = new Set(Object.values(cluster.pids).map(String));
    for (const owner of owners) expect(clusterPids.has(owner.split(':')[1]!), owner).toBe(true);
  });
});
