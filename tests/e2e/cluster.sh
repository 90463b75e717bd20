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
# make image's OCI archive: the DaemonSets run it, as it is.
image=$(realpath "${1:?usage: cluster.sh <oci archive> <gen_policy binary>}")
gen=$(realpath "${2:?usage: cluster.sh <oci archive> <gen_policy binary>}")
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
helm=$("$here/../gotool.sh" helm)

work=$(mktemp -d "${TMPDIR:-/tmp}/hp-cluster.XXXXXX")
. "$here/lib.sh"
# The kubelets set the first three; the ptp CNI plugin turns on forwarding.
sysctls="kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward"
saved=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
cleanup() {
  local rc=$?
  # Nothing here may end the clean-up early: a process that already
  # exited (the usual reason a run fails) is simply skipped.
  set +e
  stop_everything "$work"/mntns.*
  remove_mount_points
  for kv in $saved; do sysctl -q -w "$kv"; done
  if [ $rc -ne 0 ]; then
    for f in "$work"/*.log; do
      echo "--- last lines of ${f##*/}" >&2
      tail -n 20 "$f" >&2 2>/dev/null
    done
  fi
  # Mounts were private to the namespaces, gone with them; only files remain.
  if [ -n "${E2E_KEEP:-}" ]; then echo "e2e-cluster: kept $work" >&2; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT INT TERM
mkdir -p "$work/pids"
# The chart's scenarios move both nodes to k0s's kubelet root: its mount point.
make_mount_points /var/lib/k0s/kubelet
"$here/images.sh" "$work" "$image"
unshare --mount --propagation private "$here/cluster-scenarios.sh" "$work" "$bin" "$cbin" "$gen" "$py" "$helm"
