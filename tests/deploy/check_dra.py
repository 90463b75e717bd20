"""What deploy/dra/ must keep (issue 21): the ServiceAccount may do only
what the daemon does; slice writes are limited to the writer's node; one
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
