#!/usr/bin/env bash
# The per-style CI gate (and CI's performance smoke): every style at a light load (herd-mixed at
# 300 requests/s), 3 interleaved rounds of 3 s, the servers on one CPU of their own that never
# idles and the generator on another, every server system call and the servers' CPU time counted
# through perf; before each round the floor (scripts/floor/echo_epoll.c) echoes for 3 s, its CPU
# counted the same way; after the rounds, each style's instructions per request under callgrind.
# Fails if any request fails, or if a style's system calls, voluntary context switches,
# instructions or CPU per request (divided by the floor's CPU per echo in the same run) rose past
# the band recorded in results/baseline/gate/counts.json (harness/report/src/gate.rs says why these,
# results/baseline/gate/README.md how wide each band is and why). About 5 minutes.
#   scripts/gate.sh [OUTPUT_DIR]    one gate run, checked against the baseline (what CI runs); a
#                                   style past its band runs twice more, and fails the gate only if
#                                   both confirming runs are past it too (see harness/report/src/gate.rs)
#   scripts/gate.sh --record [N]    N gate runs (default 15, ~75 min on an otherwise idle machine)
#                                   written as the new baseline: only on purpose, after a change
#                                   meant to move the counts; commit it with the change and say why
#                                   in the commit message. (Five runs proved too few: their band
#                                   missed one of the next ten runs; see the README.)
# Environment: GATE_HARNESS=PATH runs that harness binary instead of building target/release's
# (scripts/mutants.sh gates its mutated builds so); GATE_STYLES=a,b runs and checks those styles
# only.
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
# Instructions per request are counted by callgrind (Debian's valgrind, as scripts/callgrind.sh).
if ! command -v valgrind >/dev/null; then
  echo "== installing valgrind (callgrind counts one server's instructions per request)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null; }
fi
if [ -n "${GATE_HARNESS:-}" ]; then
  harness=$GATE_HARNESS
else
  cargo build --release -p harness
  harness=target/release/harness
fi
# The floor: the C echo server every CPU figure is divided by, built from the project's own copy
# (scripts/floor/build.sh installs gcc if the machine has no C compiler).
floor=$(scripts/floor/build.sh)/echo_epoll
# The first two CPUs: the generator on one, every server on the other (`--pin` splits them). A
# style's thread count follows the CPUs it may use (event loops, runtime workers), so this keeps
# the experiment the same on a bigger machine, and with one loop per server no count depends on
# which loop a neighbour's link was dealt to (see results/baseline/gate/README.md).
cpus=(taskset -c 0,1)

# The servers' CPU never idles: a spinner of the idle scheduling class runs there whenever nothing
# else wants it, and gives way at once to anything that does. Waking a server from an idle CPU
# costs it tens of microseconds more (idle exit, cold caches) than waking it from a busy one, and
# whether the CPU was idle depends on what else the machine runs: measured here, that moved CPU per
# request by 20-25 % and spread single rounds by 5-9 %; with the spinner they spread by 2-2.5 %.
spin() {
  chrt --idle 0 taskset -c 1 sh -c 'while :; do :; done' &
  spinner=$!
}
spinner=
trap '[ -z "$spinner" ] || kill "$spinner" 2>/dev/null' EXIT

# The floor: echo_epoll on the servers' CPU, one connection in a closed loop (a wake, a read, a write
# and a wait per echo, as the herd's servers do per line at this load), its CPU counted by perf.
floor_run() { # OUTPUT_FILE
  local attempt
  for attempt in 1 2 3; do
    "${cpus[@]}" "$harness" gate floor --exe "$floor" --pin --load max --connections 1 --duration 3s --warmup 1s \
      --output "$1" > "${1%.json}.log" 2>&1 && measured "${1%.json}.log" && return 0
    echo "gate: the floor not measured (attempt $attempt of 3, ${1%.json}.log)"
  done
  return 1
}

# How far behind its schedule a generator may fall (p99, µs) before its round is measured again:
# harness gate refuses such a result (MAX_LATENESS_US in harness/report/src/gate.rs).
max_lateness_us=50000

