#!/usr/bin/env bash
# Builds the peer `make bench` compares with, squat/generic-device-plugin,
# from the Go module proxy at the version tests/bench/peer/go.mod pins, into
# a cache outside the checkout keyed by that pin. Stripped (-s -w), as a
# release image ships it. Prints the binary's path; a second run builds
# nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-hostpath-device-plugin/bench-peer/$key
bin=$cache/generic-device-plugin
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "bench: Go is needed to build generic-device-plugin" >&2; exit 1; }
tmp="$cache.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cd "$here"
start=$(date +%s)
echo "bench: building generic-device-plugin $(sed -n 's/^require github.com\/squat\/generic-device-plugin //p' go.mod) from the Go module proxy into $cache" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/generic-device-plugin" github.com/squat/generic-device-plugin
rm -rf "$cache"
mv "$tmp" "$cache"
echo "bench: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
