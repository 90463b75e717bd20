#!/usr/bin/env bash
# Builds the upstream binaries the e2e runs (kubelet, containerd with its runc
# shim and ctr, the pod-resources reader) from the Go module proxy, at the versions
# pinned by tests/e2e/go.mod, into a cache outside the checkout keyed by
# those pins. Prints the cache directory. A second run builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" "$here"/kubelet-1.35/go.* "$here"/podres/*.go "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-hostpath-device-plugin/e2e/$key
if [ -x "$cache/kubelet" ] && [ -x "$cache/kubelet-1.35" ] && [ -x "$cache/containerd" ] && [ -x "$cache/containerd-shim-runc-v2" ] && [ -x "$cache/podres" ] && [ -x "$cache/ctr" ]; then
  echo "$cache"
  exit 0
fi
command -v go >/dev/null || { echo "e2e: Go is needed to build the kubelet and containerd" >&2; exit 1; }
kube=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")
minor=$(echo "$kube" | cut -d. -f2)
tmp="$cache.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cd "$here"
start=$(date +%s)
ver="-X k8s.io/component-base/version.gitVersion=$kube -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
echo "e2e: building kubelets $kube and the one of tests/e2e/kubelet-1.35, containerd and its shim from the Go module proxy into $cache" >&2
go build -trimpath -ldflags "-s -w $ver" -o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet
# The oldest minor still supported upstream, from its own module.
old=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/kubelet-1.35/go.mod")
(cd "$here/kubelet-1.35" && go build -trimpath -o "$tmp/kubelet-1.35" \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$old -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$old" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean" \
  k8s.io/kubernetes/cmd/kubelet)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/containerd-shim-runc-v2" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
go build -trimpath -ldflags "-s -w" -o "$tmp/containerd" github.com/containerd/containerd/v2/cmd/containerd
go build -trimpath -ldflags "-s -w" -o "$tmp/ctr" github.com/containerd/containerd/v2/cmd/ctr
go build -trimpath -ldflags "-s -w" -o "$tmp/podres" ./podres
rm -rf "$cache"
mv "$tmp" "$cache"
echo "e2e: built in $(( $(date +%s) - start )) s" >&2
echo "$cache"
