import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';

/** The lock file's name inside the data directory. */
export const DATA_DIR_LOCK_FILE = 'outrun.lock';

/** How often the holder touches its lock file, so a process on another host can tell it is alive. */
export const LOCK_HEARTBEAT_MS = 5_000;

/**
 * How long a lock written on another host may go untouched before it counts as abandoned. A process on
 * this host is checked by its pid and start time instead; another host's pids mean nothing here.
 */
export const FOREIGN_LOCK_STALE_MS = 30_000;

/**
 * How long a takeover marker may stand before it counts as abandoned. Taking over a stale lock holds it
 * for a few synchronous file operations; one older than this belongs to a process that died in between.
 */
const TAKEOVER_STALE_MS = 10_000;

/** How long acquiring waits, at most, for another process taking over a stale lock at the same moment. */
const ACQUIRE_DEADLINE_MS = 10_000;

/** Pause between two tries while another process takes over a stale lock. */
const RETRY_DELAY_MS = 25;

/** What the lock file says about its holder. */
export interface LockOwner {
  pid: number;
  hostname: string;
  /** The process's start time as the kernel counts it (`/proc/<pid>/stat`), where there is a `/proc`. */
  startTime: string | null;
  /** When the lock was taken (ISO 8601). */
  acquiredAt: string;
}

/** Another live process holds the data directory: start-up stops before opening the database. */
export class DataDirLockedError extends Error {
  readonly code = 'data_dir_locked';
  readonly dataDir: string;
  readonly owner: LockOwner;

  constructor(dataDir: string, owner: LockOwner, lockFile: string) {
    const here = owner.hostname === hostname();
    const holder =
      here && owner.pid === process.pid
        ? `already open in this process (pid ${owner.pid})`
        : `in use by another Outrun process (pid ${owner.pid}${here ? '' : ` on host ${owner.hostname}`}, ` +
          `since ${owner.acquiredAt})`;
    super(
      `OUTRUN_DATA_DIR: the data directory ${dataDir} is ${holder}. Two processes must never open the same ` +
        'data directory: stop that one, or give this one another OUTRUN_DATA_DIR (or use DATABASE_URL). ' +
        `If that process is gone, delete ${lockFile}.`,
    );
    this.name = 'DataDirLockedError';
    this.dataDir = dataDir;
    this.owner = owner;
  }
}

/** A data directory held by this process until `release`. */
export interface DataDirLock {
  readonly lockFile: string;
  /** Removes the lock file; idempotent. A process that dies without it leaves a lock the next start sees is stale. */
  release(): void;
}

/** Lock files this process holds, so a second open in the same process is refused too. */
const held = new Set<string>();

/**
 * Takes the exclusive lock on a PGlite data directory (an existing directory) for this process, or throws
 * `DataDirLockedError` when another live process holds it. The lock is a file in the directory naming its
 * holder's pid, host and start time: a lock whose process is gone (killed with `kill -9`), or whose pid now
 * belongs to another process, is stale and taken over.
 */
export async function acquireDataDirLock(options: {
  /** The PGlite data directory; it must exist. */
  dataDir: string;
}): Promise<DataDirLock> {
  const dataDir = resolve(options.dataDir);
  const lockFile = join(dataDir, DATA_DIR_LOCK_FILE);
  const self: LockOwner = {
    pid: process.pid,
    hostname: hostname(),
    startTime: processStartTime(process.pid),
    acquiredAt: new Date().toISOString(),
  };
  const content = JSON.stringify(self);
  if (held.has(lockFile)) throw new DataDirLockedError(dataDir, self, lockFile);
  held.add(lockFile);
  try {
    await takeLockFile(dataDir, lockFile, content);
  } catch (error) {
    held.delete(lockFile);
    throw error;
  }

  const heartbeat = setInterval(() => {
    const now = new Date();
    try {
      utimesSync(lockFile, now, now);
    } catch {
      // The next heartbeat tries again; only another host's view of this lock depends on it.
    }
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    clearInterval(heartbeat);
    process.off('exit', release);
    held.delete(lockFile);
    // Only this process's own lock is removed: a file someone replaced after deleting ours stays.
    try {
      if (readLockFile(lockFile)?.text === content) unlinkQuietly(lockFile);
    } catch {
      // Unreadable now: the next start finds the lock stale (this process is gone by then).
    }
  };
  // A process that exits without closing its database (an error after start-up) still leaves no lock.
  process.on('exit', release);
  return { lockFile, release };
}

/** Creates `lockFile`, taking over a stale one; throws `DataDirLockedError` when a live process holds it. */
async function takeLockFile(dataDir: string, lockFile: string, content: string): Promise<void> {
  const deadline = Date.now() + ACQUIRE_DEADLINE_MS;
  for (;;) {
    if (tryCreate(lockFile, content)) return;
    const current = readLockFile(lockFile);
    if (current === undefined) continue; // Removed since the attempt: try again at once.
    if (current.owner && !isStale(current.owner, lockFile)) {
      throw new DataDirLockedError(dataDir, current.owner, lockFile);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `Could not take over the stale lock ${lockFile}: check that the directory is writable.`,
      );
    }
    // Another process is taking over the same stale lock: its new lock, or none, is there in a moment.
    if (!removeStale(lockFile, current.text)) await new Promise((done) => setTimeout(done, RETRY_DELAY_MS));
  }
}

