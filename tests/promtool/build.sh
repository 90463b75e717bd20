#!/usr/bin/env bash
# Builds promtool, Prometheus's own checker, from the Go module proxy at the
# version tests/promtool/go.mod pins, into a cache outside the checkout
# keyed by that pin. Prints the binary's path; a second run builds nothing.
# `make test` gives it to the metrics test (PROMTOOL), which runs
# `promtool check metrics` on live scrapes of the daemon.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-hostpath-device-plugin/promtool/$key
bin=$cache/promtool
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "promtool: Go is needed to build it" >&2; exit 1; }
tmp="$cache.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cd "$here"
start=$(date +%s)
echo "promtool: building $(sed -n 's/^require github.com\/prometheus\/prometheus //p' go.mod) from the Go module proxy into $cache" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool
"$tmp/promtool" --version >/dev/null
rm -rf "$cache"
mv "$tmp" "$cache"
echo "promtool: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
