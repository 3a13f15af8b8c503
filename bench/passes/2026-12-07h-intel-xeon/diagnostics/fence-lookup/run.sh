#!/bin/bash
# Interleaved: the commit before (a worktree at BASE_TREE) and this checkout, ROUNDS times each; output in OUT.
# Needs the scratch PostgreSQL of paced-statements.ts on port 5440.
set -euo pipefail
BASE_TREE=${1:?base worktree}; OUT=${2:?output directory}; ROUNDS=${3:-3}
D=bench/passes/2026-12-07h-intel-xeon/diagnostics/fence-lookup
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for side in base head; do
    tree=$(pwd); [ "$side" = base ] && tree=$BASE_TREE
    (cd "$tree" && DATABASE_URL=postgres://postgres@127.0.0.1:5440/postgres npx tsx "$D/paced-statements.ts" 100) \
      > "$OUT/$side-$round.txt" 2>&1
  done
done
