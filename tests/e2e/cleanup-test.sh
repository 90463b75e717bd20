#!/usr/bin/env bash
# Proves the e2e clean-up always finishes: runs run.sh (or cluster.sh) with
# a component killed mid-run (E2E_FAULT, see lib.sh's fault_point), expects
# the run to fail, then checks that nothing it started is left: no process
# whose command line names the run's directory, no mount of it, no network
# link it added, the sysctls as they were, and the directory itself gone.
#   cleanup-test.sh e2e <daemon> <oci archive>
#   cleanup-test.sh cluster <oci archive> <gen_policy>
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:?usage: cleanup-test.sh e2e|cluster ARGS (run.sh's or cluster.sh's)}
shift
sysctls="kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward"
saved=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
# Values the kubelets (and the ptp CNI plugin) change, so a leak shows.
for kv in kernel.panic=0 kernel.panic_on_oops=0 vm.overcommit_memory=0 net.ipv4.ip_forward=0; do
  sysctl -q -w "$kv"
done
before_sysctls=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
before_links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sort)
# Processes running the e2e's upstream binaries (from their cache) before
# the run: any other one after it was left behind.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-hostpath-device-plugin/
upstream() {
  local f c
  for f in /proc/[0-9]*/cmdline; do
    c=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
    case $c in "$cache"*) f=${f#/proc/}; echo "${f%/cmdline}" ;; esac
  done | sort
}
before_upstream=$(upstream)
tmp=$(mktemp -d /tmp/hp-clean.XXXXXX)
case $mode in
  e2e) TMPDIR=$tmp E2E_FAULT=registered E2E_KUBELETS=kubelet "$here/run.sh" "$@" >"$tmp.log" 2>&1; rc=$? ;;
  cluster) TMPDIR=$tmp E2E_FAULT=nodes-ready "$here/cluster.sh" "$@" >"$tmp.log" 2>&1; rc=$? ;;
  *) echo "cleanup-test: unknown mode $mode" >&2; exit 2 ;;
esac
failures=0
check() { if eval "$2"; then echo "ok   clean-up ($mode): $1"; else echo "FAIL clean-up ($mode): $1" >&2; failures=$((failures + 1)); fi; }
check "the run failed where the fault was injected" '[ $rc -ne 0 ] && grep -q "E2E_FAULT=" "$tmp.log"'
# Read in the shell, so no process of this check carries the path in its
# own command line.
leftover=""
for f in /proc/[0-9]*/cmdline; do
  [ "${f#/proc/}" = "$$/cmdline" ] && continue
  c=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
  case $c in *"$tmp"*) leftover="$leftover ${f%/cmdline}" ;; esac
done
for p in $(comm -13 <(echo "$before_upstream") <(upstream)); do
  leftover="$leftover /proc/$p"
done
check "no process of the run is left ${leftover:+($leftover)}" '[ -z "$leftover" ]'
check "no mount of the run is left" '! grep -q -F "$tmp" /proc/self/mountinfo'
after_links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sort)
check "no network link is left" '[ "$before_links" = "$after_links" ]'
after_sysctls=$(for s in $sysctls; do echo "$s=$(sysctl -n "$s")"; done)
check "the sysctls are as they were" '[ "$before_sysctls" = "$after_sysctls" ]'
check "the run's directory is gone" '[ -z "$(ls -A "$tmp")" ]'
if [ $failures -ne 0 ]; then
  echo "--- the faulty run's output" >&2
  tail -n 40 "$tmp.log" >&2
fi
for kv in $saved; do sysctl -q -w "$kv"; done
rm -rf "$tmp" "$tmp.log"
[ $failures -eq 0 ]
