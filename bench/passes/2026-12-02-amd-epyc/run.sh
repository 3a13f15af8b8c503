#!/bin/bash
# The scorecard passes of docs/benchmarks.md from 2026-12-02 to 2026-12-04 ran these steps, each started right
# after the one before: bench/scorecard.sh (the script now) without its wait for the machine to settle.
# Run from the repository root: bash bench/passes/2026-12-02-amd-epyc/run.sh OUTPUT_DIRECTORY
BENCH_SETTLE_IDLE=0 exec bash "$(dirname "$0")/../../scorecard.sh" "$@"
