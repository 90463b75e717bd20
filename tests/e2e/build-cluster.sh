#!/usr/bin/env bash
# Builds what make e2e-cluster adds to build.sh's binaries: the control plane
# (kube-apiserver, kube-controller-manager, kube-scheduler) and kubectl and
# kustomize at ../go.mod's pins, and etcd and the CNI plugins (loopback, ptp, host-local) at
# etcd/go.mod's, into a cache outside the checkout keyed by those pins.
# Prints the cache directory. A second run builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" "$here"/etcd/go.* "$here"/etcd/*.go "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-hostpath-device-plugin/e2e-cluster/$key
tools="kube-apiserver kube-controller-manager kube-scheduler kubectl kustomize etcd loopback ptp host-local"
missing=
for t in $tools; do [ -x "$cache/$t" ] || missing=1; done
if [ -z "$missing" ]; then echo "$cache"; exit 0; fi
command -v go >/dev/null || { echo "e2e-cluster: Go is needed to build the control plane" >&2; exit 1; }
kube=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")
minor=$(echo "$kube" | cut -d. -f2)
tmp="$cache.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
ver="-X k8s.io/component-base/version.gitVersion=$kube -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
echo "e2e-cluster: building the control plane $kube, kubectl, kustomize, etcd and the CNI plugins from the Go module proxy into $cache" >&2
cd "$here"
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  go build -trimpath -ldflags "-s -w $ver" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c"
done
go build -trimpath -ldflags "-s -w" -o "$tmp/kustomize" sigs.k8s.io/kustomize/kustomize/v5
cd "$here/etcd"
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .
for p in main/loopback main/ptp ipam/host-local; do
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/${p#*/}" "github.com/containernetworking/plugins/plugins/$p"
done
rm -rf "$cache"
mv "$tmp" "$cache"
echo "e2e-cluster: built in $(( $(date +%s) - start )) s" >&2
echo "$cache"
