#!/bin/bash
# Interleaved pairs of cpu-per-token: base (dd58bcd) and head (/work/main), alternating which goes first.
out=/tmp/ab-out
run() { # name dir n
  local name=$1 dir=$2 n=$3
  echo "== $name pair $n start $(date +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/log.txt
  (cd $dir && env PATH="/work/main/node_modules/node/bin:$PATH" DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx bench/cpu-per-token.ts --store postgres --rounds 1 > $out/$name-$n.txt 2>&1)
  echo "== $name pair $n end $(date +%H:%M:%S) rc $?" >> $out/log.txt
}
for n in 1 2 3 4; do
  if [ $((n % 2)) -eq 1 ]; then run base /tmp/ab-base $n; run head /work/main $n; else run head /work/main $n; run base /tmp/ab-base $n; fi
done
echo done >> $out/log.txt
