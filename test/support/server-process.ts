import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** Node arguments that run the CLI from the sources (tsx), so tests never run a stale build. */
export const OUTRUN_CLI_ARGS = [
  '--import',
  'tsx',
  fileURLToPath(new URL('../../src/cli.ts', import.meta.url)),
];

export interface ServerProcess {
  child: ChildProcess;
  /** Where `serve` listens; empty for a `worker`. */
  url: string;
  /** Everything the process wrote so far. */
  output(): string;
  /** Resolves with the exit code (or signal) once the process is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `outrun serve` (or `outrun worker`) as a real child process and waits until it is ready. */
export async function startServerProcess(
  env: Record<string, string>,
  command: 'serve' | 'worker' = 'serve',
): Promise<ServerProcess> {
  const child = spawn(process.execPath, [...OUTRUN_CLI_ARGS, command], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Everything the process writes, once, for its whole life.
  let output = '';
  let onOutput: () => void = () => {};
  const collect = (data: Buffer) => {
    output += data.toString();
    onOutput();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = once(child, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 60_000);
    onOutput = () => {
      const ready = /"url":(?:"(http:\/\/[^"]+)"|null)[^\n]*"msg":"outrun is ready"/.exec(output);
      if (ready) {
        clearTimeout(timer);
        onOutput = () => {};
        resolve(ready[1] ?? '');
      }
    };
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${output}`));
    });
  });
  return { child, url, output: () => output, exited };
}

/**
 * Runs `outrun serve` (or another command) until it exits by itself (a fault point that kills it, a refused
 * start); resolves with its exit. A process still running after `killAfterMs` (default 60 s) is killed.
 */
export async function runUntilExit(
  env: Record<string, string>,
  options: { command?: 'serve' | 'worker' | 'migrate'; killAfterMs?: number } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const child = spawn(process.execPath, [...OUTRUN_CLI_ARGS, options.command ?? 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (data: Buffer) => (output += data.toString()));
  child.stderr!.on('data', (data: Buffer) => (output += data.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.killAfterMs ?? 60_000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  return { code: code as number | null, signal: signal as NodeJS.Signals | null, output };
}
