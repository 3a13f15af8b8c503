#!/bin/bash
# The interleaved pairs of docs/benchmarks.md, "A start reads neither its key nor its chat" (2026-12-02): runs one
# benchmark n times on the commit before (BASE_DIR, a git worktree) and after (NEW_DIR), alternating, with the
# Node 24 of the `node` dependency. Output: $OUT/<tag>-{base,main}-<i>.txt, each headed by its time and load.
#   BASE_DIR=/path/wt-before NEW_DIR=/path/wt-after OUT=/tmp/pairs pairs.sh <benchmark> <n> <tag> [args...]
# (A worktree needs node_modules: `ln -s "$PWD/node_modules" /path/wt-before/node_modules`.)
set -u
bench=$1; n=$2; tag=$3; shift 3
out=${OUT:?set OUT}; mkdir -p "$out"
export PATH=$NEW_DIR/node_modules/node/bin:$PATH DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
for i in $(seq 1 "$n"); do
  for side in base main; do
    dir=$NEW_DIR; [ $side = base ] && dir=$BASE_DIR
    file=$out/$tag-$side-$i.txt
    (cd "$dir" && echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" > "$file" &&
      timeout 900 npx tsx "bench/$bench.ts" "$@" >> "$file" 2>&1)
  done
done
