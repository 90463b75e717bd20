#!/usr/bin/env bash
# make e2e: the daemon against the real kubelet and containerd (built by
# build.sh), inside a private mount namespace so the machine's own kubelet
# and runtime state are never touched. Everything started is stopped by
# PID and the sysctls the kubelet sets are restored, even when a step fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
daemon=$(realpath "${1:?usage: run.sh <daemon binary>}")
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

# One full pass per kubelet: the newest release, then the oldest minor
# still supported upstream. Each pass has its own directory and cleanup.
one_pass() {
work=$(mktemp -d /tmp/hp-e2e.XXXXXX)
sysctls="kernel.panic kernel.panic_on_oops vm.overcommit_memory"
saved=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
cleanup() {
  local rc=$?
  for p in "$work"/pids/*; do
    [ -e "$p" ] || continue
    pid=$(cat "$p")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for p in "$work"/pids/*; do
    [ -e "$p" ] || continue
    pid=$(cat "$p")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Containers and their shims outlive containerd by design. Containers
  # (each in a mount namespace of its own) by the PIDs containerd recorded
  # for their tasks; then whatever is still in the run's own mount
  # namespace (the shims) was started by this run too.
  for f in "$work"/root/run/containerd/io.containerd.runtime.v2.task/*/*/init.pid; do
    [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
  done
  if [ -s "$work/mntns" ]; then
    ns=$(cat "$work/mntns")
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
  fi
  for kv in $saved; do sysctl -q -w "$kv" || true; done
  if [ $rc -ne 0 ]; then
    for f in kubelet containerd daemon; do
      echo "--- last lines of $f.log" >&2
      tail -n 25 "$work/$f.log" >&2 2>/dev/null || true
    done
  fi
  # Mounts were private to the namespace, gone with it; only files remain.
  [ -n "${E2E_KEEP:-}" ] && echo "e2e: kept $work" >&2 || rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM
mkdir -p "$work/pids"
"$here/images.sh" "$work" "$daemon"
# The DaemonSet as kustomize renders it (scenario 7 runs its pod template).
kubectl kustomize "$here/../../deploy" >"$work/deploy.yaml"
unshare --mount --propagation private "$here/scenarios.sh" "$work" "$bin" "$daemon" "$1"
}
for kubelet in ${E2E_KUBELETS:-kubelet kubelet-1.35}; do
  ( one_pass "$kubelet" )
done
