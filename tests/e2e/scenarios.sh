#!/usr/bin/env bash
# Runs inside run.sh's private mount namespace: the kubelet's and
# containerd's state directories are bind-mounted from the run's own
# temporary directory, then the scenarios run and print their figures.
set -euo pipefail
work=$1 bin=$2 daemon=$3 kubelet=${4:-kubelet}
IMAGES=e2e.local/hostpath
PAUSE=$IMAGES:pause BUSYBOX=$IMAGES:busybox
R=hostpath-device.k8s.io/sample
DEV=hostpath-device.k8s.io/chardev
GLOB=e2e.local/serial
pass=0
# run.sh stops whatever is left in this namespace, by this identity.
readlink /proc/self/ns/mnt >"$work/mntns"

# HostToContainer mounts (the DaemonSet's host root) need a shared source:
# this namespace's own copy of / is made shared, the machine's is untouched.
mount --make-rshared /
for d in /var/lib/kubelet /run/containerd /var/lib/containerd /var/log/pods /var/log/containers /etc/cdi /var/run/cdi; do
  mkdir -p "$d" "$work/root$d"
  mount --bind "$work/root$d" "$d"
done
mkdir -p "$work/manifests" "$work/data"
echo "through the mount" > "$work/data/file"

. "$(dirname "$0")/lib.sh"
# start NAME CMD...: runs CMD in the background, logging to NAME.log, its
# PID in pids/NAME (and its start time, see lib.sh).
start() {
  local name=$1; shift
  "$@" >>"$work/$name.log" 2>&1 &
  record_pid "$name" $!
}
# stop NAME [SIGNAL]: signals the process by PID, waits (bounded) for it to go.
stop() {
  local pid; pid=$(cat "$work/pids/$1")
  kill "-${2:-TERM}" "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$work/pids/$1"; return 0; }; sleep 0.05; done
  echo "e2e: $1 (pid $pid) did not stop within 5 s" >&2; return 1
}
# wait_for DESC TEST...: retries TEST for up to 30 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "e2e: timed out waiting for $what" >&2; return 1
}
# podstatus NAME: "phase reason" of a pod, from the kubelet's read-only /pods;
# `podstatus NAME health` the allocatedResourcesStatus healths of its containers.
podstatus() {
  curl -sf http://127.0.0.1:21255/pods | python3 -c '
import json, sys
name, what = sys.argv[1] + "-e2e-node", sys.argv[2]
for p in json.load(sys.stdin).get("items") or []:
    if p["metadata"]["name"] != name:
        continue
    st = p.get("status", {})
    if what == "health":
        print(" ".join(d.get("health", "?") for c in st.get("containerStatuses", [])
                       for r in c.get("allocatedResourcesStatus") or [] for d in r.get("resources") or []))
    else:
        print(st.get("phase", ""), st.get("reason", ""))
' "$1" "${2:-phase}"
}
reader_health_is() { [ "$(podstatus reader health)" = "$1" ]; }
refused() { case "$(podstatus refused)" in Failed\ *) return 0 ;; *) return 1 ;; esac; }
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }
allocatable() { "$bin/podres" -resource "${3:-$R}" -want "$1" -timeout "${2:-30s}"; }
now_ms() { date +%s%3N; }

cat >"$work/containerd.toml" <<T
version = 3
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  # No registry here: the pause image is built and imported by run.sh.
  sandbox = '$PAUSE'
[plugins.'io.containerd.cri.v1.runtime']
  # These VMs lack CAP_SYS_RESOURCE: runc cannot set oom_score_adj -998.
  restrict_oom_score_adj = true
T
start containerd "$bin/containerd" --config "$work/containerd.toml"
wait_for "containerd's socket" test -S /run/containerd/containerd.sock
"$bin/ctr" -n k8s.io images import --base-name "$IMAGES" "$work/images.tar" >/dev/null
eval "$(import_plugin_cmd "$bin/ctr" "$IMAGES")"
"$bin/ctr" -n k8s.io images ls -q | grep -qx "$IMAGES:plugin" || fail "make image's archive was not imported"
ok "make image's OCI archive imported into containerd as it is ($IMAGES:$(plugin_version), tagged plugin)"

