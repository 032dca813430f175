#!/usr/bin/env bash
# Deterministic performance gate: instruction counts of herd-core's hot paths under callgrind
# (gungraun), compared with the baseline committed in results/baseline/gungraun/.
#   scripts/callgrind.sh          compare; exits non-zero if any count grew past the limit
#   scripts/callgrind.sh --save   record a new baseline (commit results/baseline/gungraun/)
# Installs gungraun-runner (the version matching the library) into target/tools if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(grep -E '^gungraun = ' Cargo.toml | sed -E 's/.*"=?([0-9.]+)".*/\1/')
tools="$PWD/target/tools"
runner="$tools/bin/gungraun-runner"
if ! "$runner" --version 2>/dev/null | grep -q "$version"; then
  echo "installing gungraun-runner $version into $tools"
  cargo install --quiet --locked --root "$tools" gungraun-runner --version "$version"
fi
export GUNGRAUN_RUNNER="$runner"
export GUNGRAUN_HOME="$PWD/results/baseline/gungraun"
# serde_json keeps keys in an indexmap with a randomly seeded hasher, so counts that go through
# JSON vary by about ±1.5% between runs; everything else is exact. 3% stays above that noise.
limit=${CALLGRIND_LIMIT:-3}
if [ "${1:-}" = "--save" ]; then
  cargo bench -p herd-core --bench callgrind -- --save-baseline=committed
else
  cargo bench -p herd-core --bench callgrind -- --baseline=committed --callgrind-limits="ir=${limit}%"
fi
