import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, totalmem } from 'node:os';
import { LISTEN_BACKLOG } from '../../src/http/listen-backlog.ts';
import { readHostCpu } from './host-cpu.ts';

/**
 * Listens on a free loopback port with Outrun's listen backlog (a flood of connections must not overflow a
 * baseline's accept queue where Outrun's holds them) and returns the server's base URL.
 */
export async function listenOnLoopback(server: Server): Promise<string> {
  await new Promise<void>((resolve) =>
    server.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG }, resolve),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** The Node flags Outrun's start commands pass (`npm start`, the image, compose; docs/deploy.md). */
const SHIPPED_NODE_FLAGS = ['--min-semi-space-size=16'];

/**
 * The Node flags every benchmark server runs with, Outrun's and the baselines' alike: the shipped ones, or
 * none with BENCH_SERVER_NODE_DEFAULTS=1; then BENCH_SERVER_EXEC_ARGV's (for example `--cpu-prof`).
 */
export function serverNodeFlags(): string[] {
  return [
    ...(process.env.BENCH_SERVER_NODE_DEFAULTS === '1' ? [] : SHIPPED_NODE_FLAGS),
    ...(process.env.BENCH_SERVER_EXEC_ARGV?.split(' ').filter(Boolean) ?? []),
  ];
}

/** The machine a result was measured on, as docs/benchmarks.md records it. */
export function describeMachine(): string {
  let model = cpus()[0]?.model ?? 'unknown CPU';
  try {
    const lscpu = execFileSync('lscpu', { encoding: 'utf8' });
    model = /^Model name:\s*(.+)$/m.exec(lscpu)?.[1]?.trim() ?? model;
  } catch {
    // lscpu is Linux-only; os.cpus() is good enough elsewhere.
  }
  const gib = (totalmem() / 2 ** 30).toFixed(1);
  return `${model}, ${cpus().length} cores, ${gib} GiB RAM`;
}

/** The commit of the code under test, with `+dirty` when src/ has uncommitted changes. */
export function describeCommit(): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { encoding: 'utf8' }).trim();
    return dirty ? `${commit}+dirty` : commit;
  } catch {
    return 'unknown';
  }
}

/** How long the machine has been up, from /proc/uptime (Linux). */
function describeUptime(): string {
  try {
    const seconds = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    return `up ${Math.round(seconds / 60)} min`;
  } catch {
    return 'uptime unknown';
  }
}

/** Prints the header every benchmark starts with: what ran, where, on which Node and store. */
export function printHeader(name: string, details: Record<string, string | number>): void {
  const load = loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
  console.log(`## ${name}`);
  console.log('');
  console.log(`- machine: ${describeMachine()}`);
  console.log(`- node: ${process.version} (${process.platform}-${process.arch})`);
  console.log(`- servers' Node flags: ${serverNodeFlags().join(' ') || "none (Node's defaults)"}`);
  console.log(`- commit: ${describeCommit()}`);
  console.log(`- date: ${new Date().toISOString()}`);
  console.log(`- load average at start: ${load}`);
  const host = readHostCpu();
  if (host && host.total > 0) {
    const stolen = ((100 * host.steal) / host.total).toFixed(1);
    console.log(`- CPU time stolen by the hypervisor since boot: ${stolen} % (${describeUptime()})`);
  }
  for (const [key, value] of Object.entries(details)) console.log(`- ${key}: ${value}`);
}
