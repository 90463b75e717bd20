#!/usr/bin/env python3
"""`make image` without a Docker engine: the image Dockerfile.distroless
builds, as an OCI image made directly from the static binaries.

Usage: build-oci.py OUT_DIR VERSION REVISION EPOCH ARCH=BINARY...

Writes OUT_DIR/layout (an OCI image layout: oci-layout, index.json,
blobs/sha256/...) and OUT_DIR/k8s-hostpath-device-plugin-VERSION.oci.tar
(the same layout as one archive, for `ctr images import`, `skopeo copy
oci-archive:...` and `crane push`), and prints the index's digest.

Each architecture's image is one layer holding the binary at
/usr/local/bin/k8s-hostpath-device-plugin (Dockerfile.distroless's path),
run as 0:0 with `deviceplugin` as its command: the Dockerfile's image on a
scratch base. Both images go under one image index, named VERSION.

The bytes depend only on the binaries and the arguments: files sorted, owner
0:0, every time EPOCH (the commit's time), gzip without a name or time, JSON
with sorted keys. Two builds of the same commit give the same digest.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time

BINARY = "usr/local/bin/k8s-hostpath-device-plugin"
MEDIA = {
    "index": "application/vnd.oci.image.index.v1+json",
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
ARCHES = {"amd64", "arm64"}
# ELF e_machine of each architecture: a binary built for another is refused.
ELF_MACHINE = {"amd64": 62, "arm64": 183}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Blobs:
    def __init__(self, layout):
        self.dir = os.path.join(layout, "blobs", "sha256")
        os.makedirs(self.dir, exist_ok=True)

    def put(self, data, media):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.dir, digest), "wb") as f:
            f.write(data)
        return {"mediaType": media, "digest": "sha256:" + digest, "size": len(data)}


def layer_tar(binary, epoch):
    """The layer, uncompressed: the directories leading to the binary, and it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = BINARY.split("/")
        for i in range(1, len(parts)):
            d = tarfile.TarInfo("/".join(parts[:i]) + "/")
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, epoch
            tar.addfile(d)
        with open(binary, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo(BINARY)
        info.size, info.mode, info.mtime = len(data), 0o755, epoch
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzipped(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little")


def image(blobs, arch, binary, version, revision, epoch):
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    tar = layer_tar(binary, epoch)
    layer = blobs.put(gzipped(tar), MEDIA["layer"])
    labels = {
        "org.opencontainers.image.title": "k8s-hostpath-device-plugin",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.licenses": "MIT",
    }
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "User": "0:0",
            "Entrypoint": ["/" + BINARY],
            "Cmd": ["deviceplugin"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": created, "created_by": "build-oci.py: COPY k8s-hostpath-device-plugin /" + BINARY}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA["manifest"],
        "config": blobs.put(canonical(config), MEDIA["config"]),
        "layers": [layer],
        "annotations": {"org.opencontainers.image.created": created, **labels},
    }
    desc = blobs.put(canonical(manifest), MEDIA["manifest"])
    desc["platform"] = {"architecture": arch, "os": "linux"}
    return desc


def archive(layout, path):
    """The layout as one tar, every entry owned by 0:0 at time 0, sorted."""
    with open(path, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in sorted(os.walk(layout)):
            dirs.sort()
            rel = os.path.relpath(root, layout)
            if rel != ".":
                d = tarfile.TarInfo(rel + "/")
                d.type, d.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(d)
            for name in sorted(files):
                full = os.path.join(root, name)
                info = tarfile.TarInfo(os.path.normpath(os.path.join(rel, name)))
                info.size, info.mode = os.path.getsize(full), 0o644
                with open(full, "rb") as f:
                    tar.addfile(info, f)


def main(argv):
    if len(argv) < 5:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out, version, revision, epoch = argv[0], argv[1], argv[2], int(argv[3])
    binaries = {}
    for spec in argv[4:]:
        arch, _, path = spec.partition("=")
        if arch not in ARCHES or not path:
            print(f"build-oci.py: {spec!r}: want ARCH=BINARY with ARCH one of {sorted(ARCHES)}", file=sys.stderr)
            return 2
        if elf_machine(path) != ELF_MACHINE[arch]:
            print(f"build-oci.py: {path} is not an {arch} ELF binary", file=sys.stderr)
            return 2
        binaries[arch] = path
    layout = os.path.join(out, "layout")
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(layout)
    blobs = Blobs(layout)
    manifests = [image(blobs, arch, binaries[arch], version, revision, epoch) for arch in sorted(binaries)]
    index = {"schemaVersion": 2, "mediaType": MEDIA["index"], "manifests": manifests}
    top = blobs.put(canonical(index), MEDIA["index"])
    top["annotations"] = {"org.opencontainers.image.ref.name": version}
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": MEDIA["index"], "manifests": [top]}))
    tar = os.path.join(out, f"k8s-hostpath-device-plugin-{version}.oci.tar")
    archive(layout, tar)
    print(top["digest"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
