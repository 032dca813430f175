#!/usr/bin/env bash
# The standard scenarios (workloads/scenarios/) for every style, into one folder that
# `harness report` reads (REPORT.md's "Overload and faults" section comes from it).
#   scripts/scenarios.sh [OUTPUT_DIR] [STYLE…]     (default: results/runs/scenarios-<UTC stamp>, all styles)
#
# Per style, in this order:
#   capacity        (in OUTPUT_DIR/capacity/, apart: not a scenario) herd-mixed closed loop for 3 s: the style's throughput with the generator on its
#                   own core (--pin), the base of `overload` (a stand-in for its knee: a knee sweep
#                   takes minutes per style, and at the closed-loop rate p99 is above any objective,
#                   so half of it is below the knee)
#   overload        --load <capacity>: 0.5x for 5 s, 2x (4× the phase before) for 10 s, 0.5x for 10 s
#   overload        --load 50k: the same at one base for every style (25k/s, 100k/s, 25k/s), a comparison
#                   at equal offered load (100k/s is about what the generator's core can send)
#   member-hang     --load 10k: Welsh SIGSTOPped for 2 s at 5k/s
#   member-crash    --load 10k: Welsh SIGKILLed, restarted 3 s later, at 5k/s
#   upstream-stall  --load 2k: herd-query at 1k/s, the places backend holding every request for 2 s
# Every run pins the generator and the servers to disjoint CPUs. About 2 minutes per style.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/runs/scenarios-$(date -u +%Y%m%dT%H%M%SZ)}
shift || true
cargo build --release -p harness
harness=target/release/harness
if [ $# -gt 0 ]; then styles=("$@"); else
  mapfile -t styles < <(sed -n 's/^name = "\(.*\)"/\1/p' impls/*/impl.toml | sort)
fi
mkdir -p "$out/capacity"
for style in "${styles[@]}"; do
  echo "== $style: capacity"
  $harness run --impl "$style" --load max --duration 3s --warmup 1s --pin --output "$out/capacity/$style.json" >/dev/null 2>"$out/capacity/$style.log"
  capacity=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['summary']['achieved_rps']))" "$out/capacity/$style.json")
  echo "   $capacity replies/s"
  for run in "overload $capacity" "overload 50000" "member-hang 10000" "member-crash 10000" "upstream-stall 2000"; do
    set -- $run
    echo "== $style: $1 (--load $2)"
    name="$style-$1-$2"
    $harness run --impl "$style" --scenario "$1" --load "$2" --warmup 2s --pin --output "$out/$name.json" 2>"$out/$name.log" >/dev/null \
      || echo "   failed: see $out/$name.log"
    grep -A12 '^scenario ' "$out/$name.log" | grep -v '^┌\|^└\|^╞' | sed 's/^/   /' || true
  done
done
echo "$out"