cat >"$work/kubelet.yaml" <<T
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
staticPodPath: $work/manifests
address: 127.0.0.1
# Ports of our own, clear of a real kubelet's 10250/10255/10248.
port: 21250
readOnlyPort: 21255
healthzPort: 21248
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
failSwapOn: false
localStorageCapacityIsolation: false
makeIPTablesUtilChains: false
evictionHard: {}
T
# allocatedResourcesStatus is behind the ResourceHealthStatus gate, off by
# default before 1.36: turn it on for the older kubelet.
case "$("$bin/$kubelet" --version)" in
  *v1.35.*) echo "featureGates: {ResourceHealthStatus: true}" >>"$work/kubelet.yaml" ;;
esac
start_kubelet() { start kubelet env PATH="$bin:$PATH" "$bin/$kubelet" --config "$work/kubelet.yaml" --hostname-override e2e-node; }
start_kubelet
wait_for "kubelet.sock" test -S /var/lib/kubelet/device-plugins/kubelet.sock
wait_for "the pod-resources socket" test -S /var/lib/kubelet/pod-resources/kubelet.sock
echo "kubelet: $("$bin/$kubelet" --version), containerd: $("$bin/containerd" --version | cut -d' ' -f3), runc: $(runc --version | head -n1 | cut -d' ' -f3)"

mkdir -p "$work/dev"
mknod -m 0666 "$work/dev/e2e-null" c 1 3   # the kernel's null device, at a path of ours
cat >"$work/config.yaml" <<T
resources:
- resourceName: $R
  hostPath: {path: $work/data, type: Directory}
  volumeMount: {mountPath: /sample}
  healthCheckInterval: 1s
- resourceName: $DEV
  numDevices: 2
  hostPath: {path: $work/dev/e2e-null, type: CharDevice}
  volumeMount: {mountPath: /dev/e2e-null}
  permissions: rw
- resourceName: $GLOB
  hostPath: {path: '$work/dev/ttyE2E*', type: CharDevice}
  healthCheckInterval: 1h
T
mkdir -p "$work/out"
# pod NAME [RESOURCE SCRIPT]: a static pod asking for one device of
# RESOURCE (default $R) and running SCRIPT (default: copy what it reads
# through the mount to out/NAME), then sleeping.
pod() {
  local script=${3:-"cat /sample/file > /out/$1"}
  # Written beside it and renamed into place: the kubelet ignores dot
  # files, and never reads a half-written manifest.
  cat >"$work/manifests/.$1.yaml" <<T
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: c
    image: $BUSYBOX
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "$script && exec sleep 3600"]
    resources: {limits: {${2:-$R}: 1}}
    volumeMounts: [{name: out, mountPath: /out}]
  volumes: [{name: out, hostPath: {path: $work/out, type: Directory}}]
T
  mv "$work/manifests/.$1.yaml" "$work/manifests/$1.yaml"
}

# 6. Plugin registration with the real kubelet: start → allocatable.
t0=$(now_ms)
start daemon "$daemon" --config "$work/config.yaml"
allocatable 100 >/dev/null
ok "registered: daemon start → 100 allocatable in the kubelet: $(( $(now_ms) - t0 )) ms"
fault_point registered kubelet
sock=/var/lib/kubelet/device-plugins/$(echo "$R" | tr / -).sock
mode=$(stat -c %a "$sock") || fail "no socket at $sock"
[ "$mode" = 600 ] || fail "our socket is mode $mode, not 0600"
ok "our socket is private (0600)"

