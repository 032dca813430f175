#!/usr/bin/env bash
# Coverage-guided fuzzing of herd-core's parsers and codecs (libFuzzer through cargo fuzz).
#   scripts/fuzz.sh [SECONDS]        each target for SECONDS (default 20), on the committed corpus
#   scripts/fuzz.sh --replay         only run every committed corpus input once (a regression check)
#   TARGETS="lines" scripts/fuzz.sh 600
# Targets (fuzz/fuzz_targets/): lines (framer + command parser + herd), http_response (places
# decoder + JSON trimmer), handshake (both sides of the link handshake, without the key).
# Installs cargo-fuzz into target/tools if missing. Runs on the machine's stable toolchain in
# cargo fuzz's `--sanitizer none` mode: herd-core has no unsafe code for a sanitizer to watch, and
# what the targets look for are panics and broken invariants (assertions), which need none.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script; reproduce it with
#   target/tools/bin/cargo-fuzz run --fuzz-dir fuzz --sanitizer none <target> <that file>
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.13.2
tools="$PWD/target/tools"
fuzz="$tools/bin/cargo-fuzz"
if ! "$fuzz" --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-fuzz $version into $tools"
  cargo install --quiet --locked --root "$tools" cargo-fuzz --version "$version"
fi
targets=${TARGETS:-"lines http_response handshake"}
export CARGO_TARGET_DIR="$PWD/target/fuzz"
for t in $targets; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  if [ "${1:-}" = "--replay" ]; then
    echo "== $t: replaying fuzz/corpus/$t"
    "$fuzz" run --fuzz-dir fuzz --sanitizer none "$t" "fuzz/corpus/$t" -- -runs=0
  else
    seconds=${1:-20}
    echo "== $t: fuzzing for ${seconds}s"
    # New inputs go to a scratch corpus: the committed one changes only by hand (cargo fuzz cmin).
    scratch="target/fuzz/corpus/$t"
    mkdir -p "$scratch"
    log="target/fuzz/$t.log"
    status=0
    "$fuzz" run --fuzz-dir fuzz --sanitizer none "$t" "$scratch" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || true
    if [ "$status" -ne 0 ]; then
      tail -n 40 "$log"
      echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/"
      exit 1
    fi
  fi
done
