#!/bin/sh
# Setup of the Node.js guest: the runtime only (no npm dependencies, nothing to install under
# .guest/ but a note of what was checked). Idempotent and quick once Node is there.
#
#   sh setup.sh              check (or apt-get install) Node.js >= 18.14, `node --check` every file
#   sh setup.sh --versions   print name=version lines for the record
set -eu
cd "$(dirname "$0")"

if [ "${1:-}" = "--versions" ]; then
    exec node -e 'for (const k of ["node", "v8", "uv", "llhttp", "openssl"]) console.log(`${k}=${process.versions[k]}`)'
fi

if ! command -v node >/dev/null 2>&1; then
    echo "setup (node guest): node is missing; installing Debian's nodejs with apt-get"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup (node guest): missing: node (Node.js >= 18.14), and no apt-get to install it" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
    if ! $sudo apt-get install -y nodejs; then
        echo "setup (node guest): missing: node; \`apt-get install -y nodejs\` failed (try apt-get update first)" >&2
        exit 1
    fi
fi

# 18.14 is the oldest Node with everything herd.mjs uses (buffer.isUtf8; net.Server's 'drop' event
# came in 18.6).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 14) ? 0 : 1)'; then
    echo "setup (node guest): node $(node --version) is too old: Node.js >= 18.14 is needed" >&2
    exit 1
fi

# What CI does for JavaScript without a linter installed: a syntax check of every file.
for f in *.mjs; do
    node --check "$f"
done

mkdir -p .guest
node --version > .guest/node-version
echo "setup (node guest): node $(node --version), every file passes node --check"
