#!/bin/bash
# Whether what runs before a target in one `paced-load` changes its figures: Outrun on PostgreSQL measured
# right after another target's waves of 100 and 500 runs (Node 24, 50bcfa6). Output beside this script.
set -u
out=$(cd "$(dirname "$0")" && pwd)
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
cd /work/main
for before in ${BEFORE:-pglite d a}; do
  echo "== $before,postgres start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  PATH="/work/main/node_modules/node/bin:$PATH" npx tsx bench/paced-load.ts --target "$before,postgres" --runs 100,500 \
    > "$out/paced-$before-then-postgres.txt" 2>&1
  grep -h "while runs start" "$out/paced-$before-then-postgres.txt" | cut -c1-200
  grep -h "^| [A-Z]" "$out/paced-$before-then-postgres.txt" | head -5 | cut -c1-200
  sleep 5
done
