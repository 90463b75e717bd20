# make e2e-cluster's DRA scenarios (issue 21), sourced by
# cluster-scenarios.sh once the device-plugin scenarios are done: both nodes
# move to deploy/dra/'s DaemonSet (the node label), then the real scheduler,
# kubelet 1.37 and containerd allocate, prepare and run claims on what the
# daemon publishes.
D=hostpath-device.k8s.io
S=$D/serial
dra() { python3 "$repo/tests/e2e/dra.py" "$@"; }
slices_json() { k get resourceslices -o json; }
offered() { slices_json | dra offered "$1" "$2"; }
offered_count() { offered "$1" "$2" | grep -c . || true; }
offers() { [ "$(offered_count "$1" "$2")" = "$3" ]; }
# offers_exactly NODE RESOURCE PATH...: the pool offers exactly these paths.
offers_exactly() {
  local node=$1 res=$2; shift 2
  [ "$(offered "$node" "$res" | awk '{print $2}' | sort | tr '\n' ' ')" = "$(printf '%s\n' "$@" | sort | tr '\n' ' ')" ]
}
pool_published() { slices_json | dra pool-published "$1" "$2"; }
claims_json() { k get resourceclaims -o json; }
allocations() { claims_json | dra allocations; }
cdi_specs() { on "$1" "ls /var/run/cdi 2>/dev/null | grep -c '^$D-device_' || true"; }
cdi_specs_are() { [ "$(cdi_specs "$1")" = "$2" ]; }
phase_of() { k get pod "$1" -o jsonpath='{.status.phase}'; }
is_running() { [ "$(phase_of "$1")" = Running ]; }
node_of() { k get pod "$1" -o jsonpath='{.spec.nodeName}'; }
dra_pod_on() { pods -n "$NS" -l app.kubernetes.io/component=dra-driver | awk -v n="$1" '$2 == n && $3 == "Running" {print $1}'; }
dra_ready_on() { [ -n "$(dra_pod_on "$1")" ] && [ "$(k get pod -n "$NS" "$(dra_pod_on "$1")" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
# claim_pod NAME TEMPLATE COMMAND [EXTRA SPEC LINE]: a pod with one claim from TEMPLATE.
claim_pod() {
  k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {e2e-dra: "yes"}}
spec:
  terminationGracePeriodSeconds: 1
  ${4:-}
  resourceClaims: [{name: dev, resourceClaimTemplateName: $2}]
  containers:
    - name: main
      image: e2e.local/hostpath:busybox
      command: ["/bin/sh", "-c", "$3"]
      resources: {claims: [{name: dev}]}
YAML
}
# template NAME CLASS CEL: a ResourceClaimTemplate for one device of CLASS.
template() {
  local selectors=""
  [ -z "${3:-}" ] || selectors="selectors: [{cel: {expression: '$3'}}]"
  k apply -f - >/dev/null <<YAML
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: $1}
spec:
  spec:
    devices:
      requests:
        - name: dev
          exactly:
            deviceClassName: $2
            $selectors
YAML
}
gone() { ! k get pod "$1" >/dev/null 2>&1; }
# restart_kubelet NODE: the kubelet stopped and started again in NODE's namespace.
restart_kubelet() {
  local pid; pid=$(cat "$work/pids/kubelet-$1")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  nsenter --mount="/proc/$(cat "$work/pids/containerd-$1")/ns/mnt" "$work/$1/start-kubelet" &
  record_pid "kubelet-$1" $!
}

# E2E_ONLY=helm: straight to the chart scenarios (cluster-helm.sh).
if [ "${E2E_ONLY:-}" != helm ]; then
# 7. Both nodes move to DRA: labelled, the device plugin's pods leave and
#    deploy/dra/'s come (applied as the README says, the image set, and the
#    API server's address given, as this cluster has no kube-proxy).
on node-b 'rm -rf /sample'
on node-a 'mkdir -p /e2e-dev'
python3 - "$work/deploy/config.yaml" "$S" <<'PY'
import sys, yaml
path, name = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(path))
doc = {"resources": doc.get("resources") or [doc]}
doc["resources"].append({"resourceName": name, "hostPath": {"path": "/e2e-dev/tty*", "type": "CharDevice"}})
with open(path, "w") as f:
    f.write("# make e2e-cluster's DRA scenarios: a pattern of device nodes added.\n")
    yaml.safe_dump(doc, f, sort_keys=False)
