#!/bin/bash
# Goal figures at HEAD: paced-load (A, D, Outrun PostgreSQL; 100 runs) with the shipped flags and with Node's
# defaults, two interleaved pairs; then three runs of resume-latency on PostgreSQL with two instances on Redis.
cd "${DIR:?set DIR}"
export PATH=$PWD/node_modules/node/bin:$PATH DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
out=${OUT:?set OUT}; mkdir -p "$out"
for i in 1 2; do
  for side in shipped defaults; do
    f=$out/paced-$side-$i.txt
    echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) commit $(git rev-parse --short HEAD)" > $f
    defaults=0; [ $side = defaults ] && defaults=1
    BENCH_SERVER_NODE_DEFAULTS=$defaults timeout 900 npx tsx bench/paced-load.ts --target a,d,postgres --runs 100 >> $f 2>&1
  done
done
for i in 1 2 3; do
  f=$out/resume-$i.txt
  echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) commit $(git rev-parse --short HEAD)" > $f
  BENCH_REDIS_URL=redis://127.0.0.1:6379 timeout 900 npx tsx bench/resume-latency.ts --store postgres >> $f 2>&1
done
echo done > $out/done
