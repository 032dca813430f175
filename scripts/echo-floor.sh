#!/usr/bin/env bash
# Compares the harness's load generator with ../shared/reference/echo_client against the reference
# echo_epoll server, in one run: 64 B messages, 256 connections, closed loop, pinned apart
# (server on the last CPU, client on CPU 0), alternating the two clients ROUNDS times.
# Usage: scripts/echo-floor.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
ref=../shared/reference
[ -x "$ref/echo_epoll" ] && [ -x "$ref/echo_client" ] || "$ref/build.sh" >/dev/null
[ -x target/release/harness ] || cargo build --release -p harness
last=$(( $(nproc) - 1 ))
port=$(( 20000 + RANDOM % 20000 ))
taskset -c "$last" "$ref/echo_epoll" "$port" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 0.3
for i in $(seq "$rounds"); do
  c=$(taskset -c 0 "$ref/echo_client" "$port" 256 "$secs" 64 | awk '{print $1}')
  h=$(taskset -c 0 target/release/harness load --addr "127.0.0.1:$port" --workload echo --load max \
        --connections 256 --warmup 0s --duration "${secs}s" | awk 'NR==1 {print $1}')
  awk -v c="$c" -v h="$h" -v i="$i" 'BEGIN { printf "round %d: echo_client %d rt/s, harness load %d rt/s, ratio %.3f\n", i, c, h, h / c }'
done
