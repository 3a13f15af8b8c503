#!/bin/bash
# Goal 2b with the admission cap raised to 500: `paced-load --target a,postgres --runs 500
# --worker-concurrency 500` twice (Node 24, 50bcfa6). Output beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
cd /work/main
for round in 1 2; do
  echo "== $round start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  PATH="/work/main/node_modules/node/bin:$PATH" npx tsx bench/paced-load.ts --target a,postgres --runs 500 \
    --worker-concurrency 500 > "$out/paced-a-postgres-500-cap500-$round.txt" 2>&1
  grep -h "^| [A-Z]" "$out/paced-a-postgres-500-cap500-$round.txt" | head -2 | cut -c1-230
  sleep 5
done
