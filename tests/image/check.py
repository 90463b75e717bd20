"""The OCI image checks of `make test` (issue 24): `make image` without a
Docker engine.

Usage: check.py OUT_DIR VERSION REVISION EPOCH AMD64_BINARY ARM64_BINARY CRANE

Builds the image twice with deploy/image/build-oci.py, into OUT_DIR/a and
OUT_DIR/b, and checks:
  - the two builds give the same digest and byte-identical archives;
  - the index holds linux/amd64 and linux/arm64, each image the binary of
    its architecture, byte for byte, at Dockerfile.distroless's path, with
    the Dockerfile's user, entrypoint and command;
  - every blob is what its digest says;
  - the amd64 binary taken out of the image runs;
  - skopeo reads the archive and copies the layout with every digest kept;
  - crane pushes the layout to its own in-memory registry, which then
    serves the same index digest, and `crane validate` passes on it.
Prints one line per check; exits 1 when any failed.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

OUT, VERSION, REVISION, EPOCH, AMD64, ARM64, CRANE = sys.argv[1:8]
BINARY = "usr/local/bin/k8s-hostpath-device-plugin"
failed = 0


def report(ok, what, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failed += 1
        for line in str(detail).splitlines()[:20]:
            print("     " + line)


def run(*cmd, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def build(where):
    r = run(sys.executable, "deploy/image/build-oci.py", where, VERSION, REVISION, EPOCH, f"amd64={AMD64}", f"arm64={ARM64}")
    if r.returncode != 0:
        raise SystemExit(f"FAIL build-oci.py: {r.stderr}")
    return r.stdout.strip()


def blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dockerfile():
    """ENTRYPOINT, CMD, USER and the COPY destination of the runtime stage."""
    want = {}
    with open("Dockerfile.distroless") as f:
        for line in f:
            word, _, rest = line.strip().partition(" ")
            if word in ("ENTRYPOINT", "CMD"):
                want[word] = json.loads(rest)
            elif word == "USER":
                want[word] = rest
            elif word == "COPY" and "--from=build" in rest:
                want[word] = rest.split()[-1]
    return want


shutil.rmtree(OUT, ignore_errors=True)
a, b = build(f"{OUT}/a"), build(f"{OUT}/b")
archive = f"k8s-hostpath-device-plugin-{VERSION}.oci.tar"
with open(f"{OUT}/a/{archive}", "rb") as f1, open(f"{OUT}/b/{archive}", "rb") as f2:
    same = f1.read() == f2.read()
report(a == b and same, f"two builds: the same index digest ({a}) and byte-identical archives", f"{a} vs {b}")

layout = f"{OUT}/a/layout"
with open(f"{layout}/index.json") as f:
    top = json.load(f)
ref = top["manifests"][0]
report(len(top["manifests"]) == 1 and ref["annotations"]["org.opencontainers.image.ref.name"] == VERSION and ref["digest"] == a,
       f"index.json names one image index, {VERSION}", top)
index = json.loads(blob(layout, ref["digest"]))
platforms = sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"])
report(platforms == [("linux", "amd64"), ("linux", "arm64")], "the index holds linux/amd64 and linux/arm64", platforms)

bad = []
for name in os.listdir(f"{layout}/blobs/sha256"):
    if sha(blob(layout, "sha256:" + name)) != "sha256:" + name:
        bad.append(name)
report(not bad, "every blob is what its digest says", bad)

want = dockerfile()
for m in index["manifests"]:
    arch = m["platform"]["architecture"]
    manifest = json.loads(blob(layout, m["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    layers = manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO(blob(layout, layers[0]["digest"])), mode="r:gz") as tar:
        names = sorted(tar.getnames())
        member = tar.getmember(BINARY)
        data = tar.extractfile(member).read()
    with open(AMD64 if arch == "amd64" else ARM64, "rb") as f:
        expected = f.read()
    report(len(layers) == 1 and data == expected and member.mode == 0o755 and names == ["usr", "usr/local", "usr/local/bin", BINARY],
           f"{arch}: one layer, the {arch} binary byte for byte at /{BINARY}, mode 0755", names)
    c = config["config"]
    got = {"ENTRYPOINT": c.get("Entrypoint"), "CMD": c.get("Cmd"), "USER": c.get("User"), "COPY": c["Entrypoint"][0]}
    report(got == want and config["architecture"] == arch and config["os"] == "linux",
           f"{arch}: the Dockerfile's user, entrypoint and command", f"image {got}\nDockerfile {want}")
    report(config["rootfs"]["diff_ids"] == [sha(gzip.decompress(blob(layout, layers[0]["digest"])))],
           f"{arch}: the config's diff_id is the uncompressed layer's digest", config["rootfs"])
    if arch == "amd64":
        exe = os.path.join(OUT, "from-image")
        with open(exe, "wb") as f:
            f.write(data)
        os.chmod(exe, 0o755)
        r = run(exe, "--version")
        report(r.returncode == 0 and VERSION in r.stdout, "amd64: the binary taken out of the image runs (--version)", r.stdout + r.stderr)

# skopeo, from Debian's packages.
if shutil.which("skopeo"):
    r = run("skopeo", "inspect", "--raw", f"oci-archive:{OUT}/a/{archive}:{VERSION}")
    report(r.returncode == 0 and sha(r.stdout.encode()) == a, "skopeo reads the archive: its index has the digest", r.stderr)
    r = run("skopeo", "inspect", "--override-arch", "arm64", f"oci:{layout}:{VERSION}")
    report(r.returncode == 0 and json.loads(r.stdout or "{}").get("Architecture") == "arm64", "skopeo inspects the layout's arm64 image", r.stderr)
    copy, copied = f"{OUT}/skopeo-copy", None
    r = run("skopeo", "copy", "--all", "--preserve-digests", f"oci-archive:{OUT}/a/{archive}:{VERSION}", f"oci:{copy}:{VERSION}")
    if r.returncode == 0:
        with open(f"{copy}/index.json") as f:
            copied = json.load(f)["manifests"][0]["digest"]
        r.stderr = f"copied {copied}"
    report(r.returncode == 0 and copied == a, "skopeo copies every architecture, every digest kept", r.stderr)
else:
    report(False, "skopeo is installed (Debian's skopeo package)")

# crane, pushing to its own in-memory registry on a free loopback port.
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
registry = subprocess.Popen([CRANE, "registry", "serve", "--address", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or registry.poll() is not None:
                raise SystemExit("FAIL crane's registry did not start")
            time.sleep(0.05)
    target = f"127.0.0.1:{port}/k8s-hostpath-device-plugin:{VERSION}"
    r = run(CRANE, "push", layout, target)
    report(r.returncode == 0, "crane pushes the layout to a registry", r.stderr)
    r = run(CRANE, "digest", target)
    report(r.returncode == 0 and r.stdout.strip() == a, "the registry serves the same index digest", r.stdout + r.stderr)
    r = run(CRANE, "validate", "--remote", target)
    report(r.returncode == 0, "crane validate --remote passes (every layer and digest)", r.stdout + r.stderr)
    r = run(CRANE, "config", "--platform", "linux/arm64", target)
    report(r.returncode == 0 and json.loads(r.stdout or "{}").get("architecture") == "arm64", "crane reads the arm64 image's config", r.stderr)
finally:
    registry.terminate()
    try:
        registry.wait(timeout=10)
    except subprocess.TimeoutExpired:
        registry.kill()
        registry.wait()

sys.exit(1 if failed else 0)
