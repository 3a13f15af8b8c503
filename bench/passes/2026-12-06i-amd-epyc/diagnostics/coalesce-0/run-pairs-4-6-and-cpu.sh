#!/bin/bash
cd /work/wt-sc
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres PATH="$PWD/node_modules/node/bin:$PATH"
for i in 4 5 6; do
  echo "== default $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/co2/log.txt
  timeout 300 npx tsx bench/paced-load.ts --target a,postgres --runs 100 > /tmp/co2/default-$i.txt 2>&1
  echo "== coalesce0 $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/co2/log.txt
  OUTRUN_EVENT_COALESCE_MS=0 timeout 300 npx tsx bench/paced-load.ts --target a,postgres --runs 100 > /tmp/co2/coalesce0-$i.txt 2>&1
done
echo "== done $(date -u +%H:%M:%S)" >> /tmp/co2/log.txt
cd /work/wt-sc
echo "== cpu default $(date -u +%H:%M:%S)" >> /tmp/co2/log.txt
timeout 400 npx tsx bench/cpu-per-token.ts --store postgres > /tmp/co2/cpu-default.txt 2>&1
echo "== cpu coalesce0 $(date -u +%H:%M:%S)" >> /tmp/co2/log.txt
OUTRUN_EVENT_COALESCE_MS=0 timeout 400 npx tsx bench/cpu-per-token.ts --store postgres > /tmp/co2/cpu-coalesce0.txt 2>&1
echo "== all done $(date -u +%H:%M:%S)" >> /tmp/co2/log.txt
