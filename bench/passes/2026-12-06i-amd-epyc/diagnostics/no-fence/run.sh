#!/bin/bash
cd /work/wt-sc
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres PATH="$PWD/node_modules/node/bin:$PATH"
for i in 1 2 3; do
  echo "== default $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/nf/log.txt
  timeout 300 npx tsx bench/paced-load.ts --target a,postgres --runs 100 > /tmp/nf/default-$i.txt 2>&1
  echo "== nofence $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/nf/log.txt
  (cd /work/wt-nf && timeout 300 npx tsx bench/paced-load.ts --target a,postgres --runs 100 > /tmp/nf/nofence-$i.txt 2>&1)
done
echo "== done $(date -u +%H:%M:%S)" >> /tmp/nf/log.txt
