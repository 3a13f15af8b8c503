#!/bin/bash
# 100 paced runs (bench/paced-load.ts --target a,postgres --runs 100), the window's variants interleaved:
# always (2 ms, as before the change), adaptive (2 ms while the last insert held < 4 events), off (0).
cd /work/main
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres PATH="$PWD/node_modules/node/bin:$PATH"
OUT=bench/passes/2026-12-06j-amd-epyc/diagnostics/window/paced-100
run() { # name, window, below
  echo "== $1 $4 $(date -u +%H:%M:%S) steal $(head -1 /proc/stat | awk '{print $9}')" >> $OUT/log.txt
  OUTRUN_EVENT_COALESCE_MS=$2 SCRATCH_COALESCE_BELOW=$3 timeout 300 \
    npx tsx bench/paced-load.ts --target a,postgres --runs 100 > $OUT/$1-$4.txt 2>&1
}
for i in 1 2 3 4; do
  case $i in
    1|3) run always 2 Infinity $i; run adaptive 2 4 $i; run off 0 Infinity $i ;;
    *) run off 0 Infinity $i; run adaptive 2 4 $i; run always 2 Infinity $i ;;
  esac
done
echo "== done $(date -u +%H:%M:%S)" >> $OUT/log.txt
