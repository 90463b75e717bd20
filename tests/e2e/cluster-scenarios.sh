#!/usr/bin/env bash
# Runs inside cluster.sh's private mount namespace: makes the run's
# certificates, starts the control plane on loopback and the two nodes
# (node.sh), deploys as the README says, and runs the scenarios of
# make e2e-cluster, printing their figures.
set -euo pipefail
work=$1 bin=$2 cbin=$3 gen=$4 py=$5 helm=$6
repo=$(cd "$(dirname "$0")/../.." && pwd)
R=hostpath-device.k8s.io/sample
X=hostpath-device.k8s.io/extra
NS=hostpath-device-plugin
pki=$work/pki
pass=0
readlink /proc/self/ns/mnt >"$work/mntns.run"

. "$repo/tests/e2e/lib.sh"
start() {
  local name=$1; shift
  "$@" >>"$work/$name.log" 2>&1 &
  record_pid "$name" $!
}
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
since() { echo "$(( $(now_ms) - $1 )) ms"; }
# wait_for SECONDS DESC TEST...: retries TEST every 0.1 s for up to SECONDS.
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(now_ms) + secs * 1000 ))
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$end" ] || { echo "e2e-cluster: timed out after ${secs} s waiting for $what" >&2; return 1; }
    sleep 0.1
  done
}
k() { "$cbin/kubectl" --kubeconfig "$pki/admin.kubeconfig" "$@"; }
# on NODE CMD: runs the shell command CMD in NODE's mount namespace (as the
# README's walkthrough runs `docker exec` in a kind node).
on() { nsenter --mount="/proc/$(cat "$work/pids/kubelet-$1")/ns/mnt" sh -c "$2"; }
# node_res NODE allocatable|capacity [RESOURCE]: from the node's status in the API.
node_res() {
  k get node "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"].get(sys.argv[1], {}).get(sys.argv[2], ""))' "$2" "${3:-$R}"
}
alloc_is() { [ "$(node_res "$1" allocatable "${3:-$R}")" = "$2" ]; }
# pods_json SELECTOR...: "name node phase restarts uid" per pod.
pods() {
  k get pods "$@" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    cs = p["status"].get("containerStatuses") or [{}]
    print(p["metadata"]["name"], p["spec"].get("nodeName", "-"), p["status"].get("phase"),
          sum(c.get("restartCount", 0) for c in cs), p["metadata"]["uid"])'
}
running_on() { # running_on N NODE SELECTOR...: exactly N pods, all Running on NODE
  local want=$1 node=$2; shift 2
  local out; out=$(pods "$@")
  [ "$(echo "$out" | grep -c .)" = "$want" ] && ! echo "$out" | awk -v n="$node" '$2 != n || $3 != "Running"' | grep -q .
}

# --- Certificates for the run: a CA, the API server's serving certificate,
# the admin client (system:masters), one client per node, the service
# account signing key.
mkdir -p "$pki"
t0=$(now_ms)
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=e2e-cluster-ca 2>/dev/null
  cert() { # cert NAME SUBJECT [SAN]
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 \
      ${3:+-extfile <(printf 'subjectAltName=%s' "$3")} 2>/dev/null
  }
  cert apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc"
  cert admin "/O=system:masters/CN=admin"
  for n in node-a node-b; do cert "$n" "/O=system:nodes/CN=system:node:$n"; done
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  for u in admin node-a node-b; do
    cat >"$u.kubeconfig" <<T
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:26443", certificate-authority: $pki/ca.crt}}]
users: [{name: $u, user: {client-certificate: $pki/$u.crt, client-key: $pki/$u.key}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $u}}]
current-context: e2e
T
  done
)
ok "certificates made for the run in $(since "$t0")"

# --- The control plane, on loopback, on ports of its own.
t0=$(now_ms)
start etcd "$cbin/etcd" --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23790 \
  --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
  --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster default=http://127.0.0.1:23800 \
  --listen-metrics-urls http://127.0.0.1:23810
start_apiserver() {
  start kube-apiserver "$cbin/kube-apiserver" --etcd-servers http://127.0.0.1:23790 \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port 26443 \
    --endpoint-reconciler-type none --service-cluster-ip-range 10.96.0.0/16 \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
    --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key"
}
start_apiserver
wait_for 120 "the API server to be ready" k get --raw /readyz
ok "etcd and kube-apiserver $("$cbin/kube-apiserver" --version | cut -d' ' -f2): ready in $(since "$t0")"
start kube-controller-manager "$cbin/kube-controller-manager" --kubeconfig "$pki/admin.kubeconfig" \
  --secure-port 0 --leader-elect=false --controllers '*,-serviceaccount-token' --root-ca-file "$pki/ca.crt"
