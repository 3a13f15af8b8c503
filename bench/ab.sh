#!/bin/bash
# Two commits side by side: `cpu-per-token --store postgres --rounds 1` on each, in interleaved pairs, ABBA
# order (base head, head base, base head, …), so that a drift of the machine over the run falls on both sides.
# Each side runs from a `git worktree` of its commit, sharing this checkout's node_modules. Run from the
# repository root:
#
#   bash bench/ab.sh OUTPUT_DIRECTORY BASE_REV HEAD_REV [PAIRS]       (PAIRS default 4; about 75 s a pair)
#
# BASE_REV and HEAD_REV may be the same commit, told apart by the environment of each side:
# AB_BASE_ENV / AB_HEAD_ENV ("NAME=value …", e.g. AB_BASE_ENV=OUTRUN_MODEL_IDLE_TIMEOUT_MS=0). Output: base-N.txt
# and head-N.txt for each pair, log.txt (each run's start, end and load average), and summary.txt (each
# scenario's figures per pair and their medians, `bench/ab-summary.py`). Do not run tests or builds meanwhile.
set -euo pipefail
OUT=${1:?usage: bash bench/ab.sh OUTPUT_DIRECTORY BASE_REV HEAD_REV [PAIRS]}
BASE_REV=${2:?base revision}
HEAD_REV=${3:?head revision}
PAIRS=${4:-4}
ROOT=$(pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TREES=$(mktemp -d /tmp/outrun-ab.XXXXXX)
cleanup() {
  git -C "$ROOT" worktree remove --force "$TREES/base" 2>/dev/null || true
  git -C "$ROOT" worktree remove --force "$TREES/head" 2>/dev/null || true
  rm -rf "$TREES"
}
trap cleanup EXIT
for side in base head; do
  rev=$BASE_REV; [ "$side" = head ] && rev=$HEAD_REV
  git worktree add -q --detach "$TREES/$side" "$rev"
  ln -s "$ROOT/node_modules" "$TREES/$side/node_modules"
done
export PATH="$ROOT/node_modules/.bin:$PATH"
echo "# base $(git rev-parse --short "$BASE_REV") ${AB_BASE_ENV:-}; head $(git rev-parse --short "$HEAD_REV") ${AB_HEAD_ENV:-}" >> "$OUT/log.txt"

run() { # side pair
  local env=${AB_BASE_ENV:-}; [ "$1" = head ] && env=${AB_HEAD_ENV:-}
  echo "== $1 pair $2 start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/log.txt"
  local rc=0
  (cd "$TREES/$1" && env $env npx tsx bench/cpu-per-token.ts --store postgres --rounds 1 > "$OUT/$1-$2.txt" 2>&1) || rc=$?
  echo "== $1 pair $2 end $(date -u +%T) rc $rc" >> "$OUT/log.txt"
}
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then run base "$i"; run head "$i"; else run head "$i"; run base "$i"; fi
done
echo done >> "$OUT/log.txt"
python3 "$ROOT/bench/ab-summary.py" "$OUT" | tee "$OUT/summary.txt"
