#!/bin/sh
# Sets up the asyncio guest: a virtual environment in .guest/venv on the machine's Python 3
# (3.11 or later; Debian's python3 and python3-venv are installed if missing), with uvloop for
# the recorded variant (requirements.txt) and ruff, the formatter and linter
# (requirements-dev.txt, not needed to serve: a failure there is only reported). Idempotent,
# and quick when done: pip runs again only when a requirements file changes.
set -eu
cd "$(dirname "$0")"
venv=.guest/venv

say() { echo "asyncio setup: $*"; }

python=$(command -v python3 || true)
if [ -z "$python" ]; then
    say "no python3 on PATH; installing Debian's python3 and python3-venv"
    apt-get install -y python3 python3-venv >/dev/null || { say "could not install python3 (apt-get failed)"; exit 1; }
    python=$(command -v python3)
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "$python is Python $("$python" -c 'import platform; print(platform.python_version())'); 3.11 or later is needed (asyncio.timeout)"
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $python ($("$python" --version 2>&1))"
    mkdir -p .guest
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        say "the venv module is missing; installing Debian's python3-venv"
        rm -rf "$venv"
        apt-get install -y python3-venv >/dev/null || { say "could not install python3-venv (apt-get failed)"; exit 1; }
        "$python" -m venv "$venv"
    fi
fi

stamp=.guest/requirements.stamp
wanted=$(cat requirements.txt requirements-dev.txt | cksum)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    pip="$venv/bin/python -m pip install --quiet --disable-pip-version-check"
    say "installing $(grep -hv '^#' requirements.txt | tr '\n' ' ')from PyPI"
    $pip -r requirements.txt || { say "pip could not install uvloop (is PyPI reachable?)"; exit 1; }
    say "installing $(grep -hv '^#' requirements-dev.txt | tr '\n' ' ')from PyPI (for formatting and linting)"
    $pip -r requirements-dev.txt || say "warning: ruff did not install; the server does not need it"
    echo "$wanted" > "$stamp"
fi
"$venv/bin/python" -c 'import uvloop' || { say "uvloop does not import in $venv"; exit 1; }
say "ready: $("$venv/bin/python" --version 2>&1), uvloop $("$venv/bin/python" -c 'import uvloop; print(uvloop.__version__)')"