start kube-scheduler "$cbin/kube-scheduler" --kubeconfig "$pki/admin.kubeconfig" --secure-port 0 --leader-elect=false

# --- Two nodes, each in a mount namespace of its own.
nodeip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$nodeip" ] || nodeip=$(hostname -I | cut -d' ' -f1)
t0=$(now_ms)
start kubelet-node-a unshare --mount --propagation private "$repo/tests/e2e/node.sh" "$work" "$bin" "$cbin" node-a 21350 "$nodeip" 10.213.1.0/24
start kubelet-node-b unshare --mount --propagation private "$repo/tests/e2e/node.sh" "$work" "$bin" "$cbin" node-b 21360 "$nodeip" 10.213.2.0/24
wait_for 120 "both nodes to be Ready" k wait --for=condition=Ready node/node-a node/node-b --timeout=1s
ok "two nodes (kubelet $("$bin/kubelet" --version | cut -d' ' -f2), containerd $("$bin/containerd" --version | cut -d' ' -f3)): Ready in $(since "$t0")"
fault_point nodes-ready kubelet-node-a
wait_for 60 "the default service account" k get serviceaccount default

# --- Deploy exactly as the README says (its kind walkthrough, with a node
# of ours for the kind node and `ctr images import` for `kind load`).
on node-a 'mkdir -p /sample && echo hello > /sample/hello'
for n in node-a node-b; do
  on "$n" "'$bin/ctr' -n k8s.io images import --base-name e2e.local/hostpath '$work/images.tar' >/dev/null 2>&1"
  on "$n" "$(import_plugin_cmd "$bin/ctr" e2e.local/hostpath)"
done
ok "the test images and make image's OCI archive imported on both nodes"
cp -r "$repo/deploy" "$work/deploy"
(cd "$work/deploy" && "$cbin/kustomize" edit set image k8s-hostpath-device-plugin=e2e.local/hostpath:plugin)
t0=$(now_ms)
k apply -k "$work/deploy" >/dev/null
k apply -k "$work/deploy/policy" >/dev/null
ok "kubectl apply -k deploy/ (image set by kustomize edit set image) and kubectl apply -k deploy/policy/"

# E2E_ONLY=dra skips to the DRA scenarios, E2E_ONLY=migrate to the
# migration ones, E2E_ONLY=helm to the chart's (for working on them).
if [ -z "${E2E_ONLY:-}" ]; then
# 1. Both nodes: the DaemonSet runs on both; the node with the path
#    advertises 100, the other 0 (its devices Unhealthy: capacity 100).
ds_running() { [ "$(pods -n "$NS" | awk '$3 == "Running"' | wc -l)" = 2 ]; }
wait_for 120 "the DaemonSet's pod Running on both nodes" ds_running
t_run=$(now_ms)
ok "the DaemonSet's pods are Running on both nodes $(since "$t0") after kubectl apply: $(pods -n "$NS" | awk '{printf "%s on %s; ", $1, $2}')"
wait_for 60 "node-a to advertise 100 in its status" alloc_is node-a 100
ok "node-a (has /sample): allocatable $R: 100 in node status, $(since "$t_run") after its pod was seen Running ($(since "$t0") after kubectl apply)"
capacity_is() { [ "$(node_res "$1" capacity)" = "$2" ]; }
wait_for 60 "node-b to report the resource" capacity_is node-b 100
alloc_is node-b 0 || fail "node-b (no /sample) advertises $(node_res node-b allocatable) allocatable"
ok "node-b (no /sample): capacity 100, allocatable 0 ($(since "$t0") after kubectl apply)"

# The README walkthrough's pod.
k get node node-a -o jsonpath='{.status.allocatable}' | grep -q "\"$R\":\"100\"" || fail "node-a's allocatable lacks $R: 100"
t0=$(now_ms)
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  containers:
    - name: main
      image: e2e.local/hostpath:busybox
      command: ["cat", "/sample/hello"]
      resources: {limits: {$R: 1}}
  restartPolicy: Never
YAML
hello_done() { [ "$(k get pod hello -o jsonpath='{.status.phase}')" = Succeeded ]; }
wait_for 120 "pod hello to succeed" hello_done
[ "$(k logs hello)" = hello ] || fail "kubectl logs hello printed '$(k logs hello)'"
ok "the README's pod hello: scheduled to $(k get pod hello -o jsonpath='{.spec.nodeName}'), kubectl logs hello prints hello ($(since "$t0") after kubectl apply)"

