#!/usr/bin/env bash
# The echo floor: builds scripts/floor's two C programs into target/floor/ (once, again when a source
# changes), installing gcc from Debian if the machine has no C compiler. Prints the folder.
#   echo_epoll [PORT]                              single-threaded epoll echo server on 127.0.0.1
#   echo_client PORT CONNECTIONS SECONDS [SIZE]    closed-loop client; prints round trips per second
# The floor every echo figure is divided by (scripts/gate.sh, cpu-at-rate.sh, echo-floor.sh): no
# server echoes with less work per byte on one core, and a generator that cannot match the client
# against the same server is measuring itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v cc >/dev/null; then
  echo "== installing gcc (the echo floor, scripts/floor/*.c, is C)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc >/dev/null; }
fi
mkdir -p target/floor
for program in echo_epoll echo_client; do
  if [ ! -x "target/floor/$program" ] || [ "scripts/floor/$program.c" -nt "target/floor/$program" ]; then
    cc -O2 -o "target/floor/$program" "scripts/floor/$program.c"
  fi
done
echo target/floor
