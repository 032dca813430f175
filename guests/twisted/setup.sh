#!/bin/sh
# Sets up the Twisted guest: a virtualenv under .guest/venv holding requirements.txt (Twisted)
# and requirements-dev.txt (ruff, for impl.toml's lint). Idempotent and quick when done already:
# the stamp is a copy of the requirements last installed.
# Needs CPython >= 3.11 with venv (Debian: python3, python3-venv); installs them if missing.
set -eu
cd "$(dirname "$0")"
venv=.guest/venv
stamp=.guest/requirements.installed
mkdir -p .guest

apt_install() {
    echo "setup: installing $* from Debian"
    apt-get install -y "$@" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$@" >/dev/null; } ||
        { echo "setup: missing $* and apt-get could not install it" >&2; exit 1; }
}

command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "setup: Python >= 3.11 is needed, found $(python3 --version 2>&1)" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
fi
if ! cat requirements.txt requirements-dev.txt | cmp -s - "$stamp"; then
    echo "setup: pip install -r requirements.txt -r requirements-dev.txt into $venv"
    "$venv/bin/pip" install --disable-pip-version-check --no-input -q -r requirements.txt -r requirements-dev.txt ||
        { echo "setup: pip could not install the requirements (Twisted and ruff, from PyPI)" >&2; exit 1; }
    cat requirements.txt requirements-dev.txt > "$stamp"
fi
"$venv/bin/python" -c 'import twisted' || { echo "setup: twisted does not import from $venv" >&2; exit 1; }
echo "setup: twisted guest ready ($("$venv/bin/python" --version), Twisted $("$venv/bin/python" -c 'import twisted; print(twisted.__version__)'))"
