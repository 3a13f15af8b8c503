import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pollUntil } from '../../test/support/wait.ts';
import {
  acquireDataDirLock,
  DATA_DIR_LOCK_FILE,
  DataDirLockedError,
  FOREIGN_LOCK_STALE_MS,
  processStartTime,
  type LockOwner,
} from './data-dir-lock.ts';

describe('acquireDataDirLock', () => {
  let dataDir: string;
  let lockFile: string;
  const writeLock = (owner: Partial<LockOwner>) =>
    writeFileSync(
      lockFile,
      JSON.stringify({
        hostname: hostname(),
        startTime: null,
        acquiredAt: '2026-01-01T00:00:00.000Z',
        ...owner,
      }),
    );

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'outrun-lock-unit-'));
    lockFile = join(dataDir, DATA_DIR_LOCK_FILE);
  });
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  it('holds a free data directory until released, then leaves no lock file', async () => {
    const lock = await acquireDataDirLock({ dataDir });
    expect(JSON.parse(readFileSync(lockFile, 'utf8'))).toMatchObject({
      pid: process.pid,
      hostname: hostname(),
    });
    lock.release();
    expect(existsSync(lockFile)).toBe(false);
    (await acquireDataDirLock({ dataDir })).release();
  });

  it('refuses a data directory a live process on this host holds, naming the directory and its pid', async () => {
    writeLock({ pid: process.ppid, startTime: processStartTime(process.ppid) });
    const error = await acquireDataDirLock({ dataDir }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DataDirLockedError);
    expect((error as DataDirLockedError).code).toBe('data_dir_locked');
    expect((error as Error).message).toContain(`the data directory ${dataDir} is in use`);
    expect((error as Error).message).toContain(`(pid ${process.ppid},`);
    expect(existsSync(lockFile), 'the holder keeps its lock').toBe(true);
  });

  it('refuses a second open of a data directory in the same process', async () => {
    const lock = await acquireDataDirLock({ dataDir });
    await expect(acquireDataDirLock({ dataDir })).rejects.toThrow(/already open in this process/);
    lock.release();
  });

  it('takes over a lock whose process is gone', async () => {
    const gone = spawnSync(process.execPath, ['-e', 'process.pid']).pid!;
    writeLock({ pid: gone });
    const lock = await acquireDataDirLock({ dataDir });
    expect(JSON.parse(readFileSync(lockFile, 'utf8')).pid).toBe(process.pid);
    lock.release();
  });

  it.runIf(processStartTime(process.pid) !== null && spawnSync('python3', ['-c', 'pass']).status === 0)(
    'takes over a lock whose process was killed and is not reaped yet (a zombie)',
    async () => {
      // A parent that forks a child which exits at once, and never waits for it: the child stays a zombie.
      const parent = spawn(
        'python3',
        [
          '-c',
          'import os, time\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\ntime.sleep(30)',
        ],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      );
      try {
        const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
        const zombie = Number(line.toString().trim());
        await pollUntil(
          async () => readFileSync(`/proc/${zombie}/stat`, 'utf8'),
          (stat) => / Z /.test(stat),
        );
        writeLock({ pid: zombie, startTime: processStartTime(zombie) });
        const lock = await acquireDataDirLock({ dataDir });
        expect(JSON.parse(readFileSync(lockFile, 'utf8')).pid).toBe(process.pid);
        lock.release();
      } finally {
        parent.kill('SIGKILL');
      }
    },
  );

  it.runIf(processStartTime(process.pid) !== null)(
    'takes over a lock whose pid now belongs to a later process',
    async () => {
      writeLock({ pid: process.ppid, startTime: '1' });
      (await acquireDataDirLock({ dataDir })).release();
    },
  );

  it('takes over a lock left in its own pid by an earlier process (a container’s pid 1)', async () => {
    writeLock({ pid: process.pid, startTime: '1' });
    (await acquireDataDirLock({ dataDir })).release();
  });

  it('takes over a lock file it cannot read', async () => {
    writeFileSync(lockFile, '{"pid":');
    (await acquireDataDirLock({ dataDir })).release();
  });

  it('refuses a lock from another host while its holder keeps touching it, and takes it over once it stops', async () => {
    writeLock({ pid: 1, hostname: 'another-host' });
    await expect(acquireDataDirLock({ dataDir })).rejects.toThrow(/pid 1 on host another-host/);
    const then = new Date(Date.now() - FOREIGN_LOCK_STALE_MS - 1_000);
    utimesSync(lockFile, then, then);
    (await acquireDataDirLock({ dataDir })).release();
  });
});
