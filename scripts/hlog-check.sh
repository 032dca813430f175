#!/usr/bin/env bash
# `harness export --format hlog` read back by an independent reader: the PyPI `hdrhistogram`
# package (installed once into target/pyenv, a project-local environment), every interval's count
# and maximum checked against the result files it came from (scripts/hlog/check.py). CI runs it.
#   scripts/hlog-check.sh [RESULT_DIR]     default: the committed results/runs/matrix-2/light
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-results/runs/matrix-2/light}
env=target/pyenv
if [ ! -x "$env/bin/python" ] || ! "$env/bin/python" -c 'import hdrh' 2>/dev/null; then
  echo "== hlog-check: installing the PyPI hdrhistogram package into $env (once)"
  python3 -m venv "$env"
  "$env/bin/pip" install --quiet --progress-bar off 'hdrhistogram==0.10.8'
fi
harness=${HARNESS:-target/release/harness}
[ -x "$harness" ] || cargo build --release -q -p harness
log=$(mktemp --suffix=.hlog)
trap 'rm -f "$log"' EXIT
"$harness" export "$dir" --format hlog --output "$log"
mapfile -t results < <(find "$dir" -name '*.json' | sort)
"$env/bin/python" scripts/hlog/check.py "$log" "${results[@]}"