PY
"$gen" --device-classes "$work/deploy/config.yaml" >"$work/deploy/dra/deviceclasses.yaml"
python3 - "$work/deploy/dra/daemonset.yaml" <<'PY'
import sys, yaml
path = sys.argv[1]
docs = list(yaml.safe_load_all(open(path)))
c = docs[0]["spec"]["template"]["spec"]["containers"][0]
c["env"] += [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
             {"name": "KUBERNETES_SERVICE_PORT", "value": "26443"}]
with open(path, "w") as f:
    yaml.safe_dump_all(docs, f, sort_keys=False)
PY
(cd "$work/deploy/dra" && "$cbin/kustomize" edit set image k8s-hostpath-device-plugin=e2e.local/hostpath:plugin)
t0=$(now_ms)
k apply -k "$work/deploy" >/dev/null
k apply -k "$work/deploy/dra" >/dev/null
k label node node-a node-b "$D/api=dra" >/dev/null
dp_gone() { [ -z "$(pods -n "$NS" -l app.kubernetes.io/component=device-plugin)" ]; }
wait_for 120 "the device plugin's pods to leave the labelled nodes" dp_gone
wait_for 120 "deploy/dra/'s pod Ready on node-a" dra_ready_on node-a
wait_for 120 "deploy/dra/'s pod Ready on node-b" dra_ready_on node-b
ok "nodes labelled $D/api=dra: the device plugin's pods gone, deploy/dra/'s DaemonSet Ready on both (readiness: the probe's GetInfo on the registration socket) $(since "$t0") after kubectl label"
wait_for 120 "node-a's allocatable $R to drop to 0 without its device plugin" alloc_is node-a 0
ok "node-a's allocatable $R is 0 without the device plugin ($(since "$t0") after kubectl label): the scheduler will not use the device-plugin API there"

# E2E_ONLY=migrate: only the set-up above, then the migration scenarios.
if [ "${E2E_ONLY:-}" != migrate ]; then
# 8 (a). The slices: node-a offers its 100 sample devices as documented;
#    node-b, without /sample, publishes its pool empty.
wait_for 60 "node-a's slices to offer 100 devices of $R" offers node-a "$R" 100
ok "node-a's pool $R: 100 devices published $(since "$t0") after kubectl label"
slices_json >"$work/slices.json"
dra slices-right node-a "$R" 100 <"$work/slices.json" >"$work/slices.problems" || fail "node-a's slices: $(cat "$work/slices.problems")"
ok "node-a's slices as documented (owned by the Node, one generation, device names unique, attributes resource/id/path/kind), e.g. $(dra sample <"$work/slices.json")"
! grep -q "$X" "$work/deploy/config.yaml" || offers node-a "$X" 1 || fail "node-a offers $(offered_count node-a "$X") devices of $X, not 1"
wait_for 60 "node-b to publish its pool of $R" pool_published node-b "$R"
[ "$(offered_count node-b "$R")" = 0 ] || fail "node-b (no /sample) offers $(offered_count node-b "$R") devices of $R"
[ "$(offered_count node-b "$X")" = 0 ] || fail "node-b (no /extra) offers devices of $X"
ok "node-b (no /sample, no /extra): its pools published with no device"
cat >"$work/foreign-slice.yaml" <<YAML
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: e2e-foreign}
spec: {driver: $D, nodeName: node-b, pool: {name: forged, generation: 1, resourceSliceCount: 1}, devices: [{name: forged}]}
YAML
if k create --dry-run=server -f "$work/foreign-slice.yaml" --as "system:serviceaccount:$NS:hostpath-device-plugin" \
    --as-user-extra authentication.kubernetes.io/node-name=node-a >"$work/foreign.out" 2>&1; then
  fail "the daemon's account on node-a may write node-b's slices"
