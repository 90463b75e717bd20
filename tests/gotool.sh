#!/usr/bin/env bash
# Builds one test tool from the Go module proxy at the version its module
# directory's go.mod pins, into a cache outside the checkout keyed by that
# pin, and prints the binary's path; a second run builds nothing.
# Usage: gotool.sh TOOL
#   promtool  Prometheus's checker (tests/promtool): make test's metrics test
#   helm      the chart checks of make test and the chart in make e2e-cluster
#             (tests/helm)
#   crane     go-containerregistry's registry client: make test's image checks
#             (tests/crane)
#   peer      squat/generic-device-plugin, what make bench compares with
#             (tests/bench/peer), stripped as a release image ships it
set -euo pipefail
tests=$(cd "$(dirname "$0")" && pwd)
tool=${1:?usage: gotool.sh promtool|helm|crane|peer}
case $tool in
  promtool) dir=$tests/promtool pkg=github.com/prometheus/prometheus/cmd/promtool name=promtool ;;
  helm) dir=$tests/helm pkg=helm.sh/helm/v4/cmd/helm name=helm ;;
  crane) dir=$tests/crane pkg=github.com/google/go-containerregistry/cmd/crane name=crane ;;
  peer) dir=$tests/bench/peer pkg=github.com/squat/generic-device-plugin name=generic-device-plugin ;;
  *) echo "gotool.sh: unknown tool $tool" >&2; exit 2 ;;
esac
key=$(cat "$dir/go.mod" "$dir/go.sum" "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-hostpath-device-plugin/$tool/$key
bin=$cache/$name
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "$tool: Go is needed to build $name" >&2; exit 1; }
tmp="$cache.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cd "$dir"
start=$(date +%s)
module=${pkg%%/cmd/*}
echo "$tool: building $name $(grep -m1 -o "$module v[^ ]*" go.mod | cut -d' ' -f2) from the Go module proxy into $cache" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/$name" "$pkg"
rm -rf "$cache"
mv "$tmp" "$cache"
echo "$tool: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
