#!/usr/bin/env bash
# Builds the e2e's test images with umoci, as one OCI archive for
# `ctr images import` (images.tar): `pause` (the pod sandbox: sleeps
# forever) and `busybox` (the workload), both Debian's static busybox and
# nothing else. Our own image is not built here: it is make image's OCI
# archive, copied to plugin.oci.tar and imported as it is (import_plugin).
set -euo pipefail
work=$1 plugin=$2
cp "$plugin" "$work/plugin.oci.tar"
cd "$work"
umoci init --layout oci
umoci new --image oci:base
umoci unpack --rootless --image oci:base bundle >/dev/null
mkdir -p bundle/rootfs/bin
cp "$(command -v busybox)" bundle/rootfs/bin/busybox
for applet in sh cat sleep ls; do ln -s busybox "bundle/rootfs/bin/$applet"; done
umoci repack --image oci:base bundle
umoci config --image oci:base --config.entrypoint /bin/sleep --config.cmd infinity --tag pause
umoci config --image oci:base --config.cmd /bin/sh --tag busybox
umoci rm --image oci:base
rm -rf bundle
tar -C oci -cf images.tar .
rm -rf oci