fi
grep -q "may write only the ResourceSlices of that node" "$work/foreign.out" || fail "a forged slice: $(cat "$work/foreign.out")"
ok "deploy/dra/'s slice policy, by the API server: node-a's account writing a slice of node-b is denied ($(grep -o 'a daemon on node [^,]*, not of [a-z-]*' "$work/foreign.out" | head -n1))"

# 9 (b). Claims: a CEL selector on the path picks a sample device, the pod
#    lands on node-a and reads the host file through the CDI mount; a
#    CharDevice node reaches a container and takes a write.
template sample "sample.$D" "device.attributes[\"$D\"].path == \"/sample\""
t0=$(now_ms)
claim_pod dra-reader sample 'cat /sample/hello && exec sleep 3600'
wait_for 120 "pod dra-reader Running" is_running dra-reader
[ "$(node_of dra-reader)" = node-a ] || fail "dra-reader runs on $(node_of dra-reader)"
wait_for 30 "dra-reader's output" bash -c "[ \"\$('$cbin/kubectl' --kubeconfig '$pki/admin.kubeconfig' logs dra-reader)\" = hello ]"
ok "a pod with a claim (CEL: path == \"/sample\"): scheduled to node-a, Running, read /sample/hello through the CDI mount, $(since "$t0") after kubectl apply; claim $(allocations | awk '$4 ~ /dra-reader/ {print $2 " " $3}')"
cdi_specs_are node-a 1 || fail "node-a has $(cdi_specs node-a) CDI specs of ours, not 1"
on node-a 'mknod /e2e-dev/tty0 c 1 3'
template serial "serial.$D"
t0=$(now_ms)
wait_for 60 "node-a to offer /e2e-dev/tty0" offers_exactly node-a "$S" /e2e-dev/tty0
ok "mknod /e2e-dev/tty0 on node-a → published in $(since "$t0")"
claim_pod dra-serial serial '[ -c /e2e-dev/tty0 ] && echo written >/e2e-dev/tty0 && echo wrote && exec sleep 3600'
wait_for 120 "pod dra-serial Running" is_running dra-serial
wait_for 30 "dra-serial's write" bash -c "[ \"\$('$cbin/kubectl' --kubeconfig '$pki/admin.kubeconfig' logs dra-serial)\" = wrote ]"
ok "a claim on the CharDevice: /e2e-dev/tty0 is a character device in the container and took a write ($(since "$t0") from mknod)"

