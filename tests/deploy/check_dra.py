"""What deploy/dra/ must keep (issue 21): the ServiceAccount may do only
what the daemon does; slice writes are limited to the writer's node; one
DeviceClass per resource of the config; the DaemonSet runs the daemon with
--api=dra on the labelled nodes only, as that ServiceAccount, with what DRA
needs mounted and the same safety settings as deploy/'s."""
import sys

import yaml


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    rules = kinds["ClusterRole"][0]["rules"]
    granted = {(r["resources"][0], v) for r in rules for v in r["verbs"]}
    want = {("resourceclaims", "get"), ("nodes", "get"), ("resourceslices", "list"),
            ("events", "create"), ("events", "update"),
            ("resourceslices", "create"), ("resourceslices", "update"), ("resourceslices", "delete")}
    need(granted == want, f"ClusterRole grants exactly {sorted(want)}, not {sorted(granted)}")
    binding = kinds["ClusterRoleBinding"][0]
    need(binding["subjects"][0]["namespace"] == "hostpath-device-plugin", "binding's namespace")

    vap = kinds["ValidatingAdmissionPolicy"][0]["spec"]
    need(vap["failurePolicy"] == "Fail", "the slice policy fails closed")
    text = yaml.safe_dump(vap)
    need("authentication.kubernetes.io/node-name" in text, "the slice policy compares the token's node")
    need(kinds["ValidatingAdmissionPolicyBinding"][0]["spec"]["validationActions"] == ["Deny"], "Deny")

    config = yaml.safe_load(open("deploy/config.yaml"))
    resources = config.get("resources") or [config]
    need(len(kinds.get("DeviceClass", [])) == len(resources), "one DeviceClass per resource")
    for r in resources:
        need(any(r["resourceName"] in dc["spec"]["selectors"][0]["cel"]["expression"]
                 for dc in kinds.get("DeviceClass", [])), f"a DeviceClass selects {r['resourceName']}")
        named = [dc for dc in kinds.get("DeviceClass", [])
                 if dc["spec"].get("extendedResourceName") == r["resourceName"]]
        need(len(named) == 1, f"one DeviceClass serves limits: {r['resourceName']} (extendedResourceName)")

    # The DaemonSet: the same safety as deploy/'s, plus what DRA needs.
    ds = kinds["DaemonSet"][0]
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c["args"]
    sc = c["securityContext"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}

    def host_path(mount_path):
        m = mounts.get(mount_path)
        return m and vols[m["name"]].get("hostPath", {}).get("path")

    need(pod.get("nodeSelector") == {"hostpath-device.k8s.io/api": "dra"},
         "the DRA DaemonSet runs on the nodes labelled hostpath-device.k8s.io/api=dra only")
    need(args[0] == "deviceplugin" and "--api=dra" in args and "--host-root=/host" in args, f"args {args}")
    for probe in ("livenessProbe", "readinessProbe"):
        cmd = c[probe]["exec"]["command"]
        need(cmd[1] == "probe" and "--api=dra" in cmd, f"{probe} probes the DRA registration socket")
    env = {e["name"]: e for e in c.get("env", [])}
    need(env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName",
         "NODE_NAME from the downward API")
    need(env.get("POD_UID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.uid",
         "POD_UID from the downward API (sockets named per pod)")
    need(ds["spec"].get("updateStrategy") == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
         "rolling updates start the new pod beside the old one (maxSurge 1, maxUnavailable 0)")
    sa = kinds["ServiceAccount"][0]["metadata"]
    need(pod.get("serviceAccountName") == sa["name"] and ds["metadata"]["namespace"] == sa["namespace"],
         "the DaemonSet runs as the ServiceAccount the role is bound to")
    need(pod.get("automountServiceAccountToken", True) is True, "its token is mounted")
    for path in ("/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins/hostpath-device.k8s.io",
                 "/var/run/cdi", "/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources"):
        need(host_path(path) == path and not mounts[path].get("readOnly"), f"{path} mounted read-write")
    need(host_path("/host") == "/" and mounts["/host"].get("readOnly") is True
         and mounts["/host"].get("mountPropagation") == "HostToContainer", "host / read-only at /host")
    need(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
         and sc.get("capabilities") == {"drop": ["ALL"]}, "read-only root, no escalation, no capability")
    need(c["resources"]["requests"] == {"cpu": "10m", "memory": "16Mi"}, "requests 10m CPU, 16Mi memory")
    cm = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
    need(cm == ["hostpath-device-plugin-config"], "the ConfigMap deploy/ makes")
    need(pod.get("priorityClassName") == "system-node-critical", "system-node-critical")

    for p in problems:
        print("FAIL", p)
    sys.exit(1 if problems else 0)


main()
