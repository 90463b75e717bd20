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
bin=$("$here/build.sh")

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
  for kv in $saved; do sysctl -q -w "$kv" || true; done
  if [ $rc -ne 0 ]; then
    for f in kubelet containerd daemon; do
      echo "--- last lines of $f.log" >&2
      tail -n 25 "$work/$f.log" >&2 2>/dev/null || true
    done
  fi
  # Mounts were private to the namespace, gone with it; only files remain.
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM
mkdir -p "$work/pids"
unshare --mount --propagation private "$here/scenarios.sh" "$work" "$bin" "$daemon"
