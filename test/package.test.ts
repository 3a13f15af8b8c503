import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The package as a user gets it: `npm pack` (which runs `prepare`, the build), the tarball installed into a
 * scratch project, then used from plain Node, from TypeScript and through its `outrun` bin. One pack and one
 * install for the whole file; the server started from the installed bin serves every test.
 *
 * The pack runs in a copy of the project (`copyForPack`), never in the checkout itself: its build empties and
 * rewrites web/dist, which the browser tests of other files serve while this one runs. A page loaded in
 * that moment got no app, and a browser test failed on a button that never appeared.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const ADMIN_KEY = 'package-test-admin-key-0123456789';
const run = promisify(execFile);

interface PackedFile {
  path: string;
  size: number;
}

let tempRoot: string | undefined;
let scratch: string;
let tarball: { path: string; size: number; unpackedSize: number; files: PackedFile[] };
let server: { child: ChildProcess; url: string; output: () => string } | undefined;

/** What the build does not read, or makes: left out of the copy that is packed. */
const NOT_COPIED = new Set(['.git', 'node_modules', 'dist', 'web/dist', 'bench', 'docs', 'test']);

/**
 * Copies the working tree (uncommitted changes included) to `target` for `npm pack`, without what the build
 * makes or does not read; its node_modules is a link to the project's, so nothing is installed twice.
 */
function copyForPack(target: string): void {
  cpSync(ROOT, target, {
    recursive: true,
    filter: (source) => !NOT_COPIED.has(relative(ROOT, source).split(sep).join('/')),
  });
  symlinkSync(join(ROOT, 'node_modules'), join(target, 'node_modules'), 'dir');
}

/** The checkout's build outputs, each file with its modification time: what the pack must leave alone. */
function checkoutBuild(): Record<string, number> {
  const found: Record<string, number> = {};
  for (const directory of ['dist', 'web/dist']) {
    const absolute = join(ROOT, directory);
    if (!existsSync(absolute)) continue;
    for (const name of readdirSync(absolute, { recursive: true, encoding: 'utf8' })) {
      const stats = statSync(join(absolute, name));
      if (stats.isFile()) found[`${directory}/${name}`] = stats.mtimeMs;
    }
  }
  return found;
}
let checkoutBuildBefore: Record<string, number>;

/** Runs `command` in `cwd`; rejects with its output when it fails. */
async function exec(command: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  try {
    return await run(command, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 32 * 1024 * 1024 });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed:\n${stdout ?? ''}\n${stderr ?? ''}`, {
      cause: error,
    });
  }
}

/** Starts the installed package's `outrun serve` on an embedded database and waits for its ready line. */
async function startInstalledServer(): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(join(scratch, 'node_modules', '.bin', 'outrun'), ['serve'], {
    cwd: scratch,
    env: {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      DATABASE_URL: '',
      REDIS_URL: '',
      OUTRUN_DATA_DIR: join(tempRoot!, 'data'),
      OUTRUN_ADMIN_KEY: ADMIN_KEY,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`outrun serve did not start:\n${output}`)), 60_000);
    const onData = (data: Buffer) => {
      output += data.toString();
      const ready = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"outrun is ready"/.exec(output);
      if (ready) {
        clearTimeout(timer);
        resolve(ready[1] as string);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`outrun serve exited with ${code}:\n${output}`));
    });
  });
  return { child, url, output: () => output };
}

const CLIENT_SCRIPT = `
import { createOutrunClient, textOf } from 'outrun/client';

const outrun = createOutrunClient({ baseUrl: process.env.OUTRUN_URL, apiKey: process.env.OUTRUN_KEY });
const chat = await outrun.createChat({ title: 'from plain Node' });
const run = await outrun.startRun(chat.id, {
  input: { text: JSON.stringify({ script: { steps: 1, tokens: 3, tool: false } }) },
});
let text = '';
const types = [];
for await (const { chunk } of outrun.followRun(run.id)) {
  types.push(chunk.type);
  if (chunk.type === 'text-delta') text += chunk.delta;
}
const finished = await outrun.getRun(run.id);
console.log(JSON.stringify({ text, types, status: finished.status, textOf: typeof textOf }));
`;

/** Uses every public entry point the way a TypeScript consumer would, types included. */
const CONSUMER_SOURCE = `
import { createOutrunClient, type OutrunClient, type RunStreamEvent, type RunObject } from 'outrun/client';
import { useChatRuns, ChatRunsStore } from 'outrun/react';
import { isTerminalStatus, type RunChunk } from 'outrun/protocol';
import { createOutrun, loadConfig, type CreateOutrunOptions } from 'outrun';

const client: OutrunClient = createOutrunClient({ baseUrl: 'http://localhost:3000', apiKey: 'key' });
export async function lastText(runId: string): Promise<string> {
  let text = '';
  for await (const event of client.followRun(runId)) {
    const seen: RunStreamEvent = event;
    const chunk: RunChunk = seen.chunk;
    if (chunk.type === 'text-delta') text += chunk.delta;
  }
  const run: RunObject = await client.getRun(runId);
  return isTerminalStatus(run.status) ? text : '';
}
export const server: (options?: CreateOutrunOptions) => unknown = createOutrun;
export const hook: unknown = [useChatRuns, ChatRunsStore, loadConfig];
`;

function tsconfig(moduleResolution: 'bundler' | 'node16'): string {
  return JSON.stringify({
    compilerOptions: {
      target: 'ES2022',
      module: moduleResolution === 'bundler' ? 'ESNext' : 'Node16',
      moduleResolution,
      lib: ['ES2023', 'DOM', 'DOM.Iterable'],
      types: [],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
    },
    files: ['consumer.ts'],
  });
}

beforeAll(async () => {
  const started = performance.now();
  const phase = (name: string) =>
    console.log(`${name}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  tempRoot = mkdtempSync(join(tmpdir(), 'outrun-package-'));
  const packDir = join(tempRoot, 'pack');
  mkdirSync(packDir);
  const source = join(tempRoot, 'source');
  checkoutBuildBefore = checkoutBuild();
  copyForPack(source);
  const { stdout } = await exec('npm', ['pack', '--json', '--pack-destination', packDir], source);
  // `prepare` prints the build's output before npm's JSON.
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf('[\n'))) as Array<{
    filename: string;
    size: number;
    unpackedSize: number;
    files: PackedFile[];
  }>;
  const path = join(packDir, packed!.filename);
  tarball = { path, size: statSync(path).size, unpackedSize: packed!.unpackedSize, files: packed!.files };
  phase('packed');

  scratch = join(tempRoot, 'project');
  mkdirSync(scratch);
  writeFileSync(
    join(scratch, 'package.json'),
    JSON.stringify({ name: 'scratch', private: true, type: 'module' }),
  );
  await exec('npm', ['install', tarball.path, '--no-audit', '--no-fund', '--prefer-offline'], scratch);
  phase('installed');
  writeFileSync(join(scratch, 'client.mjs'), CLIENT_SCRIPT);
  writeFileSync(join(scratch, 'consumer.ts'), CONSUMER_SOURCE);
  writeFileSync(join(scratch, 'tsconfig.bundler.json'), tsconfig('bundler'));
  writeFileSync(join(scratch, 'tsconfig.node16.json'), tsconfig('node16'));
  server = await startInstalledServer();
  phase('served');
}, 150_000);