# 1. A path reaches the container: the pod reads the file through the
#    mount from our Allocate answer, and pod-resources shows the device.
t0=$(now_ms)
pod reader
wait_for "the pod to read the file" test -s "$work/out/reader"
[ "$(cat "$work/out/reader")" = "through the mount" ] || fail "the pod read '$(cat "$work/out/reader")'"
ok "a pod read the host file through the mount: manifest → read in $(( $(now_ms) - t0 )) ms"
held=$("$bin/podres" -list | grep " $R ") || fail "pod-resources shows no $R allocation"
ok "pod-resources: $held"

# 2. A device node reaches the container as a device node, and the
#    runtime's device cgroup lets a write through.
t0=$(now_ms)
pod writer "$DEV" "test -c /dev/e2e-null && echo written > /dev/e2e-null && echo yes > /out/writer"
wait_for "the writer pod to write to the device" test -s "$work/out/writer"
ok "a CharDevice node reached the container and took a write: manifest → written in $(( $(now_ms) - t0 )) ms"
"$bin/podres" -list | grep -q " $DEV " || fail "pod-resources shows no $DEV allocation"

# 3. Health: the path removed → nothing allocatable; back → all again.
mv "$work/data" "$work/data.away"
t0=$(now_ms)
allocatable 0 >/dev/null
ok "path removed → 0 allocatable: $(( $(now_ms) - t0 )) ms"
wait_for "the reader pod's status to show its device Unhealthy" reader_health_is Unhealthy
ok "the reader pod's allocatedResourcesStatus says Unhealthy: $(( $(now_ms) - t0 )) ms"
pod refused
wait_for "the new pod to be refused admission" refused
ok "a pod asking for the resource meanwhile is refused admission: $(podstatus refused)"
rm "$work/manifests/refused.yaml"
mv "$work/data.away" "$work/data"
t0=$(now_ms)
allocatable 100 >/dev/null
ok "path back → 100 allocatable: $(( $(now_ms) - t0 )) ms"
wait_for "the reader pod's status to show its device Healthy" reader_health_is Healthy
ok "the reader pod's allocatedResourcesStatus says Healthy again: $(( $(now_ms) - t0 )) ms"

# task_pid: the PID of the reader pod's container (not its sandbox).
task_pid() {
  local id
  id=$("$bin/ctr" -n k8s.io containers ls -q 'labels."io.kubernetes.pod.name"==reader-e2e-node,labels."io.kubernetes.container.name"==c')
  [ -n "$id" ] && "$bin/ctr" -n k8s.io tasks ls | awk -v id="$id" '$1 == id {print $2}'
}
before=$(task_pid) || fail "no container for the reader pod"

# 4. Kubelet restart with the pod running: registered again, the container
#    not restarted, a new pod admitted.
stop kubelet
t0=$(now_ms)
start_kubelet
wait_for "the new kubelet.sock" test -S /var/lib/kubelet/device-plugins/kubelet.sock
allocatable 100 >/dev/null
ok "kubelet restart: kubelet start → 100 allocatable again: $(( $(now_ms) - t0 )) ms"
[ "$(grep -c "$R: registered with the kubelet" "$work/daemon.log")" = 2 ] || fail "not exactly two registrations in the daemon's log"
ok "one registration per kubelet start"
[ "$(task_pid)" = "$before" ] || fail "the reader's container changed across the kubelet restart"
ok "the running container was not restarted (pid $before)"
t0=$(now_ms)
pod second
wait_for "the second pod to read the file" test -s "$work/out/second"
ok "a new pod was admitted after the restart: manifest → read in $(( $(now_ms) - t0 )) ms"

# 8. The daemon stopped and started: its socket goes on SIGTERM, and the
#    resource comes back with the new process.
t0=$(now_ms)
stop daemon
[ ! -e "$sock" ] || fail "SIGTERM left $sock behind"
ok "SIGTERM: the daemon exited in $(( $(now_ms) - t0 )) ms and removed its socket"
allocatable 0 5s >/dev/null
ok "after SIGTERM the kubelet allocates none: $(( $(now_ms) - t0 )) ms from the signal"
t0=$(now_ms)
start daemon "$daemon" --config "$work/config.yaml"
fault_point registered kubelet
allocatable 100 >/dev/null
ok "daemon restart: start → 100 allocatable: $(( $(now_ms) - t0 )) ms"
[ "$(task_pid)" = "$before" ] || fail "the reader's container changed across the daemon restart"
ok "the pod holding a device kept running through the daemon's restart"

