#!/bin/bash
# The scorecard pass of docs/benchmarks.md ("Issue 10 scorecard — 2026-12-02, second pass"): every benchmark, one after
# another, Node 24 (the `node` dependency) then the `node` on PATH (Node 20 here). Output: one file per step, and log.txt
# with each step's start, end and load average. Run from the repository root: bash bench/passes/<dir>/run.sh OUT (bench/results/ is ignored by git)
set -u
out=${1:?usage: run.sh OUTPUT_DIRECTORY}
mkdir -p "$out"
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
redis=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
step() {
  name=$1; shift
  echo "== $name start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/log.txt"
  "$@" > "$out/$name.txt" 2>&1
  echo "== $name end $(date -u +%H:%M:%S) rc $?" >> "$out/log.txt"
}
node24=(env PATH="$PWD/node_modules/node/bin:$PATH" npx tsx)
step paced24 "${node24[@]}" bench/paced-load.ts --target a0,a,b,d,pglite,postgres,redis --workers 2 --runs 100,500
step cpu-pg24 "${node24[@]}" bench/cpu-per-token.ts --store postgres
step cpu-pglite24 "${node24[@]}" bench/cpu-per-token.ts --store pglite
step fanout-pg24 "${node24[@]}" bench/fan-out.ts --store postgres
step fanout-pglite24 "${node24[@]}" bench/fan-out.ts --store pglite
step resume-pg24 env BENCH_REDIS_URL="$redis" "${node24[@]}" bench/resume-latency.ts --store postgres
step resume-pglite24 "${node24[@]}" bench/resume-latency.ts --store pglite
step storage-pg24 "${node24[@]}" bench/storage.ts --store postgres
step storage-pglite24 "${node24[@]}" bench/storage.ts --store pglite
step scaleout24 "${node24[@]}" bench/scale-out.ts --workers 1,2,4
step roundtrips24 "${node24[@]}" bench/round-trips.ts
node20=(node --import tsx) # the node on PATH: Node 20 on this machine
step paced20 "${node20[@]}" bench/paced-load.ts --target a0,a,pglite,postgres --runs 100,500
step cpu-pg20 "${node20[@]}" bench/cpu-per-token.ts --store postgres
step cpu-pglite20 "${node20[@]}" bench/cpu-per-token.ts --store pglite
step fanout-pg20 "${node20[@]}" bench/fan-out.ts --store postgres
step resume-pg20 env BENCH_REDIS_URL="$redis" "${node20[@]}" bench/resume-latency.ts --store postgres
step resume-pglite20 "${node20[@]}" bench/resume-latency.ts --store pglite
