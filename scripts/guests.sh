#!/usr/bin/env bash
# The guests against the Rust styles, in interleaved rounds of one run folder: herd-mixed and
# herd-query at 2k/s (every style and every guest; CPU, syscalls and switches per request), 1,000
# connections at 2k/s (the guests, event-handler), a knee sweep of herd-mixed (the guests beside
# event-handler), then `harness report` over the folder. CPU per request at a fixed
# echo rate against the C floor is scripts/cpu-at-rate.sh's (see the README's guest section).
#   scripts/guests.sh [FOLDER] [ROUNDS] [WINDOW] [WARMUP]
# Defaults: results/runs/<UTC timestamp>, 3 rounds of a 3 s window after 1 s of warm-up. About 20
# minutes on two cores. Guests are set up and verified first (`harness run` refuses an unverified
# one); every CPU is kept from idling by a spinner of the idle class (see below).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-results/runs/$(date -u +%Y%m%dT%H%M%SZ)}
rounds=${2:-3}
window=${3:-3s}
warmup=${4:-1s}
cargo build --release -p harness
target/release/harness setup --impl guests
target/release/harness verify --impl guests
# No CPU idles during the measurement: a spinner of the idle scheduling class on every CPU runs
# whenever nothing else wants it and gives way at once to anything that does. Waking a server from
# an idle CPU costs it tens of microseconds more (idle exit, cold caches) than waking it from a busy
# one, and whether a CPU was idle depends on what else the machine runs (scripts/gate.sh measured
# 20-25 % on CPU per request); with the spinners every row and every round meet the same machine.
spinners=()
for cpu in $(seq 0 $(( $(nproc) - 1 ))); do
  chrt --idle 0 taskset -c "$cpu" sh -c 'while :; do :; done' &
  spinners+=($!)
done
trap 'kill "${spinners[@]}" 2>/dev/null' EXIT
h() {
  target/release/harness run --duration "$window" --warmup "$warmup" --syscalls --output-dir "$dir/$1" "${@:2}" \
    || echo "guests: some runs in $1 failed"
}
h light       --impl all,guests --workload herd-mixed --load 2k --repeat "$rounds"
h fixed       --impl all,guests --workload herd-query --load 2k --repeat "$rounds"
h connections --impl guests,event-handler --workload herd-mixed --load 2k --connections 1000 --repeat 2
h knee        --impl guests,event-handler --workload herd-mixed \
  --load 1k,2k,3k,5k,7k,10k,15k,20k --repeat 1
target/release/harness report "$dir"
