#!/bin/bash
cd /work/wt-sc
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres PATH="$PWD/node_modules/node/bin:$PATH"
for i in 1 2 3; do
  echo "== default $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/hb/log.txt
  timeout 300 npx tsx bench/paced-load.ts --target a,postgres --runs 100 > /tmp/hb/default-$i.txt 2>&1
  echo "== nolease $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/hb/log.txt
  OUTRUN_LEASE_MS=600000 OUTRUN_SWEEP_INTERVAL_MS=600000 timeout 300 npx tsx bench/paced-load.ts --target a,postgres --runs 100 > /tmp/hb/nolease-$i.txt 2>&1
done
echo "== done $(date -u +%H:%M:%S)" >> /tmp/hb/log.txt