# 2. Placement: twenty pods asking for the resource, all on node-a, each
#    reading the file through the mount.
t0=$(now_ms)
k apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: readers}
spec:
  replicas: 20
  selector: {matchLabels: {app: readers}}
  template:
    metadata: {labels: {app: readers}}
    spec:
      containers:
        - name: main
          image: e2e.local/hostpath:busybox
          command: ["/bin/sh", "-c", "cat /sample/hello && exec sleep 3600"]
          resources: {limits: {$R: 1}}
YAML
wait_for 240 "20 readers Running on node-a" running_on 20 node-a -l app=readers
ok "20 pods asking for $R: all 20 Running on node-a, none elsewhere, $(since "$t0") after kubectl apply"
said=$(k logs -l app=readers --max-log-requests 20 --tail 1 | grep -c '^hello$' || true)
[ "$said" = 20 ] || fail "$said of the 20 readers read hello through the mount"
ok "all 20 read /sample/hello through the mount (kubectl logs)"
pods -l app=readers >"$work/readers.before"

# 3. Health: the path removed on node-a → 0 allocatable, a new pod Pending
#    as Insufficient; the path made on node-b → that pod scheduled there.
t0=$(now_ms)
on node-a 'rm -rf /sample'
wait_for 60 "node-a to advertise 0" alloc_is node-a 0
ok "/sample removed on node-a → allocatable 0 in node status: $(since "$t0")"
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: late}
spec:
  containers:
    - name: main
      image: e2e.local/hostpath:busybox
      command: ["/bin/sh", "-c", "cat /sample/hello && exec sleep 3600"]
      resources: {limits: {$R: 1}}
YAML
t1=$(now_ms)
insufficient() { k get pod late -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}' | grep -q "Insufficient $R"; }
wait_for 60 "pod late to be unschedulable as Insufficient $R" insufficient
[ -z "$(k get pod late -o jsonpath='{.spec.nodeName}')" ] || fail "pod late was scheduled"
ok "a new pod stays Pending: \"$(k get pod late -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}')\" ($(since "$t1") after it was created)"
t0=$(now_ms)
on node-b 'mkdir -p /sample && echo hello > /sample/hello'
late_on_b() { [ "$(k get pod late -o jsonpath='{.spec.nodeName}')" = node-b ]; }
wait_for 120 "pod late to be scheduled to node-b" late_on_b
ok "/sample made on node-b → pod late scheduled to node-b: $(since "$t0")"
wait_for 60 "pod late Running on node-b" running_on 1 node-b --field-selector metadata.name=late
[ "$(k logs late)" = hello ] || fail "pod late read '$(k logs late)'"
ok "pod late Running on node-b and read the file: $(since "$t0") after /sample was made there; node-b allocatable $(node_res node-b allocatable)"
pods -l app=readers >"$work/readers.now"
diff "$work/readers.before" "$work/readers.now" >/dev/null || fail "the readers changed while their path was gone: $(diff "$work/readers.before" "$work/readers.now")"
ok "the 20 readers kept running on node-a (same pods, no restart) while its path was gone"
t0=$(now_ms)
on node-a 'mkdir -p /sample && echo hello > /sample/hello'
wait_for 60 "node-a to advertise 100 again" alloc_is node-a 100
ok "/sample back on node-a → allocatable 100: $(since "$t0")"

# 4. The admission policy, evaluated by the real API server: every case of
#    tests/policy/cases.yaml as a server-side dry run, beside cel-python.
# policy_in_force PATH RESOURCE: a pod mounting PATH is denied, naming RESOURCE.
policy_in_force() {
  printf '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"probe"},"spec":{"containers":[{"name":"c","image":"x"}],"volumes":[{"name":"v","hostPath":{"path":"%s"}}]}}' "$1" \
    | k create --dry-run=server -f - >"$work/probe.out" 2>&1
  grep -q "$2" "$work/probe.out"
}
policy_cases() { # policy_cases NAME POLICY_FILE
  "$py" "$repo/tests/policy/test_policy.py" "$2" "$1" --server "$cbin/kubectl" "$pki/admin.kubeconfig" >"$work/policy-$1.out" \
    || { cat "$work/policy-$1.out" >&2; fail "policy cases '$1' differ between the engines or from the expectation"; }
  ok "admission policy, cases '$1': $(tail -n1 "$work/policy-$1.out") (cel-python and the API server, same verdicts); e.g. $(grep -m1 'API server: denied' "$work/policy-$1.out" | cut -c1-200)"
}
t0=$(now_ms)
wait_for 60 "deploy/policy to be in force" policy_in_force /sample "$R" || fail "a pod mounting /sample: $(cat "$work/probe.out")"
ok "deploy/policy in force $(since "$t0") after kubectl apply -k (measured from the sample scenario's end)"
policy_cases sample "$work/deploy/policy/policy.yaml"
"$gen" "$repo/tests/policy/multi-config.yaml" >"$work/multi-policy.yaml"
k apply -f "$work/multi-policy.yaml" >/dev/null
wait_for 60 "the multi policy to be in force" policy_in_force /data/models example.com/models
policy_cases multi "$work/multi-policy.yaml"
"$gen" "$repo/tests/policy/devices-config.yaml" >"$work/devices-policy.yaml"
k apply -f "$work/devices-policy.yaml" >/dev/null
wait_for 60 "the devices policy to be in force" policy_in_force /dev/ttyUSB0 example.com/serial
policy_cases devices "$work/devices-policy.yaml"
k apply -k "$work/deploy/policy" >/dev/null
wait_for 60 "deploy/policy to be in force again" policy_in_force /sample "$R"

