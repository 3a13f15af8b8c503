import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/outrun.js', import.meta.url));
/**
 * How long the connection checks may take, from the process's `checking connections` line to its exit
 * (the checks give up after 5 s). Measured from that line, not from spawn: loading the modules takes a
 * varying time on a busy machine, and that is not what this test is about.
 */
const CHECK_BUDGET_MS = 6000;

interface Exit {
  code: number | null;
  output: string;
  /** From spawn to exit. */
  ms: number;
  /** From the `checking connections` debug line to exit: the time the checks took. */
  checkMs: number | null;
}

/** Runs `outrun serve` with `env` until it exits (or `killAfterMs`), collecting stdout and stderr. */
function runServe(env: Record<string, string>, options: { killAfterMs?: number; until?: RegExp } = {}) {
  return new Promise<Exit>((resolve) => {
    const started = Date.now();
    let checking: number | null = null;
    const child = spawn(process.execPath, [BIN, 'serve'], {
      env: {
        ...process.env,
        DATABASE_URL: '',
        REDIS_URL: '',
        PORT: '0',
        LOG_FORMAT: 'json',
        LOG_LEVEL: 'debug',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const onData = (data: Buffer) => {
      output += data.toString();
      if (checking === null && output.includes('"msg":"checking connections"')) checking = Date.now();
      if (options.until?.test(output)) child.kill('SIGTERM');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGKILL'), options.killAfterMs ?? 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const now = Date.now();
      resolve({ code, output, ms: now - started, checkMs: checking === null ? null : now - checking });
    });
  });
}

describe('start-up errors', () => {
  let dataDir: string;
  /** How long the process takes to load and report a bad setting with no I/O: the machine's start-up cost. */
  let baselineMs: number;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'outrun-startup-'));
    const exit = await runServe({ PORT: 'not-a-port', OUTRUN_DATA_DIR: dataDir });
    baselineMs = exit.ms;
    expect(exit.code).not.toBe(0);
    expect(exit.output).toContain('PORT:');
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  const expectFastFailure = (exit: Exit, variable: string) => {
    expect(exit.code, exit.output).not.toBe(0);
    expect(exit.output).toContain(variable);
    if (exit.checkMs !== null)
      expect(exit.checkMs, `checks took ${exit.checkMs} ms`).toBeLessThan(CHECK_BUDGET_MS);
    else expect(exit.ms, 'a bad value fails before any check').toBeLessThan(baselineMs + CHECK_BUDGET_MS);
  };

  it.each([
    ['an unparsable DATABASE_URL', 'base', /not a URL/],
    ['a DATABASE_URL with a wrong scheme', 'mysql://user@127.0.0.1/db', /postgres:\/\//],
    [
      'a DATABASE_URL with an unknown host',
      'postgres://user:secret@no-such-host.invalid:5432/db',
      /ENOTFOUND|EAI_AGAIN/,
    ],
    [
      'a DATABASE_URL nothing listens on',
      'postgres://user:secret@127.0.0.1:1/db',
      /ECONNREFUSED.*Is PostgreSQL running/,
    ],
  ])('fails fast naming DATABASE_URL for %s', async (_name, url, pattern) => {
    const exit = await runServe({ DATABASE_URL: url, OUTRUN_DATA_DIR: dataDir });
    expectFastFailure(exit, 'DATABASE_URL');
    expect(exit.output).toMatch(pattern);
    expect(exit.output).toContain('DATABASE_URL:');
    expect(exit.output, 'the password is never printed').not.toContain('secret');
  });

  it.runIf(process.env.DATABASE_URL)(
    'fails fast naming DATABASE_URL when the database or the user does not exist',
    async () => {
      const url = new URL(process.env.DATABASE_URL!);
      url.pathname = '/outrun_no_such_database';
      const exit = await runServe({ DATABASE_URL: url.toString() });
      expectFastFailure(exit, 'DATABASE_URL');
      expect(exit.output).toMatch(/3D000|28000|28P01/);
    },
  );

  it('fails fast naming REDIS_URL when Redis does not answer', async () => {
    const exit = await runServe({ REDIS_URL: 'redis://127.0.0.1:1', OUTRUN_DATA_DIR: dataDir });
    expectFastFailure(exit, 'REDIS_URL');
    expect(exit.checkMs).not.toBeNull();
    expect(exit.output).toMatch(/REDIS_URL is unreachable/);
  });

  it('names the variable of any invalid value', async () => {
    const exit = await runServe({ OUTRUN_MAX_ATTEMPTS: 'many', LOG_LEVEL: 'loud', OUTRUN_DATA_DIR: dataDir });
    expect(exit.code).not.toBe(0);
    expect(exit.output).toContain('OUTRUN_MAX_ATTEMPTS:');
    expect(exit.output).toContain('LOG_LEVEL:');
  });

  it('fails naming OUTRUN_DATA_DIR when it is a file', async () => {
    const file = join(dataDir, 'not-a-directory');
    writeFileSync(file, 'x');
    const exit = await runServe({ OUTRUN_DATA_DIR: file });
    expect(exit.code, exit.output).toBe(1);
    expect(exit.output).toContain(`OUTRUN_DATA_DIR: cannot use ${file} as the data directory: it is a file`);
  });

  it('fails naming OUTRUN_MODEL when it is no model id at all', async () => {
    const exit = await runServe({ OUTRUN_MODEL: 'gpt-4o', OUTRUN_DATA_DIR: dataDir });
    expect(exit.code, exit.output).toBe(1);
    expect(exit.output).toContain('OUTRUN_MODEL: Unknown model "gpt-4o"');
    expect(exit.output).not.toContain('outrun is ready');
  });

  it('warns, and starts, when OUTRUN_MODEL names a provider whose key is missing', async () => {
    const exit = await runServe(
      { OUTRUN_MODEL: 'openai:gpt-4.1-mini', OPENAI_API_KEY: '', OUTRUN_DATA_DIR: dataDir },
      { until: /outrun is ready/ },
    );
    expect(exit.output).toMatch(/"level":40[^\n]*OUTRUN_MODEL[^\n]*OPENAI_API_KEY/);
    expect(exit.output).toContain('outrun is ready');
  });
});
