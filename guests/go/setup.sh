#!/bin/sh
# Sets up the Go guest: Go from Debian (golang-go, Go 1.19) when `go` is missing, then the server
# built into .guest/bin/herd-go. Standard library only, so nothing is downloaded: GOPROXY=off.
# Everything the toolchain writes (build cache, module cache, config, temporary files) stays
# under .guest/. Idempotent: a rebuild with a warm cache takes a second.
#
#   sh setup.sh              set up (what impl.toml's `setup` runs)
#   sh setup.sh --versions   print name=version lines (impl.toml's `versions`)
set -eu
cd "$(dirname "$0")"

work="$PWD/.guest"
export GOCACHE="$work/cache" GOPATH="$work/gopath" GOTMPDIR="$work/tmp" XDG_CONFIG_HOME="$work/config"
export GOFLAGS=-mod=mod GOPROXY=off GOENV=off GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=0

if [ "${1:-}" = "--versions" ]; then
    # The toolchain that built the binary, as the binary records it.
    printf 'go=%s\n' "$(go version "$work/bin/herd-go" | sed 's/.*: go//')"
    printf 'platform=%s\n' "$(go env GOOS)/$(go env GOARCH)"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "== go not found: installing Debian's golang-go (apt-get install -y golang-go)"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: the Go toolchain is missing and there is no apt-get: install Go 1.19 or later (https://go.dev/dl/) and put \`go\` on PATH" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: the Go toolchain is missing: run \`sudo apt-get install -y golang-go\` (or install Go 1.19 or later), then set up again" >&2
        exit 1
    fi
    apt-get install -y golang-go || { apt-get update && apt-get install -y golang-go; } || {
        echo "setup: could not install golang-go with apt-get; install Go 1.19 or later and put \`go\` on PATH" >&2
        exit 1
    }
fi

version="$(go env GOVERSION)"
minor="$(echo "$version" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
if [ -z "$minor" ] || [ "$minor" -lt 19 ]; then
    echo "setup: $version is too old: Go 1.19 or later is needed (atomic.Uint64, strings.Cut)" >&2
    exit 1
fi

mkdir -p "$work/bin" "$work/tmp" "$work/config"
echo "== building herd-go with $version ($(go env GOOS)/$(go env GOARCH))"
gofmt_out="$(gofmt -l .)"
if [ -n "$gofmt_out" ]; then
    echo "setup: not gofmt-formatted: $gofmt_out" >&2
    exit 1
fi
go vet .
go build -trimpath -o "$work/bin/herd-go" .
echo "== built $work/bin/herd-go"