# 5. Live reload through kubectl: a resource added to deploy/config.yaml
#    and applied; it appears in node status and no pod restarts.
on node-a 'mkdir -p /extra'
pods -A >"$work/all.before"
python3 - "$work/deploy/config.yaml" "$X" <<'PY'
import sys, yaml
path, name = sys.argv[1], sys.argv[2]
first = yaml.safe_load(open(path))
extra = {"resourceName": name, "numDevices": 1, "hostPath": {"path": "/extra", "type": "Directory"}, "volumeMount": {"mountPath": "/extra"}}
with open(path, "w") as f:
    f.write("# Two resources now (make e2e-cluster's live reload).\n")
    yaml.safe_dump({"resources": [first, extra]}, f, sort_keys=False)
PY
t0=$(now_ms)
k apply -k "$work/deploy" >/dev/null
wait_for 240 "node-a to advertise $X" alloc_is node-a 1 "$X"
ok "live reload: $X added to deploy/config.yaml, kubectl apply -k → allocatable 1 on node-a in $(since "$t0") (the kubelet's ConfigMap sync dominates)"
pods -A >"$work/all.after"
diff <(grep -v ' late ' "$work/all.before") <(grep -v ' late ' "$work/all.after") >/dev/null \
  || fail "pods changed across the live reload: $(diff "$work/all.before" "$work/all.after")"
ok "no pod restarted or was replaced across the live reload"
wait_for 60 "node-b to report $X unhealthy" alloc_is node-b 0 "$X"

# 6. Upgrade: a rolling update of the DaemonSet's image. The readers keep
#    running; allocatable on node-a is sampled from node status meanwhile.
pods -l app=readers >"$work/readers.before"
(cd "$work/deploy" && "$cbin/kustomize" edit set image k8s-hostpath-device-plugin=e2e.local/hostpath:plugin-next)
: >"$work/samples"
( while [ ! -e "$work/samples.stop" ]; do echo "$(now_ms) $(node_res node-a allocatable)"; sleep 0.1; done >>"$work/samples" ) &
sampler=$!
t0=$(now_ms)
k apply -k "$work/deploy" >/dev/null
k rollout status daemonset/hostpath-device-plugin -n "$NS" --timeout=300s >/dev/null
ok "rolling update to e2e.local/hostpath:plugin-next: rollout complete in $(since "$t0")"
wait_for 60 "node-a to advertise 100 after the update" alloc_is node-a 100
t_back=$(now_ms)
touch "$work/samples.stop"; wait "$sampler"
# `rollout status` returns once the new pods are Ready; an old pod may
# still be listed while it terminates (seen once): wait for it to go.
pod_images() { k get pods -n "$NS" -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u; }
only_next() { [ "$(pod_images)" = e2e.local/hostpath:plugin-next ]; }
wait_for 60 "the old pods to be gone" only_next || true
images=$(pod_images)
[ "$images" = e2e.local/hostpath:plugin-next ] || fail "the DaemonSet's pods run $images"
short=$(awk '$2 != 100 { if (!s) s = $1; e = $1; n++; if (min == "" || $2 < min) min = $2 } END { if (n) printf "%d ms (first to last short sample, %d samples, lowest %s)", e - s, n, min; else print "never seen short" }' "$work/samples")
ok "allocatable on node-a in node status during the update: $short; 100 again $(since "$t0") after kubectl apply"
pods -l app=readers >"$work/readers.now"
diff "$work/readers.before" "$work/readers.now" >/dev/null || fail "the readers changed across the upgrade"
ok "the 20 readers holding the resource kept running through the upgrade (same pods, no restart)"
t0=$(now_ms)
k delete deployment readers --wait=false >/dev/null
k delete pod hello late --wait=false >/dev/null
fi

# 7–13. The same config served through DRA (issue 21).
. "$repo/tests/e2e/cluster-dra.sh"
. "$repo/tests/e2e/cluster-migrate.sh"
. "$repo/tests/e2e/cluster-helm.sh"
echo "e2e-cluster: $pass passed"
