#!/usr/bin/env bash
# make e2e-cluster: the deployment on a real control plane (etcd,
# kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, all on
# loopback with certificates made for the run) and two nodes, each a kubelet
# and a containerd in a mount namespace of its own, with its own root
# directory; only one node has /sample. Everything runs inside a private
# mount namespace; everything started is stopped by PID, and the sysctls the
# kubelets set are restored, even when a step fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
daemon=$(realpath "${1:?usage: cluster.sh <daemon binary> <gen_policy binary>}")
gen=$(realpath "${2:?usage: cluster.sh <daemon binary> <gen_policy binary>}")
[ "$(id -u)" = 0 ] || { echo "e2e-cluster: needs root (mount namespaces, the kubelet)" >&2; exit 1; }
for pkg in runc:runc umoci:umoci busybox:busybox-static openssl:openssl unshare:util-linux nsenter:util-linux; do
  command -v "${pkg%%:*}" >/dev/null && continue
  echo "e2e-cluster: installing ${pkg#*:} from Debian's packages" >&2
  apt-get update -qq && apt-get install -y -qq "${pkg#*:}" >/dev/null
done
# The policy check's second engine, as make test installs it.
py=$here/../../target/pyenv/bin/python
if ! "$py" -c 'import celpy, yaml' 2>/dev/null; then
  echo "e2e-cluster: installing cel-python and PyYAML into target/pyenv" >&2
  python3 -m venv "$here/../../target/pyenv" && "$here/../../target/pyenv/bin/pip" install -q 'cel-python==0.5.0' pyyaml
fi
bin=$("$here/build.sh")
cbin=$("$here/build-cluster.sh")

work=$(mktemp -d /tmp/hp-cluster.XXXXXX)
# The kubelets set the first three; the ptp CNI plugin turns on forwarding.
sysctls="kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward"
saved=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
cleanup() {
  local rc=$?
  for p in "$work"/pids/*; do
    [ -e "$p" ] && kill -TERM "$(cat "$p")" 2>/dev/null
  done
  for p in "$work"/pids/*; do
    [ -e "$p" ] || continue
    pid=$(cat "$p")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Containers (each in a mount namespace of its own) by the PIDs their
  # node's containerd recorded; then whatever is still in the run's or a
  # node's mount namespace (the shims) was started by this run.
  for f in "$work"/node-*/run/containerd/io.containerd.runtime.v2.task/*/*/init.pid; do
    [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
  done
  for nsfile in "$work"/mntns.*; do
    [ -s "$nsfile" ] || continue
    ns=$(cat "$nsfile")
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && [ "${p#/proc/}" != $$ ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
  done
  for kv in $saved; do sysctl -q -w "$kv" || true; done
  if [ $rc -ne 0 ]; then
    for f in "$work"/*.log; do
      echo "--- last lines of ${f##*/}" >&2
      tail -n 20 "$f" >&2 2>/dev/null || true
    done
  fi
  # Mounts were private to the namespaces, gone with them; only files remain.
  [ -n "${E2E_KEEP:-}" ] && echo "e2e-cluster: kept $work" >&2 || rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM
mkdir -p "$work/pids"
"$here/images.sh" "$work" "$daemon"
unshare --mount --propagation private "$here/cluster-scenarios.sh" "$work" "$bin" "$cbin" "$gen" "$py"