# 10 (c). Plug and unplug: a claim for a device not there yet stays Pending;
#    mknod under the pattern → published, the pod scheduled; rm → the pod's
#    allocatedResourcesStatus says Unhealthy.
template plug "serial.$D" 'device.attributes["'$D'"].path == "/e2e-dev/tty-plug"'
claim_pod dra-plug plug 'exec sleep 3600'
unschedulable() { k get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}' | grep -q Unschedulable; }
wait_for 60 "pod dra-plug to be unschedulable" unschedulable dra-plug
ok "a claim for /e2e-dev/tty-plug, not there yet: Pending, \"$(k get pod dra-plug -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}' | cut -c1-120)\""
t0=$(now_ms)
on node-a 'mknod /e2e-dev/tty-plug c 1 3'
wait_for 60 "tty-plug published" offers_exactly node-a "$S" /e2e-dev/tty0 /e2e-dev/tty-plug
t_pub=$(since "$t0")
wait_for 120 "pod dra-plug Running" is_running dra-plug
ok "mknod /e2e-dev/tty-plug → in node-a's slice in $t_pub, the Pending pod Running on $(node_of dra-plug) $(since "$t0") after mknod"
health_is() { k get pod "$1" -o json | dra health | grep -q " $2\$"; }
wait_for 60 "dra-plug's device Healthy in its status" health_is dra-plug Healthy
t0=$(now_ms)
on node-a 'rm /e2e-dev/tty-plug'
wait_for 60 "dra-plug's device Unhealthy in its status" health_is dra-plug Unhealthy
ok "rm /e2e-dev/tty-plug → the pod's allocatedResourcesStatus: $(k get pod dra-plug -o json | dra health | tr '\n' ' ')in $(since "$t0")"
wait_for 60 "tty-plug withdrawn from node-a's slice" offers_exactly node-a "$S" /e2e-dev/tty0
is_running dra-plug || fail "dra-plug stopped when its device went"
ok "its slice no longer offers it; the pod keeps running (a device is never taken away)"
# Events on the Node (issue 23): the device that went is a Warning on
# node-a that `kubectl describe node` shows; plugged back, a Normal one.
node_event() {
  k get events -n default --field-selector "involvedObject.kind=Node,involvedObject.name=$1,reason=$2" \
    -o jsonpath='{range .items[*]}{.type} {.count} {.message}{"\n"}{end}' | grep "$3"
}
wait_for 60 "a DevicesVanished event on node-a" node_event node-a DevicesVanished tty-plug
ok "Event on node-a: $(node_event node-a DevicesVanished tty-plug | head -n1) ($(since "$t0") after rm)"
t0=$(now_ms)
on node-a 'mknod /e2e-dev/tty-plug c 1 3'
wait_for 60 "a DevicesBack event on node-a" node_event node-a DevicesBack tty-plug
ok "plugged back → Event on node-a: $(node_event node-a DevicesBack tty-plug | head -n1) ($(since "$t0") after mknod)"
k describe node node-a | grep -q "DevicesVanished" || fail "kubectl describe node node-a does not show the DevicesVanished event"
ok "kubectl describe node node-a shows them"
on node-a 'rm /e2e-dev/tty-plug'
wait_for 60 "tty-plug withdrawn again" offers_exactly node-a "$S" /e2e-dev/tty0
k delete pod dra-plug dra-serial --wait=false >/dev/null

# 11 (e). Twenty pods, ten exclusive device nodes: ten run, each with its
#    own device, ten wait; no device is ever given twice.
on node-a 'for i in 1 2 3 4 5 6 7 8 9; do mknod /e2e-dev/tty$i c 1 3; done'
wait_for 60 "ten serial devices offered" offers node-a "$S" 10
wait_for 60 "dra-serial and dra-plug gone" bash -c "! '$cbin/kubectl' --kubeconfig '$pki/admin.kubeconfig' get pod dra-serial dra-plug 2>/dev/null | grep -q dra-"
t0=$(now_ms)
k apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: serials}
spec:
  replicas: 20
  selector: {matchLabels: {app: serials}}
  template:
    metadata: {labels: {app: serials}}
    spec:
      terminationGracePeriodSeconds: 1
      resourceClaims: [{name: dev, resourceClaimTemplateName: serial}]
      containers:
        - name: main
          image: e2e.local/hostpath:busybox
          command: ["/bin/sh", "-c", "ls /e2e-dev && exec sleep 3600"]
          resources: {claims: [{name: dev}]}
YAML
ten_and_ten() {
  local out; out=$(pods -l app=serials)
  [ "$(echo "$out" | awk '$3 == "Running"' | wc -l)" = 10 ] && [ "$(echo "$out" | awk '$3 == "Pending" && $2 == "-"' | wc -l)" = 10 ]
}
wait_for 240 "10 serials Running and 10 Pending" ten_and_ten
ok "20 pods, 10 device nodes: 10 Running on node-a, 10 Pending unscheduled, $(since "$t0") after kubectl apply"
allocations | grep "/$S" >"$work/serial.allocations" || true
[ "$(wc -l <"$work/serial.allocations")" = 10 ] || fail "$(wc -l <"$work/serial.allocations") serial devices allocated, not 10"
[ "$(awk '{print $3}' "$work/serial.allocations" | sort -u | wc -l)" = 10 ] || fail "a device given twice: $(cat "$work/serial.allocations")"
seen=$(for p in $(pods -l app=serials | awk '$3 == "Running" {print $1}'); do k logs "$p"; done | sort)
[ "$(echo "$seen" | grep -c '^tty[0-9]$')" = 10 ] && [ "$(echo "$seen" | sort -u | wc -l)" = 10 ] \
  || fail "the running pods saw /e2e-dev as: $seen"
