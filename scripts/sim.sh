#!/usr/bin/env bash
# The herd under simulation (impls/core/tests/simulation.rs), in a release build.
#   scripts/sim.sh [SEEDS]             explore seeds 0..SEEDS (default 100000); a failure names its seed
#   scripts/sim.sh --replay SEED       replay one schedule and print its steps
#   scripts/sim.sh --mutants [SEEDS]   each planted defect in scripts/sim-mutants/ must make the
#                                      simulation fail (default 2000 seeds); prints the seed that caught it
# CI runs `scripts/sim.sh 20000` and `scripts/sim.sh --mutants`.
set -euo pipefail
cd "$(dirname "$0")/.."
test_cmd=(cargo test -q --release -p herd-core --test simulation every_seeded_schedule -- --nocapture)
case "${1:-}" in
  --replay)
    HERD_SIM_SEED=$2 "${test_cmd[@]}"
    ;;
  --mutants)
    seeds=${2:-2000}
    status=0
    for patch in scripts/sim-mutants/*.patch; do
      name=$(basename "$patch" .patch)
      git apply "$patch"
      # Whatever happens, the tree goes back as it was.
      trap 'git apply -R "$patch"' EXIT
      if out=$(HERD_SIM_SEEDS=$seeds "${test_cmd[@]}" 2>&1); then
        echo "NOT CAUGHT  $name: $seeds schedules passed with it"
        status=1
      else
        caught=$(grep -o 'seed [0-9]*: .*' <<<"$out" | head -1 | cut -c1-160)
        echo "caught      $name: $caught"
      fi
      git apply -R "$patch"
      trap - EXIT
    done
    exit $status
    ;;
  *)
    HERD_SIM_SEEDS=${1:-100000} "${test_cmd[@]}"
    ;;
esac