/** Creates `lockFile` with `content` if it does not exist: complete, atomically (a hard link of a written file). */
function tryCreate(lockFile: string, content: string): boolean {
  const draft = `${lockFile}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(draft, content, { flag: 'wx' });
  try {
    linkSync(draft, lockFile);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    unlinkQuietly(draft);
  }
}

/** The lock file's text and holder (`owner` absent when unreadable), or `undefined` when there is no file. */
function readLockFile(lockFile: string): { text: string; owner?: LockOwner } | undefined {
  let text: string;
  try {
    text = readFileSync(lockFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const owner = JSON.parse(text) as LockOwner;
    if (typeof owner.pid === 'number' && typeof owner.hostname === 'string') return { text, owner };
  } catch {
    // A file this module did not write (it writes complete files only): stale.
  }
  return { text };
}

/** Whether the process a lock file names is gone. */
function isStale(owner: LockOwner, lockFile: string): boolean {
  if (owner.hostname !== hostname()) {
    // Another host's pid cannot be checked here: its heartbeat says whether it is alive.
    try {
      return Date.now() - statSync(lockFile).mtimeMs > FOREIGN_LOCK_STALE_MS;
    } catch {
      return true;
    }
  }
  // This process never contends with itself (`held`): a lock in its own pid is an earlier process's.
  if (owner.pid === process.pid) return true;
  // A killed process its parent has not reaped yet is a zombie: gone, its files closed, its pid still listed.
  if (!processExists(owner.pid) || processState(owner.pid) === 'Z') return true;
  // The pid is alive; a different start time means it was reused by a process that holds no lock.
  const startTime = processStartTime(owner.pid);
  return owner.startTime !== null && startTime !== null && startTime !== owner.startTime;
}

/**
 * Deletes the stale lock whose text is `staleText`, if it is still that one. Takers of stale locks go one at
 * a time through a takeover marker, so none can delete a lock another created after the stale one went.
 * Returns whether it got the marker.
 */
function removeStale(lockFile: string, staleText: string): boolean {
  const marker = `${lockFile}.takeover`;
  try {
    writeFileSync(marker, String(process.pid), { flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    try {
      if (Date.now() - statSync(marker).mtimeMs > TAKEOVER_STALE_MS) unlinkQuietly(marker);
    } catch {
      // Gone already: the next try takes it.
    }
    return false;
  }
  try {
    if (readLockFile(lockFile)?.text === staleText) unlinkQuietly(lockFile);
  } finally {
    unlinkQuietly(marker);
  }
  return true;
}

/** Whether a process with this pid exists (one of another user counts: signalling it is merely not allowed). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The fields of `/proc/<pid>/stat` from field 3 (the state) on, or `null` where there is no `/proc`. The
 * command name (field 2) is in parentheses and may hold spaces: fields are counted after it.
 */
function procStat(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/**
 * The start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), which tells
 * a reused pid from its earlier holder; `null` where there is no `/proc` (then the pid alone decides).
 */
export function processStartTime(pid: number): string | null {
  return procStat(pid)?.[19] ?? null;
}

/** The state letter of process `pid` (field 3 of `/proc/<pid>/stat`: `R`, `S`, `Z` for a zombie…), if known. */
function processState(pid: number): string | null {
  return procStat(pid)?.[0] ?? null;
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}
