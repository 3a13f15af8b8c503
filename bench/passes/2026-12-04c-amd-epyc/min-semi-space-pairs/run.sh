#!/bin/bash
# Interleaved pairs of paced-load (postgres, 100 runs) with and without --min-semi-space-size=16, run from a
# checkout of 0908337 (DIR), before the benchmarks passed that flag to every server themselves: at a later
# commit, the `default` side needs BENCH_SERVER_NODE_DEFAULTS=1.   DIR=/path/checkout OUT=/tmp/semi run.sh
cd "${DIR:?set DIR}"
export PATH=$PWD/node_modules/node/bin:$PATH DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
out="${OUT:?set OUT}"
for i in 1 2 3 4 5 6 7 8; do
  for side in default min16; do
    f=$out/$side-$i.txt
    argv=""; [ $side = min16 ] && argv="--min-semi-space-size=16"
    echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) argv [$argv] commit $(git rev-parse --short HEAD)" > $f
    BENCH_SERVER_EXEC_ARGV="$argv" timeout 600 npx tsx bench/paced-load.ts --target postgres --runs 100 >> $f 2>&1
  done
done
echo done > $out/done
