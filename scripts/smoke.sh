#!/usr/bin/env bash
# Performance smoke for CI: every style, a few seconds of herd-mixed at a low load. Fails if any
# request fails (wrong reply, timeout, disconnect …); then prints `harness compare`'s verdicts
# against results/baseline/smoke/ for information only (shared CI machines are too noisy to gate
# on time; see .github/workflows/perf.yml for the strict recipe on a dedicated runner).
#   scripts/smoke.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/smoke/$(date -u +%Y%m%dT%H%M%SZ)}
cargo build --release -p harness
target/release/harness run --impl all --workload herd-mixed --load 500 --duration 2s --warmup 1s \
  --fail-on-errors --output-dir "$out"
if [ -d results/baseline/smoke ]; then
  echo "== compare against results/baseline/smoke (informational)"
  target/release/harness compare --baseline results/baseline/smoke --current "$out" --metrics p50,p99,cpu || true
fi
