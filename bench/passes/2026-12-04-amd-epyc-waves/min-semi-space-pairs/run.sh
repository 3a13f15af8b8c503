#!/bin/bash
cd /work/main
export PATH=/work/main/node_modules/node/bin:$PATH DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
for i in 5 6 7 8; do
  for side in default min16; do
    f=/work/scratch/s5/semi/$side-$i.txt
    argv=""; [ $side = min16 ] && argv="--min-semi-space-size=16"
    echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) argv [$argv]" > $f
    BENCH_SERVER_EXEC_ARGV="$argv" timeout 600 npx tsx bench/paced-load.ts --target postgres --runs 100 >> $f 2>&1
  done
done
echo done > /work/scratch/s5/semi/done
