# make e2e-cluster's chart scenarios (issue 24), sourced by
# cluster-scenarios.sh last: the kustomize installation removed, both
# kubelets moved to k0s's root directory, then the Helm chart installed with
# the k0s preset (device plugin and DRA), upgraded to a changed config (live
# reload, no pod restarted) and uninstalled (nothing of ours left on the
# nodes or in the API). Uses the DRA and migration scenarios' helpers.
CHART=$repo/deploy/helm/k8s-hostpath-device-plugin
X=hostpath-device.k8s.io/extra
ROOT=/var/lib/k0s/kubelet
hk() { "$helm" --kubeconfig "$pki/admin.kubeconfig" "$@"; }
cap_is() { [ "$(node_res "$1" capacity "${3:-$R}")" = "$2" ]; }

# 20. A clean slate: every workload and claim deleted, deploy/ removed as
#     the README says, the node labels gone.
t0=$(now_ms)
k delete deployments,pods,resourceclaims,resourceclaimtemplates --all --wait=false >/dev/null 2>&1 || true
no_workloads() { no_pods && [ -z "$(k get resourceclaims -o name)" ]; }
wait_for 120 "every test pod and claim to go" no_workloads || fail "left: $(pods)"
k delete -k "$work/deploy/dra" --ignore-not-found >/dev/null
k delete -k "$work/deploy/policy" --ignore-not-found >/dev/null
k delete -k "$work/deploy" --ignore-not-found >/dev/null
k label node node-a node-b "$D/api-" >/dev/null
ns_gone() { ! k get namespace "$NS" >/dev/null 2>&1; }
wait_for 120 "namespace $NS to go" ns_gone || fail "namespace $NS still there"
ok "the kustomize installation removed (kubectl delete -k), workloads gone, $(since "$t0")"

# 21. Both nodes move to k0s's kubelet layout: the kubelet restarted with
#     --root-dir $ROOT (a directory of the node's own bound there).
t0=$(now_ms)
for n in node-a node-b; do
  on "$n" "mkdir -p '$work/$n/k0s-kubelet' && mount --bind '$work/$n/k0s-kubelet' $ROOT"
  sed -i "s#--hostname-override#--root-dir $ROOT --hostname-override#" "$work/$n/start-kubelet"
  restart_kubelet "$n"
done
k0s_ready() { on "$1" "test -S $ROOT/pod-resources/kubelet.sock && test -d $ROOT/plugins_registry"; }
wait_for 60 "node-a's kubelet under $ROOT" k0s_ready node-a
wait_for 60 "node-b's kubelet under $ROOT" k0s_ready node-b
wait_for 120 "both nodes to be Ready" k wait --for=condition=Ready node/node-a node/node-b --timeout=1s
on node-a "test -S /var/lib/kubelet/device-plugins/kubelet.sock && ! test -e $ROOT/device-plugins/kubelet.sock" \
  || fail "kubelet.sock is not where kubernetes#120626 says"
ok "both kubelets on k0s's layout ($ROOT; kubelet.sock still in /var/lib/kubelet/device-plugins): Ready $(since "$t0") after the restart"

# 22. helm install, as the README says, with the k0s preset and DRA on:
#     the device plugin on both nodes, the path on node-a only.
on node-a 'mkdir -p /sample && echo hello > /sample/hello'
on node-b 'rm -rf /sample /extra'
cat >"$work/helm-values.yaml" <<YAML
image: {repository: e2e.local/hostpath, tag: plugin, pullPolicy: Never}
kubelet: {preset: k0s}
dra: {enabled: true}
# No kube-proxy in this cluster: the API server's own address.
extraEnv:
  - {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}
  - {name: KUBERNETES_SERVICE_PORT, value: "26443"}
YAML
t0=$(now_ms)
hk install hp "$CHART" --namespace "$NS" --create-namespace --values "$work/helm-values.yaml" >"$work/helm-install.log" \
  || fail "helm install: $(cat "$work/helm-install.log")"
grep -q 'Check that it works' "$work/helm-install.log" || fail "helm install printed no NOTES"
dp_both() { dp_ready_on node-a && dp_ready_on node-b; }
wait_for 120 "the chart's device-plugin pods Ready on both nodes" dp_both || fail "$(pods -n "$NS")"
wait_for 60 "node-a to advertise 100" alloc_is node-a 100
wait_for 60 "node-b to report the resource" cap_is node-b 100
alloc_is node-b 0 || fail "node-b (no /sample) advertises $(node_res node-b allocatable)"
ok "helm install (k0s preset): the device plugin Ready on both nodes; node-a allocatable 100, node-b 0 ($(since "$t0") after helm install)"
limits_deployment placed 4 "$R" 'cat /sample/hello && exec sleep 3600'
wait_for 120 "4 pods Running" running_on 4 node-a -l app=placed || fail "$(why_not_running -l app=placed)"
p=$(pods -l app=placed | awk 'NR == 1 {print $1}')
[ "$(k logs "$p")" = hello ] || fail "pod $p read '$(k logs "$p")'"
ok "placement: 4 pods asking $R all on node-a (the path's node), reading /sample/hello through the mount"
k delete deployment placed --wait=false >/dev/null
wait_for 120 "the placed pods to go" no_pods -l app=placed