cdi_specs_are node-a 11 || fail "node-a has $(cdi_specs node-a) CDI specs, not 11 (dra-reader's and ten)"
ok "no device given twice: 10 claims on 10 distinct devices, each container sees its own device node only ($(echo "$seen" | tr '\n' ' ')); 11 CDI specs on node-a"

# 12 (d). A kubelet restart wipes node-a's slices; the daemon publishes them
#    again. A daemon restart while pods hold claims: they keep running, and
#    deleting them afterwards unprepares them (CDI specs gone).
pods -l app=serials >"$work/serials.before"
uids() { slices_json | dra uids "$1" "$2"; }
before=$(uids node-a "$R")
republished() { local now; now=$(uids node-a "$R"); [ -n "$now" ] && [ "$now" != "$before" ] && offers node-a "$R" 100; }
t0=$(now_ms)
restart_kubelet node-a
wait_for 60 "node-a's slices wiped by its kubelet and published again" republished
t_back=$(since "$t0")
wait_for 120 "node-a Ready after its kubelet's restart" k wait --for=condition=Ready node/node-a --timeout=1s
ok "kubelet restart on node-a: its slices wiped and published again (new objects, 100 devices) $t_back after the restart began"
pods -l app=serials >"$work/serials.now"
diff "$work/serials.before" "$work/serials.now" >/dev/null || fail "the serials changed across the kubelet restart: $(diff "$work/serials.before" "$work/serials.now")"
old=$(dra_pod_on node-a)
t0=$(now_ms)
k delete pod -n "$NS" "$old" >/dev/null
new_dra() { [ -n "$(dra_pod_on node-a)" ] && [ "$(dra_pod_on node-a)" != "$old" ] && dra_ready_on node-a; }
wait_for 120 "a new DRA pod Ready on node-a" new_dra
ok "daemon restart on node-a (pod deleted, the DaemonSet's next one Ready in $(since "$t0"))"
pods -l app=serials >"$work/serials.now"
diff "$work/serials.before" "$work/serials.now" >/dev/null || fail "the serials changed across the daemon restart"
is_running dra-reader || fail "dra-reader stopped across the daemon restart"
ok "the 10 running serials and dra-reader kept running across both restarts (same pods, no restart)"
t0=$(now_ms)
k scale deployment serials --replicas 0 >/dev/null
wait_for 120 "the serials' CDI specs removed" cdi_specs_are node-a 1
ok "deleting the 10 pods after the daemon's restart unprepared their claims: node-a's CDI specs 11 → 1 in $(since "$t0")"
no_serials() { [ -z "$(pods -l app=serials)" ]; }
wait_for 120 "the serials' pods gone" no_serials

