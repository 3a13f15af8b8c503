#!/bin/bash
# What compaction adds to `cpu-per-token --store postgres` (Node 24): at 5268579 (`with`) and with compaction
# off (`without`: BENCH_NO_COMPACTION, a two-line patch in a scratch worktree, not committed), interleaved.
# Output beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
for round in 1 2 3; do
  for variant in with without; do
    case $variant in with) tree=/work/main; extra=() ;; without) tree=/work/wt-nocompact; extra=(BENCH_NO_COMPACTION=1) ;; esac
    echo "== $variant $round start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$tree" && env "${extra[@]}" PATH="/work/main/node_modules/node/bin:$PATH" npx tsx bench/cpu-per-token.ts --store postgres) \
      > "$out/cpu-pg24-$variant-$round.txt" 2>&1
    sleep 3
  done
done
