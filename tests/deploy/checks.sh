#!/usr/bin/env bash
# The deployment checks of `make test` (issues 5, 24): admission policy in
# sync and its CEL right (cel-python), manifests rendered by kustomize and
# by the Helm chart and valid against the Kubernetes schema (the newest
# kubernetes-validate offers: 1.37, what the e2e runs), the DaemonSet's
# promises, the chart and deploy/ in agreement, the systemd unit.
# Usage: checks.sh DAEMON_BINARY POLICY_GENERATOR
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=$1
GEN=$2
PYENV=target/pyenv
passed=0
failed=0
check() {
    local name=$1
    shift
    if "$@" > target/check.log 2>&1; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/     /' target/check.log
        failed=$((failed + 1))
    fi
}

# Python tools, installed into target/ on first use.
if ! "$PYENV/bin/python" -c 'import celpy, yaml, kubernetes_validate' 2>/dev/null; then
    echo "installing cel-python and kubernetes-validate into $PYENV"
    python3 -m venv "$PYENV" && "$PYENV/bin/pip" install -q 'cel-python==0.5.0' 'kubernetes-validate==1.37.0' || {
        echo "FAIL cannot install the Python test tools"
        exit 1
    }
fi
PY=$PYENV/bin/python
# The newest schema kubernetes-validate offers.
K8S=1.37.0

check "admission policy in sync with deploy/config.yaml (make policy)" \
    bash -c "diff -u deploy/policy/policy.yaml <('$GEN' deploy/config.yaml)"
check "DRA DeviceClasses in sync with deploy/config.yaml (make dra-classes)" \
    bash -c "diff -u deploy/dra/deviceclasses.yaml <('$GEN' --device-classes deploy/config.yaml)"
check "policy CEL, sample config (cel-python)" "$PY" tests/policy/test_policy.py deploy/policy/policy.yaml sample
"$GEN" tests/policy/multi-config.yaml > target/multi-policy.yaml
check "policy CEL, three served paths (cel-python)" "$PY" tests/policy/test_policy.py target/multi-policy.yaml multi
"$GEN" tests/policy/devices-config.yaml > target/devices-policy.yaml
check "policy CEL, patterns, a group and USB ids (cel-python)" "$PY" tests/policy/test_policy.py target/devices-policy.yaml devices
check "deploy/config.yaml is a valid config" "$BIN" check --config deploy/config.yaml

if ! command -v kubectl > /dev/null 2>&1; then
    apt-get install -y -qq kubectl > /dev/null 2>&1 || true
fi
if command -v kubectl > /dev/null 2>&1; then
    check "kubectl kustomize deploy/" bash -c "kubectl kustomize deploy/ > target/deploy.yaml"
    check "kubectl kustomize deploy/policy/" bash -c "kubectl kustomize deploy/policy/ > target/policy-rendered.yaml"
    check "rendered objects valid against the Kubernetes $K8S schema (strict)" \
        "$PYENV/bin/kubernetes-validate" --strict --quiet -k $K8S target/deploy.yaml target/policy-rendered.yaml
    check "DaemonSet keeps DESIGN.md §6's promises" "$PY" tests/deploy/check_daemonset.py target/deploy.yaml
    # The metrics component (off by default), as a user's kustomization adds it.
    mkdir -p target/monitoring-kustomization
    printf 'resources: [../../deploy]\ncomponents: [../../deploy/monitoring]\n' > target/monitoring-kustomization/kustomization.yaml
    check "kubectl kustomize deploy/ with the deploy/monitoring component" \
        bash -c "kubectl kustomize target/monitoring-kustomization > target/deploy-monitoring.yaml"
    check "metrics component: --listen on the PodMonitor's port, its selector, the dashboard" \
        "$PY" tests/deploy/check_monitoring.py target/deploy-monitoring.yaml target/deploy-monitoring-core.yaml
    check "metrics component's objects valid against the Kubernetes $K8S schema (strict)" \
        "$PYENV/bin/kubernetes-validate" --strict --quiet -k $K8S target/deploy-monitoring-core.yaml
    check "kubectl kustomize deploy/dra/" bash -c "kubectl kustomize deploy/dra/ > target/deploy-dra.yaml"
    check "DRA objects valid against the Kubernetes $K8S schema (strict)" \
        "$PYENV/bin/kubernetes-validate" --strict --quiet -k $K8S target/deploy-dra.yaml
    check "DRA objects: least privilege, own-node slice policy, a DeviceClass per resource, the DRA DaemonSet" "$PY" tests/deploy/check_dra.py target/deploy-dra.yaml
    for k in k0s microk8s; do
        mkdir -p target/$k-kustomization
        printf 'resources: [../../deploy, ../../deploy/dra]\ncomponents: [../../deploy/%s]\n' $k > target/$k-kustomization/kustomization.yaml
        check "kubectl kustomize deploy/ and deploy/dra/ with the deploy/$k component" \
            bash -c "kubectl kustomize target/$k-kustomization > target/deploy-$k.yaml"
        check "deploy/$k objects valid against the Kubernetes $K8S schema (strict)" \
            "$PYENV/bin/kubernetes-validate" --strict --quiet -k $K8S target/deploy-$k.yaml
    done
    # The Helm chart: helm from the Go module proxy (tests/helm's pin).
    if HELM=$(tests/gotool.sh helm); then
        rm -rf target/chart
        for c in render agree configs schema; do
            "$PY" tests/deploy/check_chart.py "$HELM" kubectl "$GEN" "$BIN" $c > target/chart-$c.log 2>&1
            cat target/chart-$c.log
            passed=$((passed + $(grep -c '^ok ' target/chart-$c.log)))
            failed=$((failed + $(grep -c '^FAIL ' target/chart-$c.log)))
            grep -q '^Traceback' target/chart-$c.log && failed=$((failed + 1))
        done
        check "chart renderings valid against the Kubernetes $K8S schema (strict)" \
            "$PYENV/bin/kubernetes-validate" --strict --quiet -k $K8S target/chart/*.yaml
    else
        echo "FAIL helm could not be built (tests/gotool.sh helm)"
        failed=$((failed + 1))
    fi
else
    echo "SKIP manifests: kubectl (with kustomize) is not installed and could not be"
fi

if command -v systemd-analyze > /dev/null 2>&1; then
    # verify insists the executable exists: point a copy at the built binary.
    sed "s#/usr/local/bin/k8s-hostpath-device-plugin#$PWD/$BIN#" \
        deploy/systemd/k8s-hostpath-device-plugin.service > target/k8s-hostpath-device-plugin.service
    check "systemd-analyze verify of the unit" systemd-analyze verify --man=no target/k8s-hostpath-device-plugin.service
else
    echo "SKIP unit: systemd-analyze is not installed"
fi

check "Dockerfile's build stage runs the tested make static" grep -q '^RUN make static' Dockerfile.distroless

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
