/**
 * `npm run cluster`: the compose topology (docs/deploy.md) as local processes on this machine's PostgreSQL
 * and Redis: creates a database, runs `outrun migrate`, starts two `serve` instances on ports P and P+1 and
 * two `worker`s, prints the URLs and the admin key, and stops them all on Ctrl-C or SIGTERM.
 *
 *   npm run cluster -- [--port 4000] [--database outrun_cluster] [--redis-prefix outrun-cluster] [--drop]
 *
 * DATABASE_URL (any database on the server; default postgres://postgres@127.0.0.1:5432/postgres) says where
 * PostgreSQL is, REDIS_URL (default redis://127.0.0.1:6379) where Redis is. Every other variable passes on
 * to the instances. Once all are ready it prints one line `cluster ready {json}` for scripts and tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';

const BIN = fileURLToPath(new URL('../bin/outrun.js', import.meta.url));
/** The young generation at its full size from the start, as `npm start` and the image run (docs/deploy.md). */
const MIN_SEMI_SPACE = '--min-semi-space-size=16';
/** How long one instance may take to start before the cluster gives up. */
const START_TIMEOUT_MS = 90_000;
/** How long an instance may take to hand its runs back after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 20_000;

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '4000' },
    database: { type: 'string', default: 'outrun_cluster' },
    'redis-prefix': { type: 'string', default: 'outrun-cluster' },
    drop: { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
  },
});

const baseUrl = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const port = Number(values.port);
const databaseName = values.database!;
if (!/^[a-z_][a-z0-9_]{0,62}$/.test(databaseName)) {
  throw new Error(`--database: use lower-case letters, digits and "_" (got "${databaseName}")`);
}
const adminKey = process.env.OUTRUN_ADMIN_KEY || `or_cluster_${randomBytes(16).toString('hex')}`;
const databaseUrl = (() => {
  const url = new URL(baseUrl);
  url.pathname = `/${databaseName}`;
  return url.toString();
})();

const environment: NodeJS.ProcessEnv = {
  ...process.env,
  DATABASE_URL: databaseUrl,
  REDIS_URL: redisUrl,
  OUTRUN_REDIS_PREFIX: values['redis-prefix'],
  OUTRUN_ADMIN_KEY: adminKey,
  HOST: process.env.HOST || '127.0.0.1',
  LOG_FORMAT: 'json',
};

const children: Array<{ name: string; child: ChildProcess }> = [];
let stopping: Promise<void> | null = null;

async function adminQuery(query: string): Promise<void> {
  const client = new pg.Client({ connectionString: baseUrl });
  await client.connect();
  try {
    await client.query(query);
  } finally {
    await client.end();
  }
}

/** Starts one `outrun` process; resolves once it logs that it is ready (or, for `migrate`, exits 0). */
function start(name: string, command: 'serve' | 'worker' | 'migrate', extra: NodeJS.ProcessEnv = {}) {
  const flags = command === 'migrate' ? [] : [MIN_SEMI_SPACE];
  const child = spawn(process.execPath, [...flags, BIN, command], {
    env: { ...environment, ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (command !== 'migrate') children.push({ name, child });
  let output = '';
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${output}`)), START_TIMEOUT_MS);
    const onData = (data: Buffer) => {
      const text = data.toString();
      output += text;
      if (!values.quiet) {
        for (const line of text.split('\n').filter(Boolean)) process.stdout.write(`[${name}] ${line}\n`);
      }
      if (command !== 'migrate' && output.includes('"msg":"outrun is ready"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (command === 'migrate' && code === 0) resolve();
      else reject(new Error(`${name} exited with ${code}:\n${output}`));
    });
  });
}

/** Stops this script's own children (SIGTERM, then SIGKILL past the timeout), then drops the database with `--drop`. */
function stop(): Promise<void> {
  stopping ??= (async () => {
    await Promise.all(
      children.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
    if (values.drop) await adminQuery(`drop database if exists ${databaseName} with (force)`);
  })();
  return stopping;
}

async function main(): Promise<void> {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      console.log(`\n${signal}: stopping the cluster`);
      void stop().then(() => process.exit(0));
    });
  }
  try {
    await adminQuery(`create database ${databaseName}`);
  } catch (error) {
    if ((error as { code?: string }).code !== '42P04') throw error; // 42P04: it exists already.
  }
  await start('migrate', 'migrate');
  await Promise.all([
    start('serve-1', 'serve', { PORT: String(port) }),
    start('serve-2', 'serve', { PORT: String(port + 1) }),
    start('worker-1', 'worker'),
    start('worker-2', 'worker'),
  ]);
  const host = environment.HOST === '0.0.0.0' ? '127.0.0.1' : environment.HOST;
  const urls = [`http://${host}:${port}`, `http://${host}:${port + 1}`];
  const pids = Object.fromEntries(children.map(({ name, child }) => [name, child.pid]));
  console.log(
    [
      '',
      '  Outrun cluster: 2 serve instances and 2 workers on PostgreSQL and Redis',
      '',
      ...urls.map((url, index) => `    serve-${index + 1}   ${url}`),
      `    database  ${databaseUrl.replace(/:[^:@/]*@/, ':***@')}`,
      `    redis     ${redisUrl} (prefix ${values['redis-prefix']})`,
      `    admin key ${adminKey}`,
      '',
      `  Web app: ${urls[0]}/#key=${adminKey}`,
      '  Ctrl-C stops them all.',
      '',
    ].join('\n'),
  );
  console.log(`cluster ready ${JSON.stringify({ urls, adminKey, databaseUrl, pids })}`);
}

main().catch(async (error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  await stop();
  process.exit(1);
});