# 9. Twenty pods at once: all admitted, no device handed out twice.
t0=$(now_ms)
for i in $(seq 20); do pod "many$i"; done
for i in $(seq 20); do wait_for "pod many$i to read the file" test -s "$work/out/many$i"; done
ok "20 pods at once: manifests written → all 20 read the file in $(( $(now_ms) - t0 )) ms"
"$bin/podres" -list | awk -v r="$R" '$3 == r' >"$work/held"
held=$(wc -l <"$work/held")
distinct=$(awk '{print $4}' "$work/held" | sort -u | wc -l)
[ "$held" = 22 ] && [ "$distinct" = 22 ] || fail "pod-resources: $held containers hold $distinct distinct devices, expected 22 and 22"
ok "pod-resources: 22 containers hold 22 distinct devices (no double booking)"

# 10. Devices that come and go under the real kubelet: a pattern resource's
#     device plugged (a node made with mknod: the kernel's null device at a
#     path of ours), handed to a pod as a device node, unplugged (Unhealthy
#     in the pod's status), plugged back under the same ID. The resource has
#     a one-hour rescan interval: every change here came through inotify.
allocatable 0 30s "$GLOB" >/dev/null
t0=$(now_ms)
mknod -m 0666 "$work/dev/ttyE2E0" c 1 3
allocatable 1 30s "$GLOB" >/dev/null
ok "pattern resource: a node plugged → allocatable in the kubelet: $(( $(now_ms) - t0 )) ms"
t0=$(now_ms)
pod serial "$GLOB" "test -c $work/dev/ttyE2E0 && echo written > $work/dev/ttyE2E0 && echo yes > /out/serial"
wait_for "the serial pod to write to its device" test -s "$work/out/serial"
ok "the plugged device reached a pod at its own path and took a write: manifest → written in $(( $(now_ms) - t0 )) ms"
id=$("$bin/podres" -list | awk -v r="$GLOB" '$3 == r {print $4}')
[ "$id" = "$work/dev/ttyE2E0" ] || fail "pod-resources shows the serial pod holding '$id', not $work/dev/ttyE2E0"
ok "pod-resources: the pod holds device $id (its ID is the matched path)"
mknod -m 0666 "$work/dev/ttyE2E1" c 1 3
allocatable 2 30s "$GLOB" >/dev/null
ok "a second node plugged → 2 allocatable"
t0=$(now_ms)
rm "$work/dev/ttyE2E0"
allocatable 1 30s "$GLOB" >/dev/null
ok "the held device unplugged → 1 allocatable: $(( $(now_ms) - t0 )) ms"
serial_health_is() { [ "$(podstatus serial health)" = "$1" ]; }
wait_for "the serial pod's status to show its device Unhealthy" serial_health_is Unhealthy
ok "the serial pod's allocatedResourcesStatus says Unhealthy: $(( $(now_ms) - t0 )) ms; the pod is $(podstatus serial)"
t0=$(now_ms)
mknod -m 0666 "$work/dev/ttyE2E0" c 1 3
allocatable 2 30s "$GLOB" >/dev/null
wait_for "the serial pod's status to show its device Healthy" serial_health_is Healthy
ok "plugged back → 2 allocatable and the pod's device Healthy under the same ID: $(( $(now_ms) - t0 )) ms"
[ "$("$bin/podres" -list | awk -v r="$GLOB" '$3 == r {print $4}')" = "$work/dev/ttyE2E0" ] || fail "the serial pod's device ID changed"
grep -q "$GLOB: vanished: $work/dev/ttyE2E0" "$work/daemon.log" && grep -q "$GLOB: back: $work/dev/ttyE2E0" "$work/daemon.log" \
  || fail "the daemon's log lacks the vanished/back lines"
