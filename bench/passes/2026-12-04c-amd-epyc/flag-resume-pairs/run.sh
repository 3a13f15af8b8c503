#!/bin/bash
# resume-latency with the shipped Node flags against Node's defaults, interleaved pairs, one checkout (DIR).
cd "${DIR:?set DIR}"
export PATH=$PWD/node_modules/node/bin:$PATH DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_REDIS_URL=redis://127.0.0.1:6379
out=${OUT:?set OUT}; mkdir -p "$out"
for i in 1 2 3; do
  for side in defaults shipped; do
    f=$out/resume-$side-$i.txt
    echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) commit $(git rev-parse --short HEAD)" > $f
    defaults=0; [ $side = defaults ] && defaults=1
    BENCH_SERVER_NODE_DEFAULTS=$defaults timeout 900 npx tsx bench/resume-latency.ts --store postgres >> $f 2>&1
  done
done
echo done > $out/done
