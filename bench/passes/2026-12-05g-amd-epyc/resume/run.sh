#!/bin/bash
# Goal 5a in rounds: `resume-latency --store postgres` with Redis, as the scorecard runs it, three times
# (Node 24, 728420d). Output beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_REDIS_URL=redis://127.0.0.1:6379
cd /work/main
for round in 1 2 3; do
  echo "== $round start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  PATH="/work/main/node_modules/node/bin:$PATH" npx tsx bench/resume-latency.ts --store postgres \
    > "$out/resume-pg24-$round.txt" 2>&1
  grep -h "^| Outrun  \|^| B: " "$out/resume-pg24-$round.txt" | cut -c1-120
  sleep 5
done