ok "the daemon logged the device vanished and back"
rm -f "$work/manifests/serial.yaml"

# 11. A USB device by who it is (B20): a fake CP210x Zigbee stick, its
#     sysfs tree shaped like the kernel's under a host root of ours, its
#     tty node /dev/ttyUSB0 in a /dev private to this namespace (a tmpfs
#     copy of the machine's, so nothing is made in the real devtmpfs; the
#     node is the kernel's null device). A second daemon serves it with
#     `nodes: [{subsystem: tty, mountPath: /dev/zigbee}]`; the pod writes to
#     /dev/zigbee and reads which device it got from the environment.
ZB=e2e.local/zigbee
private_dev=$work/private-dev
mkdir -p "$private_dev"
mount -t tmpfs -o mode=0755 e2e-dev "$private_dev"
cp -a -x /dev/. "$private_dev/"
for m in pts shm mqueue hugepages; do
  mountpoint -q "/dev/$m" && mount --rbind "/dev/$m" "$private_dev/$m"
done
rm -f "$private_dev/ttyUSB0"
mount --rbind "$private_dev" /dev
u=$work/usbroot
sysdev=$u/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1.2
tty=$sysdev/1-1.2:1.0/ttyUSB0/tty/ttyUSB0
mkdir -p "$tty" "$u/sys/bus/usb/devices" "$u/sys/class/tty" "$u/dev"
mount --rbind /dev "$u/dev"
cat >"$work/usb.yaml" <<T
resources:
- resourceName: $ZB
  usb: [{vendor: '10c4', product: 'ea60'}]
  nodes: [{subsystem: tty, mountPath: /dev/zigbee}]
  healthCheckInterval: 1h
  removeAfter: 0s
T
start usbdaemon "$daemon" --config "$work/usb.yaml" --host-root "$u"
allocatable 0 30s "$ZB" >/dev/null
t0=$(now_ms)
for kv in idVendor=10c4 idProduct=ea60 serial=E2E0001 busnum=1 devnum=5; do
  echo "${kv#*=}" >"$sysdev/${kv%%=*}"
done
ln -s ../../../devices/pci0000:00/0000:00:14.0/usb1/1-1.2 "$u/sys/bus/usb/devices/1-1.2"
echo 1:3 >"$tty/dev"
printf 'MAJOR=1\nMINOR=3\nDEVNAME=ttyUSB0\n' >"$tty/uevent"
ln -s ../../../../../../../../../class/tty "$tty/subsystem"
mknod -m 0666 /dev/ttyUSB0 c 1 3
allocatable 1 30s "$ZB" >/dev/null
ok "USB stick plugged (sysfs, then its tty node) → allocatable in the kubelet: $(( $(now_ms) - t0 )) ms"
t0=$(now_ms)
pod zigbee "$ZB" 'test -c /dev/zigbee && echo hello > /dev/zigbee && echo $E2E_LOCAL_ZIGBEE_IDS $E2E_LOCAL_ZIGBEE_PATHS $E2E_LOCAL_ZIGBEE_HOST_PATHS > /out/zigbee'
wait_for "the zigbee pod to write to /dev/zigbee" test -s "$work/out/zigbee"
got=$(cat "$work/out/zigbee")
[ "$got" = "usb:10c4:ea60:E2E0001 /dev/zigbee /dev/ttyUSB0" ] || fail "the zigbee pod's environment says '$got'"
ok "the stick's tty reached the pod at /dev/zigbee and took a write; its environment names it ($got): manifest → written in $(( $(now_ms) - t0 )) ms"
t0=$(now_ms)
rm /dev/ttyUSB0
allocatable 0 30s "$ZB" >/dev/null
ok "its tty node removed → none allocatable: $(( $(now_ms) - t0 )) ms"
rm -f "$work/manifests/zigbee.yaml"
stop usbdaemon
umount -l "$u/dev" /dev

