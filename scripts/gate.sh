#!/usr/bin/env bash
# The per-style CI gate (and CI's performance smoke): every style at a light load (herd-mixed at
# 300 requests/s, so a 2-core machine is far from saturated), 3 interleaved rounds of 3 s, with
# every server system call counted through perf. Fails if any request fails, or if a style's
# system calls or voluntary context switches per request rose past the band recorded in
# results/baseline/gate/counts.json (see harness/src/gate.rs for why counts and not time).
#   scripts/gate.sh [OUTPUT_DIR]    one gate run, checked against the baseline (what CI runs); a
#                                   style past its band runs twice more, and fails the gate only if
#                                   both confirming runs are past it too (see harness/src/gate.rs)
#   scripts/gate.sh --record [N]    N gate runs (default 10, ~30 min on an otherwise idle machine)
#                                   written as the new baseline: only on purpose, after a change
#                                   meant to move the counts; commit it with the change and say why
#                                   in the commit message. (Five runs proved too few: their band
#                                   missed one of the next ten runs; see the README.)
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=results/baseline/gate/counts.json

# System calls by name need perf's tracepoints (Debian's linux-perf; CI runs as root).
if ! command -v perf >/dev/null; then
  echo "== installing linux-perf (perf tracepoints count the servers' system calls)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null; }
fi
# perf reads the tracepoints from tracefs. On a fresh boot it may not be mounted yet (seen here: the
# first run of a new machine found no /sys/kernel/tracing/events and counted no system call).
if [ ! -d /sys/kernel/tracing/events/syscalls ] && [ ! -d /sys/kernel/debug/tracing/events/syscalls ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
cargo build --release -p harness

gate_run() { # OUTPUT_DIR [STYLES]
  target/release/harness run --impl "${2:-all}" --workload herd-mixed --load 300 --repeat 3 --duration 3s \
    --warmup 1s --syscalls --fail-on-errors --output-dir "$1"
}

if [ "${1:-}" = "--record" ]; then
  n=${2:-10}
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  runs=()
  for i in $(seq 1 "$n"); do
    gate_run "target/gate/record-$stamp/$i" >/dev/null
    runs+=("target/gate/record-$stamp/$i")
  done
  target/release/harness gate record --output "$baseline" "${runs[@]}"
else
  out=${1:-target/gate/$(date -u +%Y%m%dT%H%M%SZ)}
  gate_run "$out"
  if target/release/harness gate check --baseline "$baseline" --breaches-to "$out.breaches" "$out"; then
    exit 0
  fi
  # Not a breach but an error (a style missing, no counts): nothing to confirm.
  [ -s "$out.breaches" ] || exit 1
  styles=$(paste -sd, "$out.breaches")
  echo "== $styles breached: two more runs of it, a regression only if both breach too"
  gate_run "$out-confirm-1" "$styles"
  gate_run "$out-confirm-2" "$styles"
  target/release/harness gate check --baseline "$baseline" "$out" --confirm "$out-confirm-1" --confirm "$out-confirm-2"
fi
