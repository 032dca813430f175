#!/usr/bin/env bash
# The standard matrix: every style × every workload at a few loads, a capacity-knee sweep of
# herd-mixed, 10,000 connections at a low rate, and single-threaded echo; all into one run folder,
# then `harness report` over it (tables and plots in <folder>/report, REPORT.md refreshed).
#   scripts/matrix.sh [FOLDER] [WINDOW] [WARMUP]
# Defaults: results/runs/<UTC timestamp>, a 5 s window after 2 s of warm-up (about 25 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-results/runs/$(date -u +%Y%m%dT%H%M%SZ)}
window=${2:-5s}
warmup=${3:-2s}
cargo build --release -p harness
# A failed point (a style that crashed) is reported and the matrix goes on.
h() { target/release/harness run --duration "$window" --warmup "$warmup" --output-dir "$dir/$1" "${@:2}" || echo "matrix: some runs in $1 failed"; }
h fixed        --impl all --workload herd-mixed,herd-update --load 10k
h fixed        --impl all --workload herd-query --load 2k
h fixed        --impl all --workload churn --load 2k
h fixed        --impl all --workload echo --load max
h echo-1thread --impl all --workload echo --load max --threads 1
h connections  --impl all --workload herd-mixed --load 1k --connections 10000
h knee         --impl all --workload herd-mixed --load 5k,10k,15k,20k,30k,40k
target/release/harness report "$dir" --update REPORT.md
