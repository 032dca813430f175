#!/usr/bin/env bash
# The standard matrix: every style × every workload at a few loads, a capacity-knee sweep of
# herd-mixed, 10,000 connections at a low rate, and single-threaded echo; all into one run folder,
# then `harness report` over it (tables and plots in <folder>/report, REPORT.md refreshed, its
# findings' checks judged).
#   scripts/matrix.sh [FOLDER] [ROUNDS] [WINDOW] [WARMUP]
# Defaults: results/runs/<UTC timestamp>, 7 interleaved rounds of a 3 s window after 1 s of
# warm-up, every server system call counted (--syscalls). About an hour on two cores.
#
# Why 7 × 3 s: measured on herd-mixed 10k, all nine styles (REPORT.md, Method), 7 rounds of 3 s
# against 3 rounds of 10 s (the same machine time) gave per-round ratios whose standard error was
# ~20 % smaller for syscalls and switches per request, equal for CPU, and ~40 % larger for p50 —
# and an interval drawn from 3 rounds rests on three numbers. Findings rest on counts first.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-results/runs/$(date -u +%Y%m%dT%H%M%SZ)}
rounds=${2:-7}
window=${3:-3s}
warmup=${4:-1s}
cargo build --release -p harness
# A failed point (a style that crashed) is reported and the matrix goes on.
h() {
  target/release/harness run --duration "$window" --warmup "$warmup" --syscalls --output-dir "$dir/$1" "${@:2}" \
    || echo "matrix: some runs in $1 failed"
}
h fixed        --impl all --workload herd-mixed,herd-update --load 10k --repeat "$rounds"
h light        --impl all --workload herd-mixed --load 2k --repeat "$rounds"
h fixed        --impl all --workload herd-query --load 2k --repeat "$rounds"
h fixed        --impl all --workload churn --load 2k --repeat "$rounds"
# Every IAMAT a new client, with a cap a 3 s window overruns: the eviction path's cost and rate.
h churn-ids    --impl all --workload herd-churn-ids --load 10k --max-clients 10000 --repeat 3
h fixed        --impl all --workload echo --load max --repeat "$rounds"
h echo-1thread --impl all --workload echo --load max --threads 1 --repeat "$rounds"
h connections  --impl all --workload herd-mixed --load 1k --connections 10000 --repeat 3
h knee         --impl all --workload herd-mixed --load 5k,10k,15k,20k,30k,40k --repeat 2
target/release/harness report "$dir" --update REPORT.md
