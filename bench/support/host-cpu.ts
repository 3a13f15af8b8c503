import { readdirSync, readFileSync } from 'node:fs';

/**
 * The whole machine's CPU time so far, from the first line of /proc/stat (Linux; clock ticks): all of it, and
 * the part the hypervisor gave to other guests while this one had work to run (`steal`). On a shared host a
 * step can run at a fraction of its speed while this machine's own load looks light: the time a benchmark
 * waited for a CPU shows here and nowhere else.
 */
export interface HostCpuReading {
  total: number;
  steal: number;
}

/** Parses /proc/stat's text (its `cpu` line: user nice system idle iowait irq softirq steal …). */
export function parseHostCpu(procStat: string): HostCpuReading | null {
  const line = procStat.split('\n', 1)[0] ?? '';
  const fields = line.trim().split(/\s+/);
  if (fields[0] !== 'cpu' || fields.length < 9) return null;
  // The first eight counters; guest time (fields 9 and 10) is counted inside user and nice already.
  const ticks = fields.slice(1, 9).map(Number);
  if (ticks.some((value) => !Number.isFinite(value))) return null;
  return { total: ticks.reduce((sum, value) => sum + value, 0), steal: ticks[7]! };
}

/** This machine's CPU time now, or null where /proc/stat is not available (not Linux). */
export function readHostCpu(): HostCpuReading | null {
  try {
    return parseHostCpu(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return null;
  }
}

/** The share (%) of the machine's CPU time between two readings that was stolen; null without both. */
export function stealPercent(before: HostCpuReading | null, after: HostCpuReading | null): number | null {
  if (!before || !after) return null;
  const total = after.total - before.total;
  return total > 0 ? (100 * (after.steal - before.steal)) / total : null;
}

/** Voluntary context switches of every thread of `pid` so far; null when /proc does not say (not Linux). */
export function voluntarySwitches(pid: number): number | null {
  try {
    let switches = 0;
    for (const thread of readdirSync(`/proc/${pid}/task`)) {
      const status = readFileSync(`/proc/${pid}/task/${thread}/status`, 'utf8');
      const match = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status);
      if (match) switches += Number(match[1]);
    }
    return switches;
  } catch {
    return null;
  }
}
