#!/bin/bash
# The fence's CPU: ../window/window-cpu.ts (window 2 ms, as shipped), one round at a time, alternating between
# /work/main (the fence's share row locks) and /work/wt-nf (the same commit with pass i's
# diagnostics/no-fence/no-fence.patch: the epochs read without locking; a scratch tree, never committed).
# Output: one file per tree and round beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres SCENARIOS=${SCENARIOS:-20x500,100x200}
node24=/work/main/node_modules/node/bin
for round in 1 2 3 4; do
  case $round in 1|3) order="fence nofence" ;; *) order="nofence fence" ;; esac
  for variant in $order; do
    case $variant in fence) tree=/work/main ;; nofence) tree=/work/wt-nf ;; esac
    echo "== $variant $round $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> "$out/log.txt"
    (cd "$tree" && PATH="$node24:$PATH" timeout 600 npx tsx bench/passes/2026-12-06j-amd-epyc/diagnostics/window/window-cpu.ts 2 1) \
      > "$out/$variant-$round.txt" 2>&1
  done
done
echo "== done $(date -u +%H:%M:%S)" >> "$out/log.txt"
