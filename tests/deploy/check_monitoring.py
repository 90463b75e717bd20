"""What deploy/monitoring/ must keep (issue 23): deploy/ with the component
starts the endpoint on the port the PodMonitor scrapes, the PodMonitor
selects the daemon's pods, and the dashboard is valid JSON. Writes the
objects other than the PodMonitor (a CRD the schema check does not know)
to argv[2] for the Kubernetes schema check."""
import json
import sys

import yaml


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    mons = [d for d in docs if d["kind"] == "PodMonitor"]
    ds = [d for d in docs if d["kind"] == "DaemonSet"]
    need(len(mons) == 1, f"one PodMonitor, not {len(mons)}")
    need(len(ds) == 1, f"one DaemonSet, not {len(ds)}")
    if problems:
        print("\n".join(problems))
        return 1
    mon, ds = mons[0], ds[0]
    c = ds["spec"]["template"]["spec"]["containers"][0]
    listen = [a for a in c["args"] if a.startswith("--listen=")]
    need(len(listen) == 1, f"the DaemonSet passes --listen once: {c['args']}")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    need("metrics" in ports, f"a port named metrics: {c.get('ports')}")
    if listen and "metrics" in ports:
        need(listen[0].endswith(f":{ports['metrics']}"),
             f"{listen[0]} is the metrics port {ports['metrics']}")
    ep = mon["spec"]["podMetricsEndpoints"]
    need(ep[0]["port"] == "metrics" and ep[0]["path"] == "/metrics", f"endpoint {ep}")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    sel = mon["spec"]["selector"]["matchLabels"]
    need(all(labels.get(k) == v for k, v in sel.items()),
         f"the PodMonitor's selector {sel} matches the pods' labels {labels}")
    need(mon["metadata"]["namespace"] == ds["metadata"]["namespace"], "same namespace")
    dash = json.load(open("deploy/monitoring/dashboard.json"))
    need(len(dash["panels"]) >= 10, "the dashboard has its panels")
    with open(sys.argv[2], "w") as out:
        yaml.safe_dump_all([d for d in docs if d["kind"] != "PodMonitor"], out)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
