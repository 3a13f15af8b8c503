#!/bin/bash
# Interleaved pairs, ABBA order, both at 70815fc (worktree /tmp/ab-new): "off" with OUTRUN_MODEL_IDLE_TIMEOUT_MS=0, "on" with the default.
OUT=/work/main/bench/passes/2026-12-07f-amd-epyc/watchdog-off-ab
export PATH=/work/main/node_modules/.bin:$PATH
run() { # side pair
  local idle=600000; [ "$1" = off ] && idle=0
  echo "== $1 pair $2 start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/log.txt
  (cd /tmp/ab-new && OUTRUN_MODEL_IDLE_TIMEOUT_MS=$idle npx tsx bench/cpu-per-token.ts --store postgres --rounds 1 > $OUT/$1-$2.txt 2>&1)
  echo "== $1 pair $2 end $(date -u +%T) rc $?" >> $OUT/log.txt
}
for i in 1 2 3 4; do
  if [ $((i % 2)) = 1 ]; then run off $i; run on $i; else run on $i; run off $i; fi
done
echo done >> $OUT/log.txt
