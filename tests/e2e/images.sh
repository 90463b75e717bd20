#!/usr/bin/env bash
# Builds the e2e's two images with umoci, as one OCI archive for
# `ctr images import`: `pause` (the pod sandbox: sleeps forever) and
# `busybox` (the workload), both Debian's static busybox and nothing else;
# and `plugin`, the daemon's static binary alone (what Dockerfile.distroless
# ships, minus the distroless base files), and `plugin-next`, the same with
# one label more: another image for make e2e-cluster's rolling update.
set -euo pipefail
work=$1 daemon=$2
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
umoci new --image oci:plugin
umoci unpack --rootless --image oci:plugin bundle >/dev/null
mkdir -p bundle/rootfs/usr/local/bin
cp "$daemon" bundle/rootfs/usr/local/bin/k8s-hostpath-device-plugin
umoci repack --image oci:plugin bundle
umoci config --image oci:plugin --config.entrypoint /usr/local/bin/k8s-hostpath-device-plugin --config.cmd deviceplugin
umoci config --image oci:plugin --config.label org.opencontainers.image.revision=next --tag plugin-next
rm -rf bundle
tar -C oci -cf images.tar .
rm -rf oci
