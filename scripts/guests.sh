#!/usr/bin/env bash
# The guests against the Rust styles, in interleaved rounds of one run folder: herd-mixed and
# herd-query at 2k/s (every style and every guest; CPU, syscalls and switches per request), 1,000
# connections at 2k/s (the guests, event-handler), echo at 5k/s beside the C floor (every style
# and guest, servers pinned to one CPU; CPU per request from perf's task-clock), a knee sweep of
# herd-mixed (the guests beside event-handler), then `harness report` over the folder.
#   scripts/guests.sh [FOLDER] [ROUNDS] [WINDOW] [WARMUP]
#   STEPS="echo knee" scripts/guests.sh FOLDER    only these steps (light fixed connections echo knee)
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
steps=${STEPS:-light fixed connections echo knee}
step() { [[ " $steps " == *" $1 "* ]]; }
h() {
  target/release/harness run --duration "$window" --warmup "$warmup" --syscalls --output-dir "$dir/$1" "${@:2}" \
    || echo "guests: some runs in $1 failed"
}
step light       && h light --impl all,guests --workload herd-mixed --load 2k --repeat "$rounds"
step fixed       && h fixed --impl all,guests --workload herd-query --load 2k --repeat "$rounds"
step connections && h connections --impl guests,event-handler --workload herd-mixed --load 2k --connections 1000 --repeat 2
# Echo at one rate every row sustains (the Python rows do not reach 100k/s), each round the C floor
# first (scripts/floor, `harness gate floor`: the same window, perf's CPU count, the same pinning),
# then every style and guest; servers on one CPU, the generator on the other, so CPU per request
# compares the servers' work alone.
if step echo; then
  floor=$(scripts/floor/build.sh)/echo_epoll
  for round in $(seq "$rounds"); do
    taskset -c 0,1 target/release/harness gate floor --exe "$floor" --pin --load 5k --connections 64 \
      --duration "$window" --warmup "$warmup" --output "$dir/echo/floor-$round.json" \
      || echo "guests: the floor's round $round failed"
    taskset -c 0,1 target/release/harness run --impl all,guests --mode echo --load 5k --connections 64 \
      --duration "$window" --warmup "$warmup" --syscalls --pin --output-dir "$dir/echo/round-$round" \
      || echo "guests: some echo runs of round $round failed"
  done
fi
# The knees with the servers on one CPU and the generator alone on the other (`--pin`): on two
# cores shared by five servers and the generator, a saturated row starves the generator, which then
# falls behind its schedule and its runs are left out of the knees (what the first sweep met).
step knee && taskset -c 0,1 target/release/harness run --duration "$window" --warmup "$warmup" --pin \
  --output-dir "$dir/knee" --impl guests,event-handler --workload herd-mixed \
  --load 1k,2k,3k,5k,7k,10k,15k,20k --repeat 1 || echo "guests: some runs in knee failed"
target/release/harness report "$dir"
