#!/usr/bin/env bash
# Echo against the floor, all in one run, pinned apart (servers on the last CPU, clients on CPU 0),
# 64 B messages, 256 connections, closed loop, ROUNDS rounds alternating:
#   1. echo_client → echo_epoll                             (the C client's round trips/s; both in
#                                                           scripts/floor, built by its build.sh)
#   2. harness load → echo_epoll                            (our generator against the same server)
#   3. harness run --impl STYLE --mode echo --threads 1     (each STYLE given, single-threaded)
# and prints, per round, generator/echo_client and STYLE/echo_epoll (both through our generator).
# Usage: scripts/echo-floor.sh [SECONDS] [ROUNDS] [STYLE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
shift $(( $# > 2 ? 2 : $# )) || true
styles=("$@")
ref=$(scripts/floor/build.sh)
[ -x target/release/harness ] || cargo build --release -p harness
last=$(( $(nproc) - 1 ))
port=$(( 20000 + RANDOM % 20000 ))
taskset -c "$last" "$ref/echo_epoll" "$port" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 0.3
out=$(mktemp -d)
summary="$out/ratios.tsv"
for i in $(seq "$rounds"); do
  c=$(taskset -c 0 "$ref/echo_client" "$port" 256 "$secs" 64 | awk '{print $1}')
  h=$(taskset -c 0 target/release/harness load --addr "127.0.0.1:$port" --workload echo --load max \
        --connections 256 --warmup 1s --duration "${secs}s" | awk 'NR==1 {print $1}')
  awk -v c="$c" -v h="$h" -v i="$i" 'BEGIN { printf "round %d: echo_client→echo_epoll %d rt/s; harness load→echo_epoll %d rt/s; generator/echo_client %.3f\n", i, c, h, h / c }'
  printf 'generator/echo_client\t%s\t%s\n' "$h" "$c" >> "$summary"
  for style in "${styles[@]}"; do
    target/release/harness run --impl "$style" --mode echo --threads 1 --load max --connections 256 \
      --warmup 1s --duration "${secs}s" --pin --output "$out/$style-$i.json" >/dev/null 2>&1
    s=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['summary']['achieved_rps'])" "$out/$style-$i.json")
    awk -v s="$s" -v h="$h" -v n="$style" -v i="$i" 'BEGIN { printf "round %d: %s (1 thread) %d rt/s; %s/echo_epoll %.3f\n", i, n, s, n, s / h }'
    printf '%s/echo_epoll\t%s\t%s\n' "$style" "$s" "$h" >> "$summary"
  done
done
# Medians over the rounds: this machine is shared, and single rounds swing by tens of percent.
# The interval is distribution-free: the order statistics around the median that hold the true
# median with at least 95 % probability (binomial), or none below 6 rounds, where no pair does.
python3 - "$summary" <<'PY'
import math, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, a, b = line.split("\t")
    rows.setdefault(name, []).append((float(a), float(b)))
def interval(xs):
    n = len(xs)
    below = lambda j: sum(math.comb(n, i) for i in range(j)) / 2 ** n  # P(Bin(n, 1/2) < j)
    js = [j for j in range(1, n // 2 + 1) if 1 - 2 * below(j) >= 0.95]
    return f"95 % interval {xs[js[-1] - 1]:.3f}-{xs[n - js[-1]]:.3f}" if js else "too few rounds for a 95 % interval"
for name, pairs in rows.items():
    ratios = sorted(a / b for a, b in pairs)
    print(f"median {name}: {statistics.median(ratios):.3f} ({interval(ratios)}; rounds: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median rt/s {statistics.median(a for a, _ in pairs):.0f} vs {statistics.median(b for _, b in pairs):.0f})")
PY
echo "result files: $out"
