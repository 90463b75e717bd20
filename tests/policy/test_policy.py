"""Checks deploy/policy's CEL with an independent CEL implementation (cel-python).

Usage: test_policy.py POLICY_YAML CASES_NAME [--server KUBECTL KUBECONFIG]
Reads the cases from cases.yaml beside it. Evaluates the policy's variables
and validations against pods that must be allowed and denied, the way the API
server would, and prints one line per case and a closing "N passed, M
failed" line.

With --server (make e2e-cluster), each case is also sent to a real API
server, where POLICY_YAML is applied, as a server-side dry-run create of the
same pod: both engines must give the expected verdict, the same one, and a
rejection naming the path and the resource to request.
"""

import json
import os
import subprocess
import sys

import celpy
import yaml

CASES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.yaml")


def pod(paths):
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if paths is not None:
        spec["volumes"] = [{"name": f"v{i}", "hostPath": {"path": p}} for i, p in enumerate(paths)]
        spec["volumes"].append({"name": "scratch", "emptyDir": {}})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def load_policy(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")


def evaluate(policy, obj):
    """Returns (allowed, message) as the API server would decide."""
    env = celpy.Environment()
    variables = {}
    for var in policy["spec"].get("variables", []):
        prog = env.program(env.compile(var["expression"]))
        act = {"object": celpy.json_to_cel(obj), "variables": celpy.json_to_cel({})}
        act["variables"] = celpy.celtypes.MapType(variables)
        variables[celpy.celtypes.StringType(var["name"])] = prog.evaluate(act)
    act = {"object": celpy.json_to_cel(obj), "variables": celpy.celtypes.MapType(variables)}
    for v in policy["spec"]["validations"]:
        ok = env.program(env.compile(v["expression"])).evaluate(act)
        if not ok:
            msg = env.program(env.compile(v["messageExpression"])).evaluate(act)
            return False, str(msg)
    return True, ""


def evaluate_server(kubectl, kubeconfig, obj):
    """Returns (allowed, message) as a real API server decided a dry-run create."""
    run = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "create", "--dry-run=server", "-o", "name", "-f", "-"],
        input=json.dumps(obj), capture_output=True, text=True, timeout=60)
    return run.returncode == 0, run.stderr.strip()


def main():
    policy_path, name = sys.argv[1], sys.argv[2]
    server = None
    if len(sys.argv) == 6 and sys.argv[3] == "--server":
        server = sys.argv[4], sys.argv[5]
    elif len(sys.argv) != 3:
        sys.exit(__doc__)
    policy = load_policy(policy_path)
    with open(CASES_FILE) as f:
        cases = yaml.safe_load(f)[name]
    passed = failed = 0

    def report(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(("ok   " if ok else "FAIL ") + what)

    def check(obj, want_allowed, what, needles=()):
        allowed, msg = evaluate(policy, obj)
        good = allowed == want_allowed and all(n in msg for n in needles)
        report(good, f"{name}: cel-python: {what}: {msg}")
        if server:
            s_allowed, s_msg = evaluate_server(*server, obj)
            s_good = s_allowed == want_allowed and all(n in s_msg for n in needles)
            report(s_good and s_allowed == allowed, f"{name}: API server: {what}: {s_msg or 'admitted'}")

    for paths in cases["allowed"]:
        check(pod(paths), True, f"allowed {paths!r}")
    for path, resource in cases["denied"].items():
        check(pod(["/var/log", path]), False, f"denied {path!r}", (resource, path))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
