"""Checks deploy/policy's CEL with an independent CEL implementation (cel-python).

Usage: test_policy.py POLICY_YAML CASES_NAME
Reads the cases from cases.yaml beside it (shared with the real API
server's check). Evaluates the policy's variables and validations against pods that must be
allowed and denied, the way the API server would, and prints one line per
case and a closing "N passed, M failed" line.
"""

import os
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


def main():
    policy_path, name = sys.argv[1], sys.argv[2]
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

    for paths in cases["allowed"]:
        allowed, msg = evaluate(policy, pod(paths))
        report(allowed, f"{name}: allowed {paths!r} {msg}")
    for path, resource in cases["denied"].items():
        allowed, msg = evaluate(policy, pod(["/var/log", path]))
        report(not allowed and resource in msg and path in msg, f"{name}: denied {path!r}: {msg}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
