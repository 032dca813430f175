#!/usr/bin/env bash
# Server CPU per request at one fixed open-loop echo rate: every style (one thread) against the C
# reference server (the project's floor, scripts/floor/echo_epoll.c), in the same rounds, pinned apart (the server
# on the last CPU, the generator on CPU 0), 256 connections, 64 B messages. CPU is counted over the
# measured window only (not start-up or warm-up): for the styles from the result file, for
# echo_epoll through `harness load --probe-pid`.
#
# Where the generator caps closed-loop throughput (1-thread echo), throughput cannot rank the
# fastest servers; CPU per request at a rate all of them sustain can. But a server that batches
# (Nagle, delayed flushes) can buy CPU with latency, so each row shows p50 and p99 beside its CPU,
# and a CPU figure only counts ("latency met") for a server whose p99 was at most twice
# echo_epoll's p99 in the same round, with no failed request and a generator that kept up.
#   scripts/cpu-at-rate.sh [RATE] [SECONDS] [ROUNDS] [STYLE ...]
# Defaults: 100k requests/s, 5 s windows after 1 s of warm-up, 3 rounds, every style.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-100k}
secs=${2:-5}
rounds=${3:-3}
shift $(( $# > 3 ? 3 : $# )) || true
styles=("$@")
if [ ${#styles[@]} -eq 0 ]; then
  styles=(threadpool thread-per-request two-stage event-handler callback future-tokio future-async-std future-smol coroutine completion-monoio)
fi
floor=$(scripts/floor/build.sh)/echo_epoll
cargo build --release -p harness
last=$(( $(nproc) - 1 ))
out=${OUT:-target/cpu-at-rate/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
rows="$out/rows.tsv"
: > "$rows"
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null' EXIT
for i in $(seq "$rounds"); do
  port=$(( 20000 + RANDOM % 20000 ))
  taskset -c "$last" "$floor" "$port" &
  server=$!
  # Until it accepts (a loaded machine may take longer than any fixed pause), 5 s at most.
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 target/release/harness load --addr "127.0.0.1:$port" --workload echo --load "$rate" \
    --connections 256 --warmup 1s --duration "${secs}s" --probe-pid "$server" > "$out/echo_epoll-$i.txt"
  kill "$server"; wait "$server" 2>/dev/null || true
  server=
  python3 - "$out/echo_epoll-$i.txt" "$i" >> "$rows" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
lat = re.search(r"(\d+) errors; latency µs p50 (\d+) p99 (\d+)", text)
cpu = re.search(r"cpu_us_per_reply=([0-9.]+)", text)
behind = "fell behind" in text
print(f"{sys.argv[2]}\techo_epoll\t{cpu.group(1)}\t{lat.group(2)}\t{lat.group(3)}\t{lat.group(1)}\t{int(behind)}")
PY
  for style in "${styles[@]}"; do
    target/release/harness run --impl "$style" --mode echo --threads 1 --load "$rate" --connections 256 \
      --warmup 1s --duration "${secs}s" --pin --output "$out/$style-$i.json" >/dev/null 2>&1 \
      || echo "cpu-at-rate: $style failed in round $i (see $out/$style-$i.json if written)" >&2
    python3 - "$out/$style-$i.json" "$i" "$style" >> "$rows" <<'PY' \
      || echo "cpu-at-rate: no row for $style in round $i (no result, or no window counters)" >&2
import json, sys
r = json.load(open(sys.argv[1]))
cpu = sum(s["window"]["cpu_user_s"] + s["window"]["cpu_sys_s"] for s in r["servers"])
n = max(r["summary"]["requests"], 1)
lat = r["summary"]["latency_us"]
behind = (r.get("send_lag") or {}).get("fell_behind", False)
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{cpu / n * 1e6:.3f}\t{lat['p50']}\t{lat['p99']}\t{r['summary']['errors']}\t{int(behind)}")
PY
  done
done
python3 - "$rows" "$rate" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
ref = {r[0]: r for r in rows if r[1] == "echo_epoll"}
by = {}
for rnd, name, cpu, p50, p99, errors, behind in rows:
    e = ref[rnd]
    met = int(errors) == 0 and behind == "0" and e[6] == "0" and float(p99) <= 2 * float(e[4])
    ratio = float(cpu) / float(e[2]) if float(e[2]) > 0 else float("nan")
    by.setdefault(name, []).append((float(cpu), ratio, int(p50), int(p99), met))
print(f"\nServer CPU per request at {sys.argv[2]} requests/s (echo, 1 thread, pinned; medians over rounds)\n")
print("| server | CPU µs/request | ratio to echo_epoll (per round) | p50 µs | p99 µs | latency met |")
print("|---|---|---|---|---|---|")
for name, v in sorted(by.items(), key=lambda kv: statistics.median(x[1] for x in kv[1])):
    cpu = statistics.median(x[0] for x in v)
    ratios = ", ".join(f"{x[1]:.2f}" for x in v)
    met = sum(x[4] for x in v)
    print(f"| {name} | {cpu:.2f} | {statistics.median(x[1] for x in v):.2f} ({ratios}) | "
          f"{statistics.median(x[2] for x in v):.0f} | {statistics.median(x[3] for x in v):.0f} | {met} of {len(v)} rounds |")
PY
echo "rounds and result files: $out"
