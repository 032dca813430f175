#!/usr/bin/env bash
# A real browser for the HTML report's test and its screenshot: headless Chromium from Debian's
# packages (with DejaVu fonts for its text), installed once; prints the browser's path.
#   scripts/browser.sh                         install if missing, print the path
#   scripts/browser.sh --screenshot PAGE PNG   also take PAGE's first screen (1280×1600) into PNG
# CI runs it before the tests, so that the browser test runs there instead of saying SKIPPED.
set -euo pipefail
find_browser() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
browser=$(find_browser)
if [ -z "$browser" ]; then
  echo "== installing chromium and fonts-dejavu-core (the HTML report's browser test; once)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium fonts-dejavu-core >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q chromium fonts-dejavu-core >&2; }
  browser=$(find_browser)
fi
[ -n "$browser" ] || { echo "no chromium after installing it" >&2; exit 1; }
if [ "${1:-}" = "--screenshot" ]; then
  page=$(realpath "$2")
  # The sandbox needs a user namespace that root in a container may not have; the page is ours.
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1600 \
    --screenshot="$(realpath -m "$3")" "file://$page" 2>/dev/null
  echo "$3" >&2
fi
echo "$browser"
