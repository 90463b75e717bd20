"""What deploy/dra/ must keep (issue 21): the DaemonSet serves through DRA
with its node's name, mounts the kubelet's plugin directories and the CDI
directory, probes the DRA front; the ServiceAccount may do only what the
daemon does; slice writes are limited to the writer's node; one
DeviceClass per resource of the config."""
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

    ds = kinds["DaemonSet"][0]["spec"]["template"]["spec"]
    c = ds["containers"][0]
    need("--api=dra" in c["args"], "args lack --api=dra")
    need(c["args"][0] == "deviceplugin", "the original's first argument is kept")
    env = {e["name"]: e for e in c.get("env", [])}
    need(env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName",
         "NODE_NAME from the downward API")
    need(ds.get("serviceAccountName") == "hostpath-device-plugin", "serviceAccountName")
    need(ds.get("automountServiceAccountToken") is True, "the token is mounted")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for p in ["/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/var/run/cdi"]:
        need(p in mounts, f"{p} mounted")
    for probe in ["livenessProbe", "readinessProbe"]:
        need("--api=dra" in c[probe]["exec"]["command"], f"{probe} probes the DRA front")

    rules = kinds["ClusterRole"][0]["rules"]
    granted = {(r["resources"][0], v) for r in rules for v in r["verbs"]}
    want = {("resourceclaims", "get"), ("nodes", "get"), ("resourceslices", "list"),
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

    for p in problems:
        print("FAIL", p)
    sys.exit(1 if problems else 0)


main()
