/**
 * Connections the kernel queues for a server before it accepts them (Linux caps it at `net.core.somaxconn`,
 * 4096 by default since 5.4). Node's default, 511, overflowed under 1,000 starts in 2 s on a busy event loop:
 * the kernel dropped the rest, and their clients' TCP retransmits, 1 to 31 s later, delayed those starts by as
 * much (docs/benchmarks.md, "a flood of starts traced"). The benchmark's baselines listen with it too.
 */
export const LISTEN_BACKLOG = 4096;