# 23. DRA under k0s's root: node-a labelled, the chart's DRA DaemonSet
#     registers through $ROOT/plugins_registry and publishes node-a's
#     slices; a pod asking limits gets a device through DRA (KEP-5004).
t0=$(now_ms)
k label node node-a "$D/api=dra" >/dev/null
wait_for 120 "the chart's DRA pod Ready on node-a" dra_ready_on node-a || fail "$(pods -n "$NS")"
wait_for 60 "node-a's slices to offer 100 $R devices" offers node-a "$R" 100
on node-a "ls $ROOT/plugins_registry" | grep -q "$D" || fail "no registration socket in $ROOT/plugins_registry"
# The device plugin's devices leave node-a's status (the kubelet's grace
# after its plugin went): only then does the scheduler use DRA there.
wait_for 120 "node-a's allocatable $R to drop to 0 without its device plugin" alloc_is node-a 0
ok "DRA on k0s's layout: the chart's DRA pod registered through $ROOT/plugins_registry, node-a's slices offer 100 $R ($(since "$t0") after kubectl label)"
limits_deployment viadra 1 "$R" 'cat /sample/hello && exec sleep 3600'
wait_for 120 "the DRA pod Running on node-a" running_on 1 node-a -l app=viadra || fail "$(why_not_running -l app=viadra)"
p=$(pods -l app=viadra | awk '{print $1}')
[ -n "$(ext_claims -l app=viadra)" ] || fail "pod $p holds no extended-resource claim"
[ "$(k logs "$p")" = hello ] || fail "pod $p read '$(k logs "$p")'"
ok "a pod asking limits: $R on the DRA node got a device through a claim ($(ext_claims -l app=viadra | awk '{print $3}')) and read /sample/hello"

# 24. helm upgrade to a changed config: a second resource. It reaches both
#     daemons through live reload; no pod of ours restarts or is replaced.
on node-a 'mkdir -p /extra && echo extra > /extra/file'
on node-b 'mkdir -p /extra && echo extra > /extra/file'
before=$(pods -n "$NS" | sort)
cat >"$work/helm-config.yaml" <<YAML
resources:
  - resourceName: $R
    hostPath: {path: /sample, type: Directory}
  - resourceName: $X
    numDevices: 10
    hostPath: {path: /extra, type: Directory}
YAML
t0=$(now_ms)
hk upgrade hp "$CHART" --namespace "$NS" --reuse-values --set-file "config=$work/helm-config.yaml" >/dev/null || fail "helm upgrade"
wait_for 180 "node-b's device plugin to advertise 10 $X" alloc_is node-b 10 "$X"
wait_for 60 "node-a's slices to offer 10 $X devices" offers node-a "$X" 10
after=$(pods -n "$NS" | sort)
[ "$before" = "$after" ] || fail "our pods changed across helm upgrade: before $before, after $after"
ok "helm upgrade (a resource added): node-b advertises 10 $X, node-a's slices offer 10, $(since "$t0") after helm upgrade; the same pods, no restart"
k get deviceclass "extra.$D" >/dev/null || fail "no DeviceClass for $X after the upgrade"
k get validatingadmissionpolicy hostpath-device-plugin-served-paths -o jsonpath='{.spec.variables[0].expression}' | grep -q '"/extra"' \
  || fail "the admission policy does not name /extra after the upgrade"
ok "helm upgrade rendered $X's DeviceClass and admission policy entry"

# 25. helm uninstall: nothing of ours left in the API or on the nodes.
k delete deployment viadra --wait=false >/dev/null
wait_for 120 "the DRA pod to go" no_pods -l app=viadra
t0=$(now_ms)
hk uninstall hp --namespace "$NS" --wait --timeout 120s >/dev/null || fail "helm uninstall"
ours_gone() { no_pods -n "$NS"; }
wait_for 120 "our pods to go" ours_gone
left=""
for kind in daemonsets configmaps serviceaccounts; do
  left="$left$(k get "$kind" -n "$NS" -l app.kubernetes.io/instance=hp -o name)"
done
for kind in clusterroles clusterrolebindings validatingadmissionpolicies validatingadmissionpolicybindings deviceclasses; do
  left="$left$(k get "$kind" -o name | grep -E 'hostpath-device-plugin|hostpath-device\.k8s\.io' || true)"
done
[ -z "$left" ] || fail "left in the API after helm uninstall: $left"
no_slices() { [ -z "$(slices_json | python3 -c 'import json,sys; print(" ".join(s["metadata"]["name"] for s in json.load(sys.stdin)["items"] if s["spec"]["driver"] == sys.argv[1]))' "$D")" ]; }
wait_for 120 "our ResourceSlices to go" no_slices || fail "ResourceSlices of $D left after helm uninstall"
for n in node-a node-b; do
  sockets=$(on "$n" "find /var/lib/kubelet/device-plugins $ROOT/plugins_registry $ROOT/plugins/$D -type s ! -name kubelet.sock 2>/dev/null")
  [ -z "$sockets" ] || fail "sockets of ours left on $n: $sockets"
  [ "$(cdi_specs "$n")" = 0 ] || fail "CDI specs of ours left on $n"
done
ok "helm uninstall: no object of ours in the API (DaemonSets, ConfigMap, RBAC, policies, DeviceClasses), no ResourceSlice, no socket or CDI spec on either node ($(since "$t0"))"
k label node node-a "$D/api-" >/dev/null
k delete namespace "$NS" --wait=false >/dev/null
