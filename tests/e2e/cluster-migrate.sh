# make e2e-cluster's migration scenarios (issue 22, B19), sourced by
# cluster-scenarios.sh after the DRA ones: pods that ask `limits:` only,
# served by the device plugin on one node and by DRA on the other (the
# DeviceClasses' extendedResourceName, KEP-5004), a node moved to DRA while
# pods hold devices through the device plugin, a rolling update of the DRA
# DaemonSet, the node moved back while pods hold DRA claims, and health
# under DRA. The node label
# hostpath-device.k8s.io/api picks the DaemonSet, as the README says.

# limits_deployment NAME REPLICAS RESOURCE COMMAND [NODE]: pods asking
# `limits:` only, spread over the nodes, or all on NODE.
limits_deployment() {
  local pin=""
  [ -z "${5:-}" ] || pin="nodeSelector: {kubernetes.io/hostname: $5}"
  k apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: $2
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      terminationGracePeriodSeconds: 1
      $pin
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: $1}}}
      containers:
        - name: main
          image: e2e.local/hostpath:busybox
          command: ["/bin/sh", "-c", "$4"]
          resources: {limits: {$3: 1}}
YAML
}
# ext_claims SELECTOR: "pod node claim" for each pod with an
# extendedResourceClaimStatus.
ext_claims() {
  k get pods "$@" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    s = p["status"].get("extendedResourceClaimStatus")
    if s:
        print(p["metadata"]["name"], p["spec"].get("nodeName", "-"), s.get("resourceClaimName", "-"))'
}
# why_not_running SELECTOR...: each pod not Running, with its conditions'
# messages and its latest events (for a failure's message).
why_not_running() {
  local p
  for p in $(pods "$@" | awk '$3 != "Running" {print $1}' | head -n3); do
    echo "$p on $(node_of "$p"): $(k get pod "$p" -o jsonpath='{.status.phase} {range .status.conditions[*]}{.type}={.status} {.reason} {.message}; {end}')"
    echo "  events: $(k get events --field-selector involvedObject.name="$p" -o jsonpath='{range .items[*]}{.reason}: {.message}; {end}' | tail -c 600)"
  done
}
# no_pods SELECTOR...: no pod matches (those ending are still listed).
no_pods() { local out; out=$(k get pods "$@" -o name) && [ -z "$out" ]; }
running_count() { pods "$@" | awk '$3 == "Running"' | grep -c . || true; }
on_node_count() { pods "${@:2}" | awk -v n="$1" '$2 == n && $3 == "Running"' | grep -c . || true; }
dp_ready_on() {
  local p; p=$(pods -n "$NS" -l app.kubernetes.io/component=device-plugin | awk -v n="$1" '$2 == n && $3 == "Running" {print $1}')
  [ -n "$p" ] && [ "$(k get pod -n "$NS" "$p" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
no_dra_pod_on() { [ -z "$(pods -n "$NS" -l app.kubernetes.io/component=dra-driver | awk -v n="$1" '$2 == n')" ]; }
# podres_held NODE RESOURCE: the device IDs the kubelet's pod-resources API
# says pods hold through the device plugin.
podres_held() { on "$1" "'$bin/podres' -list" | awk -v r="$2" '$3 == r {print $4}' | tr ',' '\n' | sort; }

# E2E_ONLY=helm: straight to the chart scenarios (cluster-helm.sh).
if [ "${E2E_ONLY:-}" != helm ]; then
# 15. The starting point: node-a back on the device plugin (no claim of
#     the DRA scenarios left on it), node-b on DRA, /sample on both.
no_claims_left() { cdi_specs_are node-a 0 && [ -z "$(allocations)" ]; }
wait_for 120 "the DRA scenarios' claims to be released" no_claims_left
on node-b 'mkdir -p /sample && echo hello > /sample/hello'
# The serial device nodes the DRA scenarios left (made here when they were
# skipped: E2E_ONLY=migrate).
on node-a 'mkdir -p /e2e-dev; for i in 0 1 2 3 4 5; do [ -e /e2e-dev/tty$i ] || mknod /e2e-dev/tty$i c 1 3; done'
t0=$(now_ms)
k label node node-a "$D/api=device-plugin" --overwrite >/dev/null
wait_for 120 "deploy/'s pod Ready on node-a" dp_ready_on node-a
wait_for 120 "deploy/dra/'s pod gone from node-a" no_dra_pod_on node-a
wait_for 120 "node-a's allocatable $R to be 100" alloc_is node-a 100
wait_for 120 "node-b's pool of $R to offer 100" offers node-b "$R" 100
ok "mixed cluster: node-a on the device plugin again (allocatable $R 100, $(since "$t0") after kubectl label), node-b on DRA (100 devices published)"

# 16 (a). Twenty pods that ask `limits:` only land on both nodes and read
#     the host file; on node-b each has its extendedResourceClaimStatus and
#     a claim prepared by the daemon; on node-a none has.
# The API server's outage in the DRA scenarios can leave a node NotReady
# and tainted unreachable for a while (a clean-clone CI run placed all 20
# on node-a that way): both must be schedulable first.
schedulable() {
  [ "$(k get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ -z "$(k get node "$1" -o jsonpath='{.spec.taints}')" ]
}
both_schedulable() { schedulable node-a && schedulable node-b; }
wait_for 180 "node-a and node-b Ready and untainted" both_schedulable
# The same after the outage, for the scheduler: one pod pinned to node-b
# asking `limits:` must be placed through DRA first (the scheduler retries
# it while its view catches up; if it never does, its events say why).
limits_deployment probe-b 1 "$R" 'exec sleep 3600' node-b
probe_running() { [ "$(on_node_count node-b -l app=probe-b)" = 1 ]; }
wait_for 180 "a pod pinned to node-b asking $R Running" probe_running \
  || fail "node-b takes no pod asking $R through DRA: $(why_not_running -l app=probe-b)"
ok "node-b takes a pod asking limits: $R through DRA (a pinned probe, Running $(since "$t0") after the label)"
k delete deployment probe-b --wait=false >/dev/null
wait_for 120 "the probe pod gone" no_pods -l app=probe-b
no_alloc_b() { [ -z "$(allocations | awk '$2 ~ /^node-b\//')" ]; }
wait_for 120 "the probe's claim released" no_alloc_b
wait_for 120 "the probe's claim unprepared on node-b" cdi_specs_are node-b 0
t0=$(now_ms)
limits_deployment mixed 20 "$R" 'cat /sample/hello && exec sleep 3600'
mixed_running() { [ "$(running_count -l app=mixed)" = 20 ]; }
wait_for 180 "20 mixed pods Running" mixed_running || fail "$(running_count -l app=mixed) of 20 Running: $(why_not_running -l app=mixed)"
on_a=$(on_node_count node-a -l app=mixed) on_b=$(on_node_count node-b -l app=mixed)
[ "$on_a" -gt 0 ] && [ "$on_b" -gt 0 ] || fail "the 20 pods are not on both nodes: node-a $on_a, node-b $on_b"
ok "20 pods asking limits: $R: Running, $on_a on node-a (device plugin) and $on_b on node-b (DRA), $(since "$t0") after kubectl apply"
said=0
for p in $(pods -l app=mixed | awk '{print $1}'); do
  [ "$(k logs "$p" 2>/dev/null | head -n1)" = hello ] && said=$((said + 1))
done
[ "$said" = 20 ] || fail "$said of the 20 pods read hello"
ext_claims -l app=mixed >"$work/ext.mixed"
ext_b=$(awk '$2 == "node-b"' "$work/ext.mixed" | grep -c . || true)
ext_a=$(awk '$2 == "node-a"' "$work/ext.mixed" | grep -c . || true)
[ "$ext_b" = "$on_b" ] && [ "$ext_a" = 0 ] || fail "extendedResourceClaimStatus on node-b $ext_b of $on_b, on node-a $ext_a: $(cat "$work/ext.mixed")"
claims_b=$(allocations | awk '$2 ~ /^node-b\// {print $4}' | sort -u | grep -c . || true)
[ "$claims_b" = "$on_b" ] || fail "$claims_b claims allocated on node-b for $on_b pods: $(allocations)"
cdi_specs_are node-b "$on_b" || fail "node-b has $(cdi_specs node-b) CDI specs, not $on_b"
one_b=$(awk '$2 == "node-b" {print $1; exit}' "$work/ext.mixed")
ok "all 20 read /sample/hello; node-b's $on_b each have extendedResourceClaimStatus (e.g. $(k get pod "$one_b" -o jsonpath='{.status.extendedResourceClaimStatus}')) and a prepared claim ($on_b CDI specs), node-a's $on_a none"
k delete deployment mixed --wait=false >/dev/null
wait_for 120 "the mixed pods gone" no_pods -l app=mixed
wait_for 120 "node-b's claims unprepared" cdi_specs_are node-b 0

# 17 (b). node-a moves to DRA while pods hold devices there through the
#     device plugin: five on /sample, three on serial device nodes (an
#     exclusive resource). They keep running (same pods, no restart); new
#     pods on node-a get DRA claims, never a device the device plugin
#     gave (pod-resources against the claims' allocations).
limits_deployment held 5 "$R" 'cat /sample/hello && exec sleep 3600' node-a
limits_deployment held-serial 3 "$S" 'exec sleep 3600' node-a
wait_for 120 "5 held pods Running on node-a" running_on 5 node-a -l app=held || fail "$(why_not_running -l app=held)"
wait_for 120 "3 held-serial pods Running on node-a" running_on 3 node-a -l app=held-serial || fail "$(why_not_running -l app=held-serial)"
pods -l 'app in (held, held-serial)' | sort >"$work/held.before"
podres_held node-a "$S" >"$work/serial.dp"
[ "$(grep -c . "$work/serial.dp")" = 3 ] || fail "pod-resources shows $(cat "$work/serial.dp") held through the device plugin, not 3 serials"
total_serials=$(on node-a 'ls /e2e-dev' | grep -c '^tty')
t0=$(now_ms)
k label node node-a "$D/api=dra" --overwrite >/dev/null
wait_for 120 "deploy/dra/'s pod Ready on node-a" dra_ready_on node-a
wait_for 120 "node-a's allocatable $R to drop to 0" alloc_is node-a 0
want=$((total_serials - 3))
wait_for 60 "node-a's serial pool to offer all but the 3 held" offers node-a "$S" "$want"
wait_for 60 "node-a's sample pool to offer all but the 5 held" offers node-a "$R" 95
ok "node-a switched to DRA with 8 pods holding devices through the device plugin: its pools offer $want of $total_serials serials and 95 of 100 sample devices ($(since "$t0") after kubectl label)"
offered node-a "$S" | awk '{print $2}' >"$work/serial.offered"
t1=$(now_ms)
limits_deployment new-serial "$want" "$S" 'exec sleep 3600' node-a
wait_for 180 "$want new serial pods Running on node-a" running_on "$want" node-a -l app=new-serial || fail "$(why_not_running -l app=new-serial)"
first_dra=$(since "$t1")
ext_claims -l app=new-serial >"$work/ext.serial"
[ "$(grep -c . "$work/ext.serial")" = "$want" ] || fail "new serial pods with extendedResourceClaimStatus: $(cat "$work/ext.serial")"
allocations | awk -v p="node-a/$S" '$2 == p {print $3}' | sort >"$work/serial.dra"
[ "$(sort -u "$work/serial.dra" | grep -c .)" = "$want" ] || fail "the $want DRA claims hold $(sort -u "$work/serial.dra" | tr '\n' ' ')"
slices_json | dra ids node-a "$S" $(cat "$work/serial.dra") >"$work/serial.dra.ids"
overlap=$(comm -12 "$work/serial.dp" "$work/serial.dra.ids")
[ -z "$overlap" ] || fail "devices held through both APIs: $overlap"
pods -l 'app in (held, held-serial)' | sort >"$work/held.after"
diff "$work/held.before" "$work/held.after" >/dev/null || fail "the held pods changed: $(diff "$work/held.before" "$work/held.after")"
ok "the 8 pods holding devices through the device plugin kept running (same pods, no restart); $want new serial pods Running on node-a with DRA claims ($first_dra after kubectl apply), none on a device pod-resources shows held ($(tr '\n' ' ' <"$work/serial.dp"))"
t2=$(now_ms)
k delete deployment held-serial --wait=false >/dev/null
wait_for 120 "the released serials offered again" offers node-a "$S" "$total_serials"
ok "the device-plugin pods ended: their 3 serials offered through DRA again $(since "$t2") after kubectl delete"
k delete deployment new-serial held --wait=false >/dev/null
wait_for 120 "the held and new pods gone" no_pods -l 'app in (held, new-serial, held-serial)'

# 18 (d). A rolling update of the DRA DaemonSet while pods start and stop:
#     the new pod registers beside the old one; no preparation fails and
#     node-a's slices are there throughout.
limits_deployment churn 4 "$R" 'exec sleep 3600' node-a
wait_for 120 "4 churn pods Running" running_on 4 node-a -l app=churn || fail "$(why_not_running -l app=churn)"
old_dra=$(dra_pod_on node-a)
t0=$(now_ms)
k -n "$NS" rollout restart daemonset/hostpath-device-plugin-dra >/dev/null
absent=0 polls=0 scale=4
rolled() { [ "$(dra_pod_on node-a)" != "$old_dra" ] && dra_ready_on node-a && ! k get pod -n "$NS" "$old_dra" >/dev/null 2>&1; }
until rolled; do
  [ "$(( $(now_ms) - t0 ))" -lt 180000 ] || fail "the rolling update did not finish in 180 s"
  polls=$((polls + 1))
  offers node-a "$R" 100 >/dev/null 2>&1 || { pool_published node-a "$R" || absent=$((absent + 1)); }
  scale=$(( scale == 4 ? 6 : 4 ))
  k scale deployment churn --replicas "$scale" >/dev/null
  sleep 0.5
done
window=$(since "$t0")
k scale deployment churn --replicas 4 >/dev/null
wait_for 120 "4 churn pods Running after the update" running_on 4 node-a -l app=churn || fail "$(why_not_running -l app=churn)"
[ "$absent" = 0 ] || fail "node-a's $R slices were absent $absent times of $polls during the update"
failed_prep=$(k get events --field-selector reason=FailedPrepareDynamicResources -o json | python3 -c '
import json, sys
for e in json.load(sys.stdin)["items"]:
    if e["involvedObject"]["name"].startswith("churn-"):
        print(e["involvedObject"]["name"], e.get("message", ""))')
[ -z "$failed_prep" ] || fail "preparations failed during the update: $failed_prep"
ok "rolling update of deploy/dra/ (maxSurge 1) while pods came and went: done in $window, node-a's slices present at each of $polls looks, no preparation failed"
k delete deployment churn --wait=false >/dev/null

# 18b (c). node-a moves back to the device plugin while pods hold DRA
#     claims there: three on /sample, two on serial nodes. They keep
#     running (same pods, no restart). node-a's slices are withdrawn at
#     once (the DRA daemon leaves with no successor). The device plugin
#     offers all but the claims' devices: their CDI specs say which, as
#     pod-resources does not list a claim made for `limits:`. The kubelet
#     lets those pods end only once their claims are unprepared: deploy/'s
#     daemon serves the driver for that, then lets it go.
wait_for 120 "the churn pods gone" no_pods -l app=churn
wait_for 120 "node-a's churn claims unprepared" cdi_specs_are node-a 0
limits_deployment back 3 "$R" 'cat /sample/hello && exec sleep 3600' node-a
limits_deployment back-serial 2 "$S" 'exec sleep 3600' node-a
wait_for 120 "3 back pods Running on node-a" running_on 3 node-a -l app=back || fail "$(why_not_running -l app=back)"
wait_for 120 "2 back-serial pods Running on node-a" running_on 2 node-a -l app=back-serial || fail "$(why_not_running -l app=back-serial)"
pods -l 'app in (back, back-serial)' | sort >"$work/back.before"
allocations | awk -v p="node-a/$S" '$2 == p {print $3}' | sort -u >"$work/back.dra"
slices_json | dra ids node-a "$S" $(cat "$work/back.dra") >"$work/back.dra.ids"
[ "$(grep -c . "$work/back.dra.ids")" = 2 ] || fail "the 2 serial claims hold $(tr '\n' ' ' <"$work/back.dra.ids")"
t0=$(now_ms)
k label node node-a "$D/api=device-plugin" --overwrite >/dev/null
wait_for 120 "deploy/'s pod Ready on node-a" dp_ready_on node-a
wait_for 120 "deploy/dra/'s pod gone from node-a" no_dra_pod_on node-a
slices_gone() { ! pool_published node-a "$R" && ! pool_published node-a "$S"; }
wait_for 60 "node-a's slices withdrawn" slices_gone
t_slices=$(since "$t0")
# Allocatable counts every device: the scheduler counts the DRA pods'
# requests against it, and the daemon never gives what their claims hold.
wait_for 120 "node-a's allocatable $R to be 100" alloc_is node-a 100
wait_for 60 "node-a's allocatable $S to be $total_serials" alloc_is node-a "$total_serials" "$S"
t_alloc=$(since "$t0")
pods -l 'app in (back, back-serial)' | sort >"$work/back.after"
diff "$work/back.before" "$work/back.after" >/dev/null || fail "the DRA pods changed: $(diff "$work/back.before" "$work/back.after")"
ok "node-a moved back to the device plugin while 5 pods hold DRA claims: they keep running (same pods, no restart); its slices withdrawn $t_slices after kubectl label; allocatable $R 100 and $S $total_serials $t_alloc after"
limits_deployment back-dp "$((total_serials - 2))" "$S" 'exec sleep 3600' node-a
wait_for 120 "$((total_serials - 2)) device-plugin serial pods Running on node-a" running_on "$((total_serials - 2))" node-a -l app=back-dp || fail "$(why_not_running -l app=back-dp)"
podres_held node-a "$S" >"$work/back.dp"
[ "$(grep -c . "$work/back.dp")" = "$((total_serials - 2))" ] || fail "pod-resources shows $(tr '\n' ' ' <"$work/back.dp") held through the device plugin"
overlap=$(comm -12 "$work/back.dp" "$work/back.dra.ids")
[ -z "$overlap" ] || fail "devices held through both APIs: $overlap"
ok "$((total_serials - 2)) new serial pods got device-plugin devices on node-a, none of the 2 the DRA claims hold ($(tr '\n' ' ' <"$work/back.dra.ids"))"
reg_on_a() { on node-a "ls /var/lib/kubelet/plugins_registry 2>/dev/null" | grep -c "^$D-.*reg\.sock\$" || true; }
reg_gone() { [ "$(reg_on_a)" = 0 ]; }
[ "$(reg_on_a)" = 1 ] || fail "the driver is not served on node-a for the 5 claims: $(on node-a 'ls /var/lib/kubelet/plugins_registry')"
t1=$(now_ms)
k delete deployment back back-serial --wait=false >/dev/null
wait_for 120 "the 5 DRA pods gone" no_pods -l 'app in (back, back-serial)'
t_gone=$(since "$t1")
wait_for 60 "node-a's CDI specs gone" cdi_specs_are node-a 0
wait_for 60 "the driver's registration gone from node-a" reg_gone
ok "the 5 DRA pods ended $t_gone after kubectl delete (deploy/'s daemon unprepared their claims), then it let go of the driver ($(since "$t1") after)"
t2=$(now_ms)
k scale deployment back-dp --replicas "$total_serials" >/dev/null
wait_for 120 "all $total_serials device-plugin serial pods Running on node-a" running_on "$total_serials" node-a -l app=back-dp || fail "$(why_not_running -l app=back-dp)"
ok "the 2 serials the claims held are given through the device plugin again: $total_serials pods Running $(since "$t2") after kubectl scale"
k delete deployment back-dp --wait=false >/dev/null

# 19 (e). Health under DRA: /sample removed on node-b; node-b's pool
#     withdraws its devices (the daemon's health stream says Unhealthy to
#     the kubelet), its pods keep running, and new pods go to node-a.
#     Recorded, not asserted: whether the pods' allocatedResourcesStatus
#     shows it (kubelet 1.37.2 reports it only for containers that name a
#     claim in resources.claims, which pods asking `limits:` do not).
limits_deployment sick 2 "$R" 'exec sleep 3600' node-b
wait_for 120 "2 pods Running on node-b" running_on 2 node-b -l app=sick || fail "$(why_not_running -l app=sick)"
t0=$(now_ms)
on node-b 'rm -rf /sample'
wait_for 60 "node-b's pool of $R to offer nothing" offers node-b "$R" 0
withdrawn=$(since "$t0")
running_on 2 node-b -l app=sick || fail "the sick pods stopped: $(pods -l app=sick)"
shown=$(for p in $(pods -l app=sick | awk '{print $1}'); do k get pod "$p" -o json | dra health; done | head -n1)
ok "/sample removed on node-b (DRA): its $R devices withdrawn from the slice in $withdrawn, both pods keep running; their allocatedResourcesStatus: ${shown:-none (the kubelet reports it only for resources.claims)}"
limits_deployment after 2 "$R" 'exec sleep 3600'
after_running() { [ "$(running_count -l app=after)" = 2 ]; }
wait_for 120 "2 new pods Running" after_running || fail "$(why_not_running -l app=after)"
[ "$(on_node_count node-b -l app=after)" = 0 ] || fail "a new pod went to node-b without /sample"
ok "new pods asking limits: $R went to node-a, none to node-b"
k delete deployment sick after --wait=false >/dev/null
fi
