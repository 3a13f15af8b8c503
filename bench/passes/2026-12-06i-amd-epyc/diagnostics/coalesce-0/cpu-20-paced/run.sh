#!/bin/bash
cd /work/main
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres PATH="$PWD/node_modules/node/bin:$PATH"
for i in 1 2 3; do
  echo "== default $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/co3/log.txt
  timeout 300 npx tsx bench/cpu-per-token.ts --store postgres --quick > /tmp/co3/default-$i.txt 2>&1
  echo "== coalesce0 $i $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> /tmp/co3/log.txt
  OUTRUN_EVENT_COALESCE_MS=0 timeout 300 npx tsx bench/cpu-per-token.ts --store postgres --quick > /tmp/co3/coalesce0-$i.txt 2>&1
done
echo "== done $(date -u +%H:%M:%S)" >> /tmp/co3/log.txt
