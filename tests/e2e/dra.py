"""Reads the API server's JSON for make e2e-cluster's DRA scenarios
(cluster-dra.sh): `kubectl get ... -o json | python3 dra.py COMMAND ARGS`.

  offered NODE RESOURCE        "device path kind" per device NODE's slices
                               offer for RESOURCE (nothing when none)
  pool-published NODE RESOURCE exit 0 when NODE has a slice for RESOURCE's pool
  uids NODE RESOURCE           the UIDs of the pool's slices, one line
  ids NODE RESOURCE NAME...    the `id` attribute of each named device of the
                               pool, one per line, sorted
  slices-right NODE RESOURCE N the pool's slices as the README documents them
                               (driver, node, owner, pool name and count, N
                               devices with resource, id, path, kind); prints
                               what is wrong
  allocations                  "claim pool device reserved-for" per device of
                               every allocated claim (input: resourceclaims)
  health POD                   the allocatedResourcesStatus entries of POD's
                               containers, "name resourceID health" (input: pod)
  sample                       one device's attributes, for the log
"""

import json
import sys

DRIVER = "hostpath-device.k8s.io"


def attr(device, name):
    attrs = device.get("attributes", {})
    value = attrs.get(name, attrs.get(f"{DRIVER}/{name}", {}))
    return value.get("string", value.get("int"))


def pool_of(node, resource):
    return f"{node}/{resource}"


def slices(doc, node, resource):
    return [s for s in doc["items"]
            if s["spec"].get("nodeName") == node and s["spec"]["driver"] == DRIVER
            and s["spec"]["pool"]["name"] == pool_of(node, resource)]


def offered(doc, node, resource):
    for s in slices(doc, node, resource):
        for d in s["spec"].get("devices", []):
            print(d["name"], attr(d, "path"), attr(d, "kind"))


def ids(doc, node, resource, *names):
    want = set(names)
    found = [attr(d, "id") for s in slices(doc, node, resource)
             for d in s["spec"].get("devices", []) if d["name"] in want]
    for i in sorted(found):
        print(i)


def slices_right(doc, node, resource, want):
    found = slices(doc, node, resource)
    problems = []
    if not found:
        problems.append(f"no slice for pool {pool_of(node, resource)}")
    generations = {s["spec"]["pool"]["generation"] for s in found}
    if len(generations) > 1:
        problems.append(f"slices of one pool at generations {sorted(generations)}")
    devices = [d for s in found for d in s["spec"].get("devices", [])]
    for s in found:
        owners = s["metadata"].get("ownerReferences", [])
        if not any(o["kind"] == "Node" and o["name"] == node and o.get("controller") for o in owners):
            problems.append(f"slice {s['metadata']['name']} is not owned by Node {node}: {owners}")
        if s["spec"]["pool"]["resourceSliceCount"] != len(found):
            problems.append(f"resourceSliceCount {s['spec']['pool']['resourceSliceCount']}, {len(found)} slices")
        if len(s["spec"].get("devices", [])) > 128:
            problems.append("more than 128 devices in a slice")
    if len(devices) != int(want):
        problems.append(f"{len(devices)} devices offered, not {want}")
    names = [d["name"] for d in devices]
    if len(set(names)) != len(names):
        problems.append("a device name offered twice")
    for d in devices:
        if attr(d, "resource") != resource:
            problems.append(f"device {d['name']}: resource {attr(d, 'resource')}")
        if attr(d, "id") in (None, ""):
            problems.append(f"device {d['name']}: no id")
        if not attr(d, "path") or attr(d, "kind") not in ("mount", "device"):
            problems.append(f"device {d['name']}: path {attr(d, 'path')}, kind {attr(d, 'kind')}")
    for p in problems[:5]:
        print(p)
    return 1 if problems else 0


def allocations(doc):
    for c in doc["items"]:
        alloc = c.get("status", {}).get("allocation")
        if not alloc:
            continue
        users = ",".join(r.get("name", "?") for r in c["status"].get("reservedFor", [])) or "-"
        for r in alloc["devices"]["results"]:
            print(c["metadata"]["name"], r["pool"], r["device"], users)


def health(doc):
    for c in doc.get("status", {}).get("containerStatuses", []):
        for entry in c.get("allocatedResourcesStatus") or []:
            for r in entry.get("resources") or []:
                print(entry["name"], r.get("resourceID"), r.get("health"))


def sample(doc):
    for s in doc["items"]:
        for d in s["spec"].get("devices", []):
            print(s["spec"]["pool"]["name"], d["name"],
                  json.dumps(d.get("attributes", {}), separators=(",", ":")))
            return


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    doc = json.load(sys.stdin)
    if cmd == "offered":
        offered(doc, *args)
    elif cmd == "pool-published":
        sys.exit(0 if slices(doc, *args) else 1)
    elif cmd == "uids":
        print(" ".join(sorted(s["metadata"]["uid"] for s in slices(doc, *args))))
    elif cmd == "ids":
        ids(doc, *args)
    elif cmd == "slices-right":
        sys.exit(slices_right(doc, *args))
    elif cmd == "allocations":
        allocations(doc)
    elif cmd == "health":
        health(doc)
    elif cmd == "sample":
        sample(doc)
    else:
        sys.exit(f"dra.py: unknown command {cmd}")


main()
