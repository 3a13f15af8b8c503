#!/bin/bash
# The scorecard of docs/benchmarks.md: every benchmark, one after another, Node 24 (the `node` dependency) then
# the `node` on PATH (Node 20 on the benchmark machine). Output: one file per step, and log.txt with each step's
# start, end, load average, how long it waited for the machine to settle, and the share of the machine's CPU
# time the hypervisor gave to other guests during the step (steal: such a step ran slower than its load shows).
# Run from the repository root:
#
#   bash bench/scorecard.sh OUTPUT_DIRECTORY        (about 35 minutes on 2 cores; then OUTPUT_DIRECTORY/goals.txt)
#
# Before each step it waits until the CPUs were at least BENCH_SETTLE_IDLE % idle over 2 s (default 95; 0 turns
# the wait off), at most BENCH_SETTLE_MAX_S seconds (default 90): a step otherwise starts in the tail of the one
# before it (its servers exiting, PostgreSQL's checkpoint and autovacuum), which the load average shows only
# a minute later.
set -u
out=${1:?usage: scorecard.sh OUTPUT_DIRECTORY}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
redis=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
settle_idle=${BENCH_SETTLE_IDLE:-95}
settle_max=${BENCH_SETTLE_MAX_S:-90}
for setting in "BENCH_SETTLE_IDLE=$settle_idle" "BENCH_SETTLE_MAX_S=$settle_max"; do
  [[ ${setting#*=} =~ ^[0-9]+$ ]] || { echo "scorecard.sh: $setting is not a whole number" >&2; exit 2; }
done
mkdir -p "$out"

# The CPUs' idle share (%) over the next 2 s, from /proc/stat's first line (idle + iowait over the total).
idle_percent() {
  local a b
  read -r -a a < /proc/stat
  sleep 2
  read -r -a b < /proc/stat
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((total > 0 ? 100 * idle / total : 100))
}

settle() {
  local started=$SECONDS idle=100
  if [ "$settle_idle" -gt 0 ]; then
    while idle=$(idle_percent) && [ "$idle" -lt "$settle_idle" ] && [ $((SECONDS - started)) -lt "$settle_max" ]; do :; done
  fi
  echo "settled in $((SECONDS - started)) s, idle $idle %"
}

# /proc/stat's first line as "total steal" ticks: all CPU time so far, and the part the hypervisor gave to
# other guests (bench/support/host-cpu.ts reads it the same way).
host_cpu() {
  local a
  read -r -a a < /proc/stat
  echo "$((a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7] + a[8])) ${a[8]}"
}

step() {
  local name=$1
  shift
  local settled rc before after
  settled=$(settle)
  echo "== $name start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) ($settled)" >> "$out/log.txt"
  read -r -a before <<< "$(host_cpu)"
  "$@" > "$out/$name.txt" 2>&1
  rc=$?
  read -r -a after <<< "$(host_cpu)"
  local total=$((after[0] - before[0])) stolen=$((after[1] - before[1]))
  echo "== $name end $(date -u +%H:%M:%S) rc $rc, steal $((total > 0 ? 100 * stolen / total : 0)) % of the CPU time" >> "$out/log.txt"
}

node24=(env PATH="$PWD/node_modules/node/bin:$PATH" npx tsx)
step paced24 "${node24[@]}" bench/paced-load.ts --target a0,a,b,d,pglite,postgres,redis --workers 2 --runs 100,500
step cpu-pg24 "${node24[@]}" bench/cpu-per-token.ts --store postgres --rounds 3
step cpu-pglite24 "${node24[@]}" bench/cpu-per-token.ts --store pglite --rounds 3
step fanout-pg24 "${node24[@]}" bench/fan-out.ts --store postgres
step fanout-pglite24 "${node24[@]}" bench/fan-out.ts --store pglite
step resume-pg24 env BENCH_REDIS_URL="$redis" "${node24[@]}" bench/resume-latency.ts --store postgres
step resume-pglite24 "${node24[@]}" bench/resume-latency.ts --store pglite
step storage-pg24 "${node24[@]}" bench/storage.ts --store postgres
step storage-pglite24 "${node24[@]}" bench/storage.ts --store pglite
step scaleout24 "${node24[@]}" bench/scale-out.ts --workers 1,2,4
step roundtrips24 "${node24[@]}" bench/round-trips.ts
step idle-pg24 "${node24[@]}" bench/idle-cpu.ts --store postgres
node20=(node --import tsx) # the node on PATH: Node 20 on the benchmark machine
step paced20 "${node20[@]}" bench/paced-load.ts --target a0,a,pglite,postgres --runs 100,500
step cpu-pg20 "${node20[@]}" bench/cpu-per-token.ts --store postgres --rounds 3
step cpu-pglite20 "${node20[@]}" bench/cpu-per-token.ts --store pglite --rounds 3
step fanout-pg20 "${node20[@]}" bench/fan-out.ts --store postgres
step resume-pg20 env BENCH_REDIS_URL="$redis" "${node20[@]}" bench/resume-latency.ts --store postgres
step resume-pglite20 "${node20[@]}" bench/resume-latency.ts --store pglite

# Issue 10's goals as this pass measured them (bench/goals.ts takes several passes' directories to compare).
npx tsx bench/goals.ts "$out" > "$out/goals.txt" 2>&1 || echo "scorecard.sh: bench/goals.ts failed, see $out/goals.txt" >&2
