#!/usr/bin/env bash
# The gate's mutation suite: proves scripts/gate.sh by planted regressions. Each patch in
# scripts/mutants/ (STYLE--MUTATION.patch) is applied to a scratch copy of the committed tree
# (a git worktree at HEAD in target/mutants/src, built into target/mutants/target, so neither the
# working tree nor target/release/harness is touched), and the gate runs that style only; before
# the mutants, each style's unmutated build runs the same way as a control, which must pass.
#   caught  the gate failed and both confirming runs repeated the breach (exit 1, confirmed)
#   missed  the gate passed
#   error   the gate could not judge (a failed request, a build that broke)
# Prints a Markdown table (style, mutation, verdict, every metric's change against the baseline in
# the gate run) and writes it to target/mutants/table.md.
#   scripts/mutants.sh                        every patch
#   scripts/mutants.sh PATCH...               some (e.g. scripts/mutants/threadpool--hop.patch)
# The patches are planted defects: never apply one to the working tree, never commit one applied.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
src=target/mutants/src
export CARGO_TARGET_DIR=$root/target/mutants/target
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=(scripts/mutants/*.patch)
if [ ! -e "$src/.git" ]; then
  git worktree add --detach "$src" HEAD >/dev/null
fi
head=$(git rev-parse HEAD)
out=target/mutants/runs/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
table=target/mutants/table.md

# Resets the scratch copy to HEAD, applies PATCH (if any), builds harness, and copies it to BIN.
build() { # NAME [PATCH]
  git -C "$src" checkout -q --detach --force "$head"
  git -C "$src" clean -q -fd
  [ -z "${2:-}" ] || git -C "$src" apply "$root/$2"
  (cd "$src" && cargo build -q --release -p harness) > "$out/$1.build.log" 2>&1 || return 1
  mkdir -p target/mutants/bin
  cp "$CARGO_TARGET_DIR/release/harness" "target/mutants/bin/$1"
}

# Runs the gate on STYLE with the build NAME; prints the verdict and the changes, tab-separated.
judge() { # NAME STYLE
  local log=$out/$1.gate.log verdict changes
  if GATE_HARNESS="target/mutants/bin/$1" GATE_STYLES=$2 scripts/gate.sh "$out/$1" > "$log" 2>&1; then
    verdict=missed
  elif grep -q "regressed past their band, in every confirming run too" "$log"; then
    verdict=caught
  elif grep -q "not reproduced" "$log"; then
    verdict="missed (not reproduced)"
  else
    verdict=error
  fi
  # The first check's rows (its table is the log's first): metric, change against the baseline,
  # and the row's verdict where it is not ok.
  changes=$(awk -F'│|┆' -v s="$2" '/│ style/ { tables++ } tables == 1 && $2 ~ " "s" " {
      for (i = 3; i <= 9; i++) gsub(/^ +| +$/, "", $i)
      printf "%s%s %s%s", sep, $3, $7, ($9 == "ok" ? "" : " (" $9 ")"); sep = "; " }' "$log")
  printf '%s\t%s\n' "$verdict" "$changes"
}

{
  echo "| style | mutation | verdict | per request, gate run against the baseline |"
  echo "|---|---|---|---|"
} > "$table"
styles=$(for p in "${patches[@]}"; do basename "$p" .patch; done | sed 's/--.*//' | sort -u)
for style in $styles; do
  if build "$style--none"; then
    IFS=$'\t' read -r verdict changes < <(judge "$style--none" "$style")
    [ "$verdict" = missed ] && verdict="passed (control)" || verdict="FAILED (control: $verdict)"
  else
    verdict="error (build)" changes=""
  fi
  echo "| $style | none | $verdict | $changes |" | tee -a "$table"
done
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  style=${name%%--*}
  mutation=${name#*--}
  if build "$name" "$p"; then
    IFS=$'\t' read -r verdict changes < <(judge "$name" "$style")
  else
    verdict="error (build: $out/$name.build.log)" changes=""
  fi
  echo "| $style | $mutation | $verdict | $changes |" | tee -a "$table"
done
git -C "$src" checkout -q --detach --force "$head"
echo "logs: $out; table: $table"
