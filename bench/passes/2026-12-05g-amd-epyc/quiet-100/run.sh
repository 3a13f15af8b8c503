#!/bin/bash
# Goals 1 and 2a in a quiet hour: `paced-load --target a,d,postgres --runs 100` three times, the targets'
# order rotated each time (Node 24, 50bcfa6). Output beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
cd /work/main
round=0
for targets in a,d,postgres d,postgres,a postgres,a,d; do
  round=$((round + 1))
  echo "== $round $targets start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  PATH="/work/main/node_modules/node/bin:$PATH" npx tsx bench/paced-load.ts --target "$targets" --runs 100 \
    > "$out/paced-$round-$targets.txt" 2>&1
  grep -h "^| [A-Z]" "$out/paced-$round-$targets.txt" | head -3 | cut -c1-160
  sleep 5
done
