"""The Helm chart's checks of `make test` (issue 24).

Usage: check_chart.py HELM KUBECTL GEN_POLICY DAEMON CHECK
  render   helm template of every preset and option set into
           target/chart/*.yaml (for the strict schema validation), each
           DaemonSet's kubelet directories mounted at their host paths and
           named to the daemon by flag as the preset says
  agree    the chart and deploy/ render the same objects: the default
           values and deploy/ + deploy/policy/, dra.enabled and deploy/dra/,
           metrics and deploy/monitoring/, the k0s and microk8s presets and
           the deploy/k0s and deploy/microk8s components
  configs  for each test config: the chart's ConfigMap holds it, its
           policy's served paths and its DeviceClasses are gen_policy's,
           and the daemon accepts the rendered config
  schema   values.schema.json refuses bad values, naming them
Prints one line per case; exits 1 when any failed.
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

import yaml

HELM, KUBECTL, GEN, DAEMON, CHECK = sys.argv[1:6]
CHART = "deploy/helm/k8s-hostpath-device-plugin"
NS = "hostpath-device-plugin"
OUT = "target/chart"
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
ROOTS = {
    "k8s": "/var/lib/kubelet",
    "k3s": "/var/lib/kubelet",
    "rke2": "/var/lib/kubelet",
    "k0s": "/var/lib/k0s/kubelet",
    "microk8s": "/var/snap/microk8s/common/var/lib/kubelet",
}
failed = 0


def report(ok, what, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failed += 1
        for line in str(detail).splitlines()[:40]:
            print("     " + line)


def helm(*args, values=None):
    cmd = [HELM, "template", "hp", CHART, "--namespace", NS, *args]
    if values is not None:
        f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, f)
        f.close()
        cmd += ["--values", f.name]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return run.returncode, run.stdout, run.stderr


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(*dirs, components=()):
    """Renders deploy/ directories together, as a user's kustomization would."""
    d = tempfile.mkdtemp(dir="target")
    rel = lambda p: os.path.relpath(p, d)
    with open(os.path.join(d, "kustomization.yaml"), "w") as f:
        yaml.safe_dump({"resources": [rel(x) for x in dirs], "components": [rel(x) for x in components]}, f)
    run = subprocess.run([KUBECTL, "kustomize", d], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise SystemExit(f"kubectl kustomize {dirs} {components}: {run.stderr}")
    return docs(run.stdout)


# Option sets: name -> helm --set arguments.
MATRIX = {
    "default": [],
    "no-policy": ["--set", "policy.enabled=false"],
    "plugin-watcher": ["--set", "registration=plugin-watcher"],
    "dra": ["--set", "dra.enabled=true"],
    "dra-only": ["--set", "dra.enabled=true", "--set", "devicePlugin.enabled=false"],
    "metrics": ["--set", "metrics.enabled=true", "--set", "metrics.podMonitor.enabled=true"],
    "scheduling": [
        "--set", "nodeSelector.disk=ssd", "--set", "priorityClassName=system-cluster-critical",
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "--set", "image.digest=sha256:" + "0" * 64, "--set", "logFormat=json",
        "--set", "extraEnv[0].name=RUST_LOG", "--set", "extraEnv[0].value=debug",
    ],
    "free-root": ["--set", "kubelet.rootDir=/data/kubelet", "--set", "kubelet.cdiDir=/etc/cdi", "--set", "dra.enabled=true"],
}
for preset in ROOTS:
    MATRIX[f"preset-{preset}"] = ["--set", f"kubelet.preset={preset}", "--set", "dra.enabled=true"]


def daemonsets(objs):
    return [o for o in objs if o["kind"] == "DaemonSet"]


def flag(args, name):
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_layout(name, objs, root, cdi="/var/run/cdi"):
    """Every kubelet directory at its host path, and named to the daemon by
    flag where it is not the daemon's default."""
    problems = []
    for ds in daemonsets(objs):
        spec = ds["spec"]["template"]["spec"]
        c = spec["containers"][0]
        vols = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        want = {
            "device-plugins": DEVICE_PLUGIN_DIR,
            "pod-resources": f"{root}/pod-resources",
            "plugins-registry": f"{root}/plugins_registry",
            "plugin-dir": f"{root}/plugins/hostpath-device.k8s.io",
            "cdi": cdi,
        }
        for vol, path in want.items():
            if vols.get(vol) != path or mounts.get(vol) != path:
                problems.append(f"{ds['metadata']['name']}: {vol} is {vols.get(vol)} at {mounts.get(vol)}, not {path}")
        default = root == "/var/lib/kubelet"
        flags = {
            "--plugins-registry-dir": None if default else f"{root}/plugins_registry",
            "--plugins-dir": None if default else f"{root}/plugins",
            "--pod-resources-socket": None if default else f"{root}/pod-resources/kubelet.sock",
            "--cdi-dir": None if cdi == "/var/run/cdi" else cdi,
        }
        for f, v in flags.items():
            if flag(c["args"], f) != v:
                problems.append(f"{ds['metadata']['name']}: {f} is {flag(c['args'], f)}, not {v}")
        # The probe finds the sockets the way the daemon made them.
        for probe in ("livenessProbe", "readinessProbe"):
            command = c[probe]["exec"]["command"]
            for f in (*flags, "--device-plugin-dir", "--registration", "--api"):
                if flag(command, f) != flag(c["args"], f):
                    problems.append(f"{ds['metadata']['name']}: {probe} has {f}={flag(command, f)}, the daemon {flag(c['args'], f)}")
    report(not problems, f"chart {name}: kubelet directories at their host paths, named by flag to the daemon and its probes", "\n".join(problems))


def render():
    os.makedirs(OUT, exist_ok=True)
    run = subprocess.run([HELM, "lint", "--strict", CHART], capture_output=True, text=True, timeout=60)
    report(run.returncode == 0, "helm lint --strict", run.stdout + run.stderr)
    for name, args in MATRIX.items():
        rc, out, err = helm(*args)
        report(rc == 0, f"helm template ({name})", err)
        if rc != 0:
            continue
        objs = docs(out)
        # The PodMonitor is the Prometheus Operator's CRD: no Kubernetes schema.
        core = [o for o in objs if o["kind"] != "PodMonitor"]
        with open(f"{OUT}/{name}.yaml", "w") as f:
            yaml.safe_dump_all(core, f)
        root = "/data/kubelet" if name == "free-root" else ROOTS.get(name.removeprefix("preset-"), "/var/lib/kubelet")
        check_layout(name, objs, root, "/etc/cdi" if name == "free-root" else "/var/run/cdi")
        if name == "plugin-watcher":
            args = daemonsets(objs)[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            report(flag(args, "--registration") == "plugin-watcher", "chart plugin-watcher: --registration=plugin-watcher", args)
        if name == "scheduling":
            spec = daemonsets(objs)[0]["spec"]["template"]["spec"]
            terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            keys = [[e["key"] for e in t["matchExpressions"]] for t in terms]
            report(keys == [["zone", "hostpath-device.k8s.io/api"]], "chart scheduling: the user's node affinity keeps the chart's NotIn dra", keys)
            c = spec["containers"][0]
            report(spec["nodeSelector"] == {"disk": "ssd"} and c["image"].endswith("@sha256:" + "0" * 64)
                   and {"name": "RUST_LOG", "value": "debug"} in c["env"] and flag(c["args"], "--log-format") == "json",
                   "chart scheduling: nodeSelector, image digest, extraEnv, logFormat", spec)


def normal(o):
    """An object as both renderings must agree on: labels, annotations and
    the image aside, lists of named things in name order."""
    o = copy.deepcopy(o)
    md = o["metadata"]
    for k in ("labels", "annotations"):
        md.pop(k, None)
    if o["kind"] == "ConfigMap":
        o["data"] = {k: yaml.safe_load(v) for k, v in o["data"].items()}
    if o["kind"] == "DaemonSet":
        spec = o["spec"]
        spec.pop("selector", None)
        spec["template"].pop("metadata", None)
        pod = spec["template"]["spec"]
        pod["volumes"].sort(key=lambda v: v["name"])
        for c in pod["containers"]:
            c.pop("image", None)
            c.pop("imagePullPolicy", None)
            c["volumeMounts"].sort(key=lambda v: v["name"])
    if o["kind"] == "PodMonitor":
        o["spec"]["selector"]["matchLabels"] = {
            k: v for k, v in o["spec"]["selector"]["matchLabels"].items() if k == "app.kubernetes.io/name"
        }
    return o


def differences(a, b, at=""):
    """The places where two JSON values differ, as paths with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{at}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{at}[{i}]")]
    return [] if a == b else [f"{at}: chart {json.dumps(a)}, deploy {json.dumps(b)}"]


def by_key(objs):
    return {(o["kind"], o["metadata"]["name"]): normal(o) for o in objs if o["kind"] != "Namespace"}


def agree(name, chart_args, dirs, components=()):
    rc, out, err = helm(*chart_args)
    if rc != 0:
        report(False, f"chart and {name} agree", err)
        return
    a, b = by_key(docs(out)), by_key(kustomize(*dirs, components=components))
    problems = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            problems.append(f"{k}: in {name}, not in the chart")
        elif k not in b:
            problems.append(f"{k}: in the chart, not in {name}")
        elif a[k] != b[k]:
            problems += [f"{k[0]} {k[1]}{d}" for d in differences(a[k], b[k])]
    report(not problems, f"chart and {name} agree ({len(a)} objects)", "\n".join(problems))


def agree_all():
    agree("deploy/ + deploy/policy/", [], ["deploy", "deploy/policy"])
    agree("deploy/ + deploy/dra/ + deploy/policy/", ["--set", "dra.enabled=true"], ["deploy", "deploy/dra", "deploy/policy"])
    agree("deploy/ + deploy/monitoring/", ["--set", "metrics.enabled=true", "--set", "metrics.podMonitor.enabled=true", "--set", "policy.enabled=false"],
          ["deploy"], ["deploy/monitoring"])
    for preset in ("k0s", "microk8s"):
        agree(f"deploy/ + deploy/dra/ + deploy/{preset}", ["--set", f"kubelet.preset={preset}", "--set", "dra.enabled=true", "--set", "policy.enabled=false"],
              ["deploy", "deploy/dra"], [f"deploy/{preset}"])
    with open("Cargo.toml") as f:
        version = next(l.split('"')[1] for l in f if l.startswith("version = "))
    with open(f"{CHART}/Chart.yaml") as f:
        chart = yaml.safe_load(f)
    report(chart["appVersion"] == version == chart["version"], f"Chart.yaml's version and appVersion are Cargo.toml's {version}", chart)


CONFIGS = ["deploy/config.yaml", "tests/policy/multi-config.yaml", "tests/policy/devices-config.yaml", "tests/policy/generic-config.yaml"]


def configs():
    for path in CONFIGS:
        with open(path) as f:
            want_config = yaml.safe_load(f)
        # As a structure in values, and as the file's text (--set-file).
        for how, args, values in (("values", [], {"config": want_config}), ("--set-file", ["--set-file", f"config={path}"], None)):
            rc, out, err = helm("--set", "dra.enabled=true", *args, values=values)
            if rc != 0:
                report(False, f"chart with {path} ({how})", err)
                continue
            objs = docs(out)
            cm = next(o for o in objs if o["kind"] == "ConfigMap")
            text = cm["data"]["config.yaml"]
            report(yaml.safe_load(text) == want_config, f"chart ConfigMap holds {path} ({how})", text)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir="target", delete=False) as f:
                f.write(text)
            run = subprocess.run([DAEMON, "check", "--config", f.name], capture_output=True, text=True, timeout=30)
            report(run.returncode == 0, f"the daemon accepts the chart's config of {path} ({how})", run.stderr)
            gen = docs(subprocess.run([GEN, path], capture_output=True, text=True, check=True).stdout)
            served = lambda ds: next(d for d in ds if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].endswith("served-paths"))["spec"]["variables"][0]
            report(served(objs) == served(gen), f"chart policy's served paths are gen_policy's for {path} ({how})",
                   f"chart: {served(objs)}\ngen_policy: {served(gen)}")
            classes = lambda ds: sorted((d["metadata"]["name"], json.dumps(d["spec"], sort_keys=True)) for d in ds if d["kind"] == "DeviceClass")
            gen_classes = docs(subprocess.run([GEN, "--device-classes", path], capture_output=True, text=True, check=True).stdout)
            report(classes(objs) == classes(gen_classes), f"chart DeviceClasses are gen_policy's for {path} ({how})",
                   f"chart: {classes(objs)}\ngen_policy: {classes(gen_classes)}")
            if how == "values":
                with open(f"{OUT}/policy-{os.path.basename(path)}", "w") as f:
                    yaml.safe_dump_all([o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"], f)


# Bad values and what the refusal must name.
BAD = [
    (["--set", "kubelet.preset=k3d"], "/kubelet/preset"),
    (["--set", "kubelet.rootDir=var/lib/kubelet"], "/kubelet/rootDir"),
    (["--set", "kubelet.devicePluginDir=/var/lib/kubelet/device-plugins/../x"], "/kubelet/devicePluginDir"),
    (["--set", "registration=grpc"], "/registration"),
    (["--set", "logFormat=xml"], "/logFormat"),
    (["--set", "metrics.port=70000"], "/metrics/port"),
    (["--set", "image.repository="], "/image/repository"),
    (["--set", "image.digest=latest"], "/image/digest"),
    (["--set", "dra.enabled=yes"], "/dra/enabled"),
    (["--set", "config=7"], "/config"),
    (["--set", "config.resources[0].hostPath.path=relative"], "/config"),
    (["--set", "tolerations=none"], "/tolerations"),
    (["--set", "extraArgs[0]=api"], "/extraArgs/0"),
    (["--set", "extraEnv[0].value=x"], "/extraEnv/0"),
    (["--set", "unknownKey=1"], "unknownKey"),
]


def schema():
    for args, names in BAD:
        rc, out, err = helm(*args)
        report(rc != 0 and names in err, f"values schema refuses {' '.join(args[1::2])}, naming {names}", err or "accepted")
    rc, out, err = helm()
    report(rc == 0, "values schema accepts the chart's own values", err)


{"render": render, "agree": agree_all, "configs": configs, "schema": schema}[CHECK]()
sys.exit(1 if failed else 0)
