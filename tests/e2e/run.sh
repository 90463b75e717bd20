#!/usr/bin/env bash
# make e2e: the daemon against the real kubelet and containerd (built by
# build.sh), inside a private mount namespace so the machine's own kubelet
# and runtime state are never touched. Everything started is stopped by
# PID and the sysctls the kubelet sets are restored, even when a step fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
daemon=$(realpath "${1:?usage: run.sh <daemon binary> <oci archive>}")
# make image's OCI archive: the DaemonSet's pod (scenario 7) runs it.
image=$(realpath "${2:?usage: run.sh <daemon binary> <oci archive>}")
[ "$(id -u)" = 0 ] || { echo "e2e: needs root (mount namespaces, the kubelet)" >&2; exit 1; }
command -v unshare >/dev/null || { echo "e2e: needs unshare (util-linux)" >&2; exit 1; }
if ! command -v runc >/dev/null; then
  echo "e2e: installing runc from Debian's packages" >&2
  apt-get update -qq && apt-get install -y -qq runc >/dev/null
fi
for pkg in umoci:umoci busybox:busybox-static kubectl:kubectl; do
  command -v "${pkg%%:*}" >/dev/null && continue
  echo "e2e: installing ${pkg#*:} from Debian's packages" >&2
  apt-get update -qq && apt-get install -y -qq "${pkg#*:}" >/dev/null
done
python3 -c 'import yaml' 2>/dev/null || {
  echo "e2e: installing PyYAML from PyPI (scenario 7 edits the DaemonSet)" >&2
  python3 -m pip install -q pyyaml
}
bin=$("$here/build.sh")
helm=$("$here/../gotool.sh" helm)
. "$here/lib.sh"

# Mount points for scenario 13's kubelet roots (k0s's, MicroK8s's): made on
# the machine where missing, left empty (the namespace binds the run's
# directories there), and removed after the run.
make_mount_points /var/lib/k0s/kubelet /var/snap/microk8s/common/var/lib/kubelet
trap remove_mount_points EXIT

# One full pass per kubelet: the newest release, then the oldest minor
# still supported upstream. Each pass has its own directory and cleanup.
one_pass() {
work=$(mktemp -d "${TMPDIR:-/tmp}/hp-e2e.XXXXXX")
sysctls="kernel.panic kernel.panic_on_oops vm.overcommit_memory"
saved=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
cleanup() {
  local rc=$?
  # Nothing here may end the clean-up early: a process that already
  # exited (the usual reason a run fails) is simply skipped.
  set +e
  stop_everything "$work/mntns"
  for kv in $saved; do sysctl -q -w "$kv"; done
  if [ $rc -ne 0 ]; then
    for f in kubelet containerd daemon; do
      echo "--- last lines of $f.log" >&2
      tail -n 25 "$work/$f.log" >&2 2>/dev/null
    done
  fi
  # Mounts were private to the namespace, gone with it; only files remain.
  if [ -n "${E2E_KEEP:-}" ]; then echo "e2e: kept $work" >&2; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT INT TERM
mkdir -p "$work/pids"
"$here/images.sh" "$work" "$image"
# The DaemonSet as kustomize renders it (scenario 7 runs its pod template).
kubectl kustomize "$here/../../deploy" >"$work/deploy.yaml"
# The chart's DaemonSet for the k0s and MicroK8s presets (scenario 13).
for preset in k0s microk8s; do
  for registration in kubelet-socket plugin-watcher; do
    "$helm" template hp "$here/../../deploy/helm/k8s-hostpath-device-plugin" --namespace hostpath-device-plugin \
      --set kubelet.preset=$preset --set registration=$registration >"$work/chart-$preset-$registration.yaml"
  done
done
unshare --mount --propagation private "$here/scenarios.sh" "$work" "$bin" "$daemon" "$1"
}
for kubelet in ${E2E_KUBELETS:-kubelet kubelet-1.35}; do
  ( one_pass "$kubelet" )
done
