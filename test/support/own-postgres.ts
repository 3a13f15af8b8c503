import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.ts';

const run = promisify(execFile);
const POSTGRES_ROOT = '/usr/lib/postgresql';

/** A PostgreSQL server of this test's own, in a temporary directory, that the test may freeze or stop. */
export interface OwnPostgres {
  /** A connection string to its `postgres` database. */
  url: string;
  /** Freezes the postmaster and every backend (SIGSTOP): connections stay open and nothing answers. */
  freeze(): void;
  /** Resumes what `freeze` froze (SIGCONT). */
  thaw(): void;
  /** `pg_ctl stop -m fast`: backends end their sessions, new connections are refused. */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Stops it, whatever its state, and removes its directory. */
  destroy(): Promise<void>;
}

/** The directory holding `initdb` and `pg_ctl` of the newest installed PostgreSQL, or null. */
export function findPostgresBin(): string | null {
  if (!existsSync(POSTGRES_ROOT)) return null;
  const versions = readdirSync(POSTGRES_ROOT)
    .filter((version) => existsSync(join(POSTGRES_ROOT, version, 'bin', 'pg_ctl')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(POSTGRES_ROOT, versions[0], 'bin') : null;
}

/**
 * Initialises and starts a PostgreSQL server on a free loopback port in a new temporary directory. As
 * root, the server runs as the `postgres` user (PostgreSQL refuses to run as root). `settings` are more
 * server settings (`name=value`, as `-c` takes them).
 */
export async function startOwnPostgres(options: { settings?: string[] } = {}): Promise<OwnPostgres> {
  const bin = findPostgresBin();
  if (!bin) throw new Error(`no PostgreSQL binaries under ${POSTGRES_ROOT}`);
  const directory = mkdtempSync(join(tmpdir(), 'outrun-own-pg-'));
  const data = join(directory, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: group } = await run('id', ['-g', 'postgres']);
    chownSync(directory, Number(stdout.trim()), Number(group.trim()));
  }
  const pgCommand = (tool: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]) : run(join(bin, tool), args);

  const port = await freePort();
  await pgCommand('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const start = () =>
    pgCommand('pg_ctl', [
      'start',
      '-D',
      data,
      '-w',
      '-l',
      join(directory, 'postgres.log'),
      '-o',
      [
        `-p ${port} -k ${directory} -c listen_addresses=127.0.0.1 -c fsync=off`,
        ...(options.settings ?? []).map((setting) => `-c ${setting}`),
      ].join(' '),
    ]).then(() => undefined);
  await start();

  const postmasterPid = () => Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  let frozen: number[] = [];
  let destroyed = false;

  const own: OwnPostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    freeze() {
      const parent = postmasterPid();
      frozen = [parent, ...childrenOf(parent)];
      for (const pid of frozen) process.kill(pid, 'SIGSTOP');
    },
    thaw() {
      for (const pid of frozen) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // Already gone.
        }
      }
      frozen = [];
    },
    async stop() {
      await pgCommand('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w']);
    },
    start,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      own.thaw();
      await pgCommand('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w']).catch(() => {});
      rmSync(directory, { recursive: true, force: true });
    },
  };
  return own;
}

/** The ids of the processes whose parent is `parent` (the postmaster's backends and helpers). */
function childrenOf(parent: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command (which may hold spaces): state, then the parent id.
      const parentId = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parentId === parent) children.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return children;
}
