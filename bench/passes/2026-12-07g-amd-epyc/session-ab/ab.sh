#!/bin/bash
# Interleaved pairs, ABBA order: base 3324ba5 (the last session's end, worktree /tmp/ab-base) and head 62457b3
# (this session: invariant 15 end to end, worktree /tmp/ab-head).
OUT=/work/main/bench/passes/2026-12-07g-amd-epyc/session-ab
export PATH=/work/main/node_modules/.bin:$PATH
run() { # side pair
  local dir=/tmp/ab-head; [ "$1" = base ] && dir=/tmp/ab-base
  echo "== $1 pair $2 start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/log.txt
  (cd $dir && npx tsx bench/cpu-per-token.ts --store postgres --rounds 1 > $OUT/$1-$2.txt 2>&1)
  echo "== $1 pair $2 end $(date -u +%T) rc $?" >> $OUT/log.txt
}
for i in 1 2 3 4; do
  if [ $((i % 2)) = 1 ]; then run base $i; run head $i; else run head $i; run base $i; fi
done
echo done >> $OUT/log.txt
