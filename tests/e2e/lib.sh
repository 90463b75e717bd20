# Shared by the e2e scripts: processes recorded by PID *and* start time, so
# a clean-up never signals a PID that has since been reused, and a clean-up
# that always runs to its end, whatever already exited. Needs $work.

# start_of PID: the process's start time (clock ticks after boot, field 22
# of /proc/PID/stat, read after the command name, which may hold spaces).
start_of() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  set -- $stat
  echo "${20}"
}

# record_pid NAME PID: pids/NAME holds the PID, starts/NAME its start time.
record_pid() {
  mkdir -p "$work/pids" "$work/starts"
  echo "$2" >"$work/pids/$1"
  start_of "$2" >"$work/starts/$1" || true
}

# still_ours NAME: the PID in pids/NAME still names the process started.
still_ours() {
  local pid start
  pid=$(cat "$work/pids/$1" 2>/dev/null) || return 1
  start=$(cat "$work/starts/$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -n "$start" ] && [ "$(start_of "$pid")" = "$start" ]
}

# stop_everything NSFILE...: TERM every recorded process that is still the
# one started, wait (bounded), KILL what remains; then the containers by
# the PIDs their containerd recorded, when their parent (a shim) is in one
# of the run's namespaces; then whatever is left in those namespaces.
# Never stops early: every step tolerates what already exited.
stop_everything() {
  local p name pid f ns ppid nsfile
  for p in "$work"/pids/*; do
    [ -e "$p" ] || continue
    name=${p##*/}
    still_ours "$name" && kill -TERM "$(cat "$p")" 2>/dev/null
  done
  for p in "$work"/pids/*; do
    [ -e "$p" ] || continue
    name=${p##*/}
    for _ in $(seq 50); do still_ours "$name" || break; sleep 0.1; done
    still_ours "$name" && kill -KILL "$(cat "$p")" 2>/dev/null
  done
  local spaces=""
  for nsfile in "$@"; do
    [ -s "$nsfile" ] && spaces="$spaces $(cat "$nsfile")"
  done
  for f in "$work"/root/run/containerd/io.containerd.runtime.v2.task/*/*/init.pid \
           "$work"/node-*/run/containerd/io.containerd.runtime.v2.task/*/*/init.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
    [ -n "$ppid" ] || continue
    ns=$(readlink "/proc/$ppid/ns/mnt" 2>/dev/null) || continue
    case " $spaces " in *" $ns "*) kill -KILL "$pid" 2>/dev/null ;; esac
  done
  for ns in $spaces; do
    for p in /proc/[0-9]*; do
      [ "${p#/proc/}" = $$ ] && continue
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
  done
  return 0
}

# fault_point NAME VICTIM: with E2E_FAULT=NAME, kills VICTIM (as a crash
# would) and fails the run there, to prove the clean-up (cleanup-test.sh).
fault_point() {
  [ "${E2E_FAULT:-}" = "$1" ] || return 0
  kill -KILL "$(cat "$work/pids/$2")" 2>/dev/null || true
  for _ in $(seq 50); do still_ours "$2" || break; sleep 0.1; done
  echo "e2e: E2E_FAULT=$1: $2 killed, failing the run on purpose" >&2
  exit 1
}

# plugin_version: the name make image gave our image (the index's ref.name).
plugin_version() {
  tar -xOf "$work/plugin.oci.tar" index.json | python3 -c \
    'import json, sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])'
}

# import_plugin_cmd CTR BASE: the commands that import make image's archive
# as it is and name it BASE:plugin and BASE:plugin-next (the rolling
# update's "new" image: the same bytes under a name the DaemonSet has not
# run yet).
import_plugin_cmd() {
  local v; v=$(plugin_version)
  echo "'$1' -n k8s.io images import --base-name '$2' '$work/plugin.oci.tar' >/dev/null 2>&1 \
    && '$1' -n k8s.io images tag --force '$2:$v' '$2:plugin' >/dev/null 2>&1 \
    && '$1' -n k8s.io images tag --force '$2:$v' '$2:plugin-next' >/dev/null 2>&1"
}

# make_mount_points DIR...: makes each DIR where it is missing on the
# machine: a mount point a namespace of the run binds one of the run's
# directories on (the k0s kubelet root). remove_mount_points removes what
# it made, deepest first, and only while empty.
made_mount_points=""
make_mount_points() {
  local d p
  for d in "$@"; do
    p=$d
    while [ ! -e "$p" ]; do made_mount_points="$made_mount_points $p"; p=$(dirname "$p"); done
    mkdir -p "$d"
  done
}
remove_mount_points() {
  local p
  for p in $made_mount_points; do rmdir "$p" 2>/dev/null; done
  return 0
}