# 12. generic-device-plugin's DaemonSet with only the image changed: our
#     binary started with that project's arguments (--device JSON,
#     --domain, --plugin-directory, --listen, --log-level) serves its
#     serial glob to the real kubelet; a pod gets the node and writes to
#     it; that project's metric series count the device and the allocation.
GDPR=e2e.gdp/e2e-serial
mknod -m 0666 "$work/dev/ttyGDP0" c 1 3
t0=$(now_ms)
start gdp "$daemon" --device "{\"name\": \"e2e-serial\", \"groups\": [{\"paths\": [{\"path\": \"$work/dev/ttyGDP*\"}]}]}" \
  --domain e2e.gdp --plugin-directory /var/lib/kubelet/device-plugins --listen 127.0.0.1:0 --log-level info
allocatable 1 30s "$GDPR" >/dev/null
ok "generic-device-plugin's arguments: registered, its glob's node allocatable: $(( $(now_ms) - t0 )) ms"
pod gdp "$GDPR" "echo written > $work/dev/ttyGDP0 && echo yes > /out/gdp"
wait_for "the pod to write to the generic-device-plugin device" test -s "$work/out/gdp"
ok "a pod got the node through its resource name $GDPR and wrote to it"
gdp_metrics() {
  local port
  port=$(sed -n 's#.*metrics on http://127.0.0.1:\([0-9]*\)/metrics.*#\1#p' "$work/gdp.log" | head -n1)
  python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://127.0.0.1:$port/metrics"
}
gdp_counted() {
  local m; m=$(gdp_metrics) || return 1
  grep -qx "generic_device_plugin_devices{resource=\"$GDPR\"} 1" <<<"$m" &&
    grep -qx "generic_device_plugin_allocations_total{resource=\"$GDPR\"} 1" <<<"$m" &&
    grep -q "^generic_device_plugin_restarts_total{resource=\"$GDPR\"} " <<<"$m"
}
wait_for "generic-device-plugin's series to count the device and the allocation" gdp_counted
ok "its metric series: generic_device_plugin_devices 1, allocations_total 1, restarts_total present"
rm -f "$work/manifests/gdp.yaml"
stop gdp

# 6. Plugin-watcher registration: the kubelet finds our socket in its
#    plugins registry, and deregisters it when SIGTERM removes it.
stop daemon
allocatable 0 >/dev/null
t0=$(now_ms)
start daemon "$daemon" --config "$work/config.yaml" --registration plugin-watcher
allocatable 100 >/dev/null
ok "plugin watcher: daemon start → 100 allocatable: $(( $(now_ms) - t0 )) ms"
# Sockets only: the kubelet rewrites its checkpoint through a temporary
# `.kubelet_internal_checkpoint…` file, which a listing can catch.
left=$(find /var/lib/kubelet/device-plugins -mindepth 1 -maxdepth 1 -type s ! -name kubelet.sock -printf '%f ')
[ -z "$left" ] || fail "plugin-watcher mode left sockets in the device-plugin directory: $left"
[ -S "/var/lib/kubelet/plugins_registry/$(echo "$R" | tr / -).sock" ] || fail "no socket in the plugins registry"
t0=$(now_ms)
stop daemon
allocatable 0 >/dev/null
ok "plugin watcher: SIGTERM → socket removed, none allocatable: $(( $(now_ms) - t0 )) ms"

