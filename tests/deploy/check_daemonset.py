"""Asserts the rendered DaemonSet keeps DESIGN.md §6's promises.

Usage: check_daemonset.py RENDERED_YAML — prints one line per promise and
a closing "N passed, M failed" line.
"""

import sys

import yaml


def quantity_milli_cpu(q):
    return float(q[:-1]) if q.endswith("m") else float(q) * 1000


def quantity_mib(q):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q) / (1024 * 1024)


def avoids_dra_nodes(pod):
    terms = (pod.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    want = {"key": "hostpath-device.k8s.io/api", "operator": "NotIn", "values": ["dra"]}
    return bool(terms) and all(want in t.get("matchExpressions", []) for t in terms)


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    kinds = {d["kind"] for d in docs}
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    sc = c["securityContext"]
    labels = ds["metadata"]["labels"]

    def host_vol(path):
        return next((n for n, v in vols.items() if v.get("hostPath", {}).get("path") == path), None)

    root, dp = host_vol("/"), host_vol("/var/lib/kubelet/device-plugins")
    podres = host_vol("/var/lib/kubelet/pod-resources")
    leftover = [host_vol(p) for p in ("/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins/hostpath-device.k8s.io", "/var/run/cdi")]
    env = {e["name"]: e for e in c.get("env", [])}
    cm = next((n for n, v in vols.items() if "configMap" in v), None)
    checks = [
        ("Namespace, ConfigMap and DaemonSet rendered", {"Namespace", "ConfigMap", "DaemonSet"} <= kinds),
        ("host / mounted read-only at /host", root is not None and mounts[root]["mountPath"] == "/host" and mounts[root].get("readOnly") is True),
        ("host / uses HostToContainer propagation", root is not None and mounts[root].get("mountPropagation") == "HostToContainer"),
        ("--host-root /host passed", any(a in ("--host-root=/host",) for a in c["args"]) or "/host" in c["args"]),
        ("original args kept (deviceplugin)", c["args"][0] == "deviceplugin"),
        ("device-plugin directory (not the socket) mounted read-write", dp is not None and mounts[dp]["mountPath"] == "/var/lib/kubelet/device-plugins" and not mounts[dp].get("readOnly")),
        ("pod-resources directory mounted (devices still held through DRA after a move back)", podres is not None and mounts[podres]["mountPath"] == "/var/lib/kubelet/pod-resources"),
        ("NODE_NAME from the downward API (names this node's DRA pools)", env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName"),
        ("plugins registry, the driver's plugin directory and /var/run/cdi mounted at their host paths (DRA claims left by a move back are unprepared)",
         all(v is not None and mounts[v]["mountPath"] == vols[v]["hostPath"]["path"] and not mounts[v].get("readOnly") for v in leftover)),
        ("POD_UID from the downward API (names the DRA sockets of a move back)", env.get("POD_UID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.uid"),
        ("priorityClassName system-node-critical", pod.get("priorityClassName") == "system-node-critical"),
        ("tolerates everything", {"operator": "Exists"} in pod.get("tolerations", [])),
        ("readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True),
        ("no privilege escalation", sc.get("allowPrivilegeEscalation") is False),
        ("all capabilities dropped", sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add")),
        ("requests <= 10m CPU", quantity_milli_cpu(c["resources"]["requests"]["cpu"]) <= 10),
        ("requests <= 16Mi memory", quantity_mib(c["resources"]["requests"]["memory"]) <= 16),
        ("exec probe as liveness", c["livenessProbe"]["exec"]["command"][1] == "probe"),
        ("exec probe as readiness", c["readinessProbe"]["exec"]["command"][1] == "probe"),
        ("RollingUpdate with maxUnavailable 1", ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
        ("config mounted as a directory (no subPath), for live reload", cm is not None and "subPath" not in mounts[cm] and c["args"][1].startswith("--config=" + mounts[cm]["mountPath"] + "/")),
        ("app.kubernetes.io labels", all(k in labels for k in ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/version"))),
        ("selector uses app.kubernetes.io/name", "app.kubernetes.io/name" in ds["spec"]["selector"]["matchLabels"]),
        ("keeps off the nodes labelled for DRA (deploy/dra/'s DaemonSet serves them)", avoids_dra_nodes(pod)),
    ]
    failed = 0
    for name, ok in checks:
        print(("ok   " if ok else "FAIL ") + name)
        failed += 0 if ok else 1
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