afterAll(async () => {
  if (server && server.child.exitCode === null) {
    server.child.kill('SIGTERM');
    await once(server.child, 'exit');
  }
  if (tempRoot) rmSync(tempRoot, { recursive: true, force: true });
});

describe('the packed package', () => {
  it('is built in a copy, leaving the checkout’s dist and web/dist as they were', () => {
    expect(checkoutBuild()).toEqual(checkoutBuildBefore);
  });

  it('holds the build, the web app and the bin, and no sources, tests or source maps', () => {
    const paths = tarball.files.map((file) => file.path);
    console.log(
      `outrun tarball: ${(tarball.size / 1024).toFixed(0)} kB packed, ` +
        `${(tarball.unpackedSize / 1024).toFixed(0)} kB unpacked, ${paths.length} files`,
    );
    for (const expected of [
      'bin/outrun.js',
      'dist/cli.js',
      'dist/index.d.ts',
      'dist/client/index.js',
      'dist/client/index.d.ts',
      'dist/react/index.d.ts',
      'dist/protocol/index.d.ts',
      'web/dist/index.html',
      'README.md',
      'package.json',
    ]) {
      expect(paths).toContain(expected);
    }
    const unwanted = paths.filter(
      (path) =>
        /^(src|test|bench|docs|web\/src|scripts)\//.test(path) || /\.map$|\.test\.|tsbuildinfo/.test(path),
    );
    expect(unwanted).toEqual([]);
  });

  it('gives outrun/client, outrun/react and outrun/protocol declarations that reference no server module', () => {
    const dist = join(scratch, 'node_modules', 'outrun', 'dist');
    const browserSide = ['client', 'react', 'protocol'];
    const references = browserSide.flatMap((folder) =>
      readdirSync(join(dist, folder), { recursive: true, encoding: 'utf8' })
        .filter((file) => file.endsWith('.d.ts'))
        .flatMap((file) => {
          const path = join(dist, folder, file);
          const text = readFileSync(path, 'utf8');
          return [...text.matchAll(/(?:from\s*|import\s*\(\s*)['"]([^'"]+)['"]/g)].map(([, specifier]) =>
            specifier!.startsWith('.')
              ? `dist/${relative(dist, resolve(dirname(path), specifier!)).split('/')[0]!}`
              : specifier!,
          );
        }),
    );
    expect(references.length).toBeGreaterThan(10);
    expect([...new Set(references)].sort()).toEqual(['ai', 'dist/client', 'dist/protocol', 'dist/react']);
  });

  it('streams a run from plain Node ESM through outrun/client', async () => {
    const { stdout } = await exec('node', ['client.mjs'], scratch, {
      OUTRUN_URL: server!.url,
      OUTRUN_KEY: ADMIN_KEY,
    });
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
      text: string;
      types: string[];
      status: string;
      textOf: string;
    };
    expect(result).toMatchObject({ text: 's1t0 s1t1 s1t2 ', status: 'succeeded', textOf: 'function' });
    expect(result.types).toContain('text-delta');
    expect(result.types.at(-1)).toBe('data-run');
  });

  it.each(['bundler', 'node16'])(
    'type-checks a TypeScript consumer of every entry point with moduleResolution %s',
    async (moduleResolution) => {
      await exec(process.execPath, [TSC, '-p', `tsconfig.${moduleResolution}.json`], scratch);
    },
  );

  it('serves the built web app from the installed outrun bin', async () => {
    const page = await fetch(server!.url + '/', { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).not.toContain('has not been built');
    const script = /<script[^>]+src="([^"]+)"/.exec(html)?.[1];
    expect(script).toMatch(/^\/assets\/.+\.js$/);
    const asset = await fetch(server!.url + script);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toMatch(/javascript/);
    expect((await asset.text()).length).toBeGreaterThan(1000);
  });
});