# 13 (g). The reboot race under DRA: node-a's kubelet and every container
#    stopped, its CDI specs gone (as /var/run is after a reboot), a pod bound
#    to node-a meanwhile; the kubelet starts, the daemon (its DaemonSet pod)
#    after it. Recorded: whether the new pod waits and runs, and whether
#    dra-reader, prepared before, runs again.
# The scheduler binds to node-a only while its lease is under 40 s old:
# start the reboot with a freshly renewed one, or node-a may turn NotReady
# (and tainted) before dra-boot is bound.
lease_fresh() {
  local t; t=$(k get lease -n kube-node-lease node-a -o jsonpath='{.spec.renewTime}') || return 1
  [ -n "$t" ] && [ $(( $(now_ms) - $(date -d "$t" +%s%3N) )) -lt 5000 ]
}
wait_for 60 "node-a's lease renewed" lease_fresh
wait_for 60 "node-a Ready" k wait --for=condition=Ready node/node-a --timeout=1s
kill -TERM "$(cat "$work/pids/kubelet-node-a")"; wait "$(cat "$work/pids/kubelet-node-a")" 2>/dev/null || true
for f in "$work"/node-a/run/containerd/io.containerd.runtime.v2.task/k8s.io/*/init.pid; do
  [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
done
rm -f "$work"/node-a/run/cdi/"$D"-device_*.json
claim_pod dra-boot sample 'cat /sample/hello && exec sleep 3600' "nodeSelector: {kubernetes.io/hostname: node-a}"
bound() { [ "$(node_of dra-boot)" = node-a ]; }
wait_for 30 "pod dra-boot bound to node-a while its kubelet is down" bound \
  || fail "dra-boot not bound: $(k get pod dra-boot -o jsonpath='{.status.conditions}')"
t0=$(now_ms)
nsenter --mount="/proc/$(cat "$work/pids/containerd-node-a")/ns/mnt" "$work/node-a/start-kubelet" &
record_pid kubelet-node-a $!
boot_outcome() { case "$(phase_of dra-boot)" in Running|Failed) return 0 ;; *) return 1 ;; esac; }
wait_for 300 "pod dra-boot to run or fail" boot_outcome
outcome=$(phase_of dra-boot)
events=$(k get events --field-selector involvedObject.name=dra-boot -o jsonpath='{range .items[*]}{.reason}{" "}{end}')
[ "$outcome" = Running ] || fail "after the reboot, dra-boot is $outcome: $(k get pod dra-boot -o jsonpath='{.status.reason} {.status.message}'); events: $events"
ok "reboot race under DRA: the pod bound during the reboot waited for the driver and is Running $(since "$t0") after the kubelet started (its events: $events)"
wait_for 120 "dra-reader Running again after the reboot" is_running dra-reader
read_hello() { [ "$(k logs dra-reader | tail -n1)" = hello ]; }
wait_for 30 "dra-reader to read the file again" read_hello || fail "dra-reader after the reboot read '$(k logs dra-reader)'"
ok "dra-reader, prepared before the reboot, prepared again (its CDI spec was gone) and read the file again: restarts $(k get pod dra-reader -o jsonpath='{.status.containerStatuses[0].restartCount}')"
wait_for 120 "node-a's DRA pod Ready after the reboot" dra_ready_on node-a

# 14 (f), after (g): a reboot started right after the outage found
#    node-a NotReady (its lease stale) and dra-boot unbound. The API server killed and kept away for 30 s: pods untouched;
#    devices changed meanwhile are in the slices soon after it is back.
pods -A >"$work/all.before"
t0=$(now_ms)
kill -KILL "$(cat "$work/pids/kube-apiserver")"; wait "$(cat "$work/pids/kube-apiserver")" 2>/dev/null || true
on node-a 'rm /e2e-dev/tty9; mknod /e2e-dev/tty-new c 1 3'
sleep 30
start_apiserver
wait_for 120 "the API server back" k get --raw /readyz
ok "kube-apiserver killed, started again 30 s later, ready $(since "$t0") after it was stopped (tty9 unplugged, tty-new plugged meanwhile)"
t0=$(now_ms)
want_serials="/e2e-dev/tty0 /e2e-dev/tty1 /e2e-dev/tty2 /e2e-dev/tty3 /e2e-dev/tty4 /e2e-dev/tty5 /e2e-dev/tty6 /e2e-dev/tty7 /e2e-dev/tty8 /e2e-dev/tty-new"
wait_for 90 "node-a's slices to catch up" offers_exactly node-a "$S" $want_serials
ok "node-a's slices caught up $(since "$t0") after the API server was ready (the daemon's backoff is at most 30 s)"
offers node-a "$R" 100 || fail "node-a's $R pool lost devices across the outage"
pods -A >"$work/all.after"
diff "$work/all.before" "$work/all.after" >/dev/null || fail "pods changed across the API server's outage: $(diff "$work/all.before" "$work/all.after")"
ok "no pod restarted or was replaced while the API server was away"

k delete deployment serials --wait=false >/dev/null
k delete pod dra-reader dra-boot --wait=false >/dev/null
fi
fi
