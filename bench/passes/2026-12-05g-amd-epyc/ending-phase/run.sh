#!/bin/bash
# Interleaved runs of `paced-load --target postgres --runs 100` (Node 24) in three trees: `after` = 50bcfa6
# (decision 0015: an ending writes its run's last events), `before` = 0380170 (the commit before it), and
# `nocompact` = 50bcfa6 with compaction off (BENCH_NO_COMPACTION, a two-line patch in a scratch worktree, not
# committed). Output: one file per run beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
node24=/work/main/node_modules/node/bin
for round in ${ROUNDS:-1 2 3 4}; do
  for variant in ${VARIANTS:-after before nocompact}; do
    case $variant in
      after) tree=/work/main; extra=() ;;
      before) tree=/work/wt-before; extra=() ;;
      nocompact) tree=/work/wt-nocompact; extra=(BENCH_NO_COMPACTION=1) ;;
    esac
    echo "== $variant $round start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$tree" && env "${extra[@]}" PATH="$node24:$PATH" npx tsx bench/paced-load.ts --target postgres --runs 100) \
      > "$out/paced-$variant-$round.txt" 2>&1
    grep -h "while runs start" "$out/paced-$variant-$round.txt" | cut -c1-120
    grep -h "^| Outrun, PostgreSQL" "$out/paced-$variant-$round.txt" | head -1 | cut -c1-200
    sleep 5
  done
done
