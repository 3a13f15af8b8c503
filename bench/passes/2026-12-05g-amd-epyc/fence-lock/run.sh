#!/bin/bash
# What the group commit's fence lock costs PostgreSQL: `cpu-per-token --store postgres` (Node 24) at 7b9947b
# (`with`) and with `for share` dropped from the fenced insert (`without`: an experiment only, it breaks the
# fence under a concurrent takeover; a scratch worktree, not committed), interleaved. Output beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
for round in 1 2 3; do
  for variant in with without; do
    case $variant in with) tree=/work/main ;; without) tree=/work/wt-noshare ;; esac
    echo "== $variant $round start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$tree" && PATH="/work/main/node_modules/node/bin:$PATH" npx tsx bench/cpu-per-token.ts --store postgres) \
      > "$out/cpu-pg24-$variant-$round.txt" 2>&1
    grep -h "^| 100 paced\|^| one-token" "$out/cpu-pg24-$variant-$round.txt" | cut -c1-200
    sleep 3
  done
done