# 5. A reboot, emulated: every container gone, the kubelet and the daemon
#    started together, the daemon D ms after the kubelet, with a static pod
#    asking for the resource already in the manifest directory. Recorded:
#    admitted, or refused with UnexpectedAdmissionError.
boot_outcome() { case "$(podstatus "$1")" in Running\ *|Failed\ *) return 0 ;; *) return 1 ;; esac; }
for delay in 0 100 1000; do
  stop kubelet
  for f in /run/containerd/io.containerd.runtime.v2.task/k8s.io/*/init.pid; do
    [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  rm -f "$work"/manifests/*.yaml
  pod "boot$delay"
  t0=$(now_ms)
  start_kubelet
  left=$(( delay - ($(now_ms) - t0) ))
  [ "$left" -gt 0 ] && sleep "$(printf '0.%03d' "$left")"
  start daemon "$daemon" --config "$work/config.yaml"
fault_point registered kubelet
  wait_for "pod boot$delay to be admitted or refused" boot_outcome "boot$delay"
  ok "reboot, daemon $delay ms after the kubelet: the pod is $(podstatus "boot$delay")"
  stop daemon
done

# static_daemonset_pod RENDERED NAME CONFIG_DIR: the first DaemonSet of
# the rendered manifests as static pod NAME with our image, its ConfigMap
# volume swapped for the hostPath directory CONFIG_DIR (no API server here).
static_daemonset_pod() {
  python3 - "$1" "$2" "$3" "$IMAGES:plugin" "$work/manifests" <<'PY'
import sys, yaml
rendered, name, cfg, image, manifests = sys.argv[1:6]
ds = next(d for d in yaml.safe_load_all(open(rendered)) if d and d["kind"] == "DaemonSet")
spec = ds["spec"]["template"]["spec"]
for c in spec["containers"]:
    c["image"], c["imagePullPolicy"] = image, "Never"
for v in spec["volumes"]:
    if "configMap" in v:
        v.pop("configMap")
        v["hostPath"] = {"path": cfg, "type": "Directory"}
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": name, "namespace": ds["metadata"]["namespace"]}, "spec": spec}
yaml.safe_dump(pod, open(f"{manifests}/{name}.yaml", "w"))
PY
}
# static_pod_ready NAME: every container of static pod NAME is Ready.
static_pod_ready() {
  curl -sf http://127.0.0.1:21255/pods | python3 -c '
import json, sys
for p in json.load(sys.stdin).get("items") or []:
    if p["metadata"]["name"] == sys.argv[1] + "-e2e-node":
        sys.exit(0 if all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}]) else 1)
sys.exit(1)' "$1"
}

# 7. The DaemonSet's own pod template, run as a static pod with our image:
#    host root read-only at /host, capabilities dropped, read-only root
#    filesystem, the exec probes. Only the ConfigMap volume is swapped for a
#    hostPath directory holding the same file.
mkdir -p "$work/cfg"
cp "$(dirname "$0")/../../deploy/config.yaml" "$work/cfg/config.yaml"
kubelet_registrations() { grep -c "Got registration request from device plugin with resource\" resourceName=\"$R\"" "$work/kubelet.log" || true; }
more_registrations() { [ "$(kubelet_registrations)" -gt "$regs_before" ]; }
regs_before=$(kubelet_registrations)
static_daemonset_pod "$work/deploy.yaml" plugin "$work/cfg"
t0=$(now_ms)
wait_for "the DaemonSet pod to be Ready (its exec readiness probe)" static_pod_ready plugin
ok "the DaemonSet's pod template as a static pod: Ready (exec probe passed) $(( $(now_ms) - t0 )) ms after its manifest"
# /sample (deploy/config.yaml's path) is absent on this machine, and
# creating it would touch the machine's root: the devices are Unhealthy, so
# nothing is allocatable and the kubelet's checkpoint lists none. What shows
# the registration is the kubelet itself, counting its registrations of $R.
wait_for "the kubelet to take the DaemonSet pod's registration" more_registrations
ok "the kubelet took $R's registration from the DaemonSet pod (devices Unhealthy: /sample is absent here)"
grep -q "probe failed\|Liveness probe failed\|Readiness probe failed" "$work/kubelet.log" && fail "a probe failed: $(grep -m1 'probe failed' "$work/kubelet.log")"

. "$(dirname "$0")/scenario-roots.sh"

stop kubelet
stop containerd
echo "e2e: $pass passed"