# Whether the run logged in LOG measured: perf counted, and its generator kept its schedule. A
# machine busy with other work can hold either back for seconds; that is a failed measurement, not
# a verdict, and the round is measured again (up to three times in all).
measured() { # LOG
  local lateness
  lateness=$(sed -n "s/^send lag µs: generator's own p50 [0-9]* p99 \([0-9]*\) .*/\1/p" "$1")
  ! grep -q "perf cannot count" "$1" && [ "${lateness:-0}" -le "$max_lateness_us" ]
}

# One style's round. A failed request fails the gate.
style_run() { # OUTPUT_FILE STYLE
  local log=${1%.json}.log attempt
  for attempt in 1 2 3; do
    if ! "${cpus[@]}" "$harness" run --impl "$2" --workload herd-mixed --load 300 --duration 3s --warmup 1s \
      --pin --syscalls --fail-on-errors --output "$1" > "$log" 2>&1; then
      tail -n 20 "$log"
      return 1
    fi
    measured "$log" && return 0
    echo "gate: $2 not measured (perf, or a generator behind its schedule; attempt $attempt of 3, $log)"
  done
  return 1
}

# One style's instructions per request under callgrind (harness gate instructions): Alford linked
# to a Ball, at 20 and 100 requests/s for 3 s each, ~10 s a style. Not completion-monoio: under
# valgrind 3.19 its io_uring accept never completes, so its Alford never links.
instructions_run() { # OUTPUT_FILE STYLE
  [ "$2" = completion-monoio ] && return 0
  "${cpus[@]}" "$harness" gate instructions --impl "$2" --pin --output "$1" > "${1%.instructions}.callgrind.log" 2>&1 \
    || { tail -n 5 "${1%.instructions}.callgrind.log"; echo "gate: $2's instructions not counted"; return 1; }
}

# Three rounds; in each the floor, then every style once, in an order rotated by one each round.
# One `harness run` per style and round: each a separate invocation (ports, thread placement and
# start-up drawn afresh), as the baseline's runs were.
gate_run() { # OUTPUT_DIR [STYLES]
  local out=$1 styles style i round
  IFS=, read -r -a styles <<< "${2:-${GATE_STYLES:-$("$harness" gate styles)}}"
  mkdir -p "$out"
  for round in 1 2 3; do
    floor_run "$out/floor-$round.json" || return 1
    for i in "${!styles[@]}"; do
      style=${styles[$(( (i + round - 1) % ${#styles[@]} ))]}
      if ! style_run "$out/$style-$round.json" "$style"; then
        echo "gate: $style failed in round $round (log: $out/$style-$round.log)"
        return 1
      fi
    done
    echo "gate: round $round of ${styles[*]} done ($out)"
  done
  for style in "${styles[@]}"; do
    instructions_run "$out/$style.instructions" "$style" || return 1
  done
  echo "gate: instructions of ${styles[*]} counted ($out)"
}

spin
if [ "${1:-}" = "--record" ]; then
  n=${2:-15}
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  runs=()
  for i in $(seq 1 "$n"); do
    dir=target/gate/record-$stamp/$i
    mkdir -p "$dir"
    # A run with a failed request is said and left out (a gate run would fail on it anyway).
    if gate_run "$dir" > "$dir.log" 2>&1; then
      runs+=("$dir")
      echo "record: run $i of $n done"
    else
      echo "record: run $i of $n failed (see $dir.log); left out"
    fi
  done
  "$harness" gate record --output "$baseline" "${runs[@]}"
else
  out=${1:-target/gate/$(date -u +%Y%m%dT%H%M%SZ)}
  only=()
  [ -n "${GATE_STYLES:-}" ] && only=(--only "$GATE_STYLES")
  gate_run "$out"
  if "$harness" gate check --baseline "$baseline" "${only[@]}" --breaches-to "$out.breaches" "$out"; then
    exit 0
  fi
  # Not a breach but an error (a style missing, no counts): nothing to confirm.
  [ -s "$out.breaches" ] || exit 1
  styles=$(paste -sd, "$out.breaches")
  echo "== $styles breached: two more runs of it, a regression only if both breach too"
  gate_run "$out-confirm-1" "$styles"
  gate_run "$out-confirm-2" "$styles"
  "$harness" gate check --baseline "$baseline" "${only[@]}" "$out" --confirm "$out-confirm-1" --confirm "$out-confirm-2"
fi
