#!/usr/bin/env bash
# arm64 smoke test of `make test` (issue 7): cross-compile the static
# aarch64 binary and run it under qemu-user: --version, check, and the
# demo's whole story (serve, register, ListAndWatch, health flips, Allocate,
# kubelet restart, SIGTERM) against the host-built simulated kubelet — the
# two talk over Unix sockets, so only the daemon is emulated.
# Skips, saying why, when the cross toolchain or qemu cannot be installed.
# Usage: smoke.sh HOST_DEMO_BINARY
set -uo pipefail
cd "$(dirname "$0")/../.."
DEMO=$1
ARM_TARGET=aarch64-unknown-linux-gnu
BIN=target/$ARM_TARGET/release/k8s-hostpath-device-plugin
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

skip() {
    echo "SKIP arm64 smoke test: $*"
    exit 0
}
apt_install() {
    $SUDO apt-get install -y -qq "$@" > /dev/null 2>&1 \
        || { $SUDO apt-get update -qq > /dev/null 2>&1 && $SUDO apt-get install -y -qq "$@" > /dev/null 2>&1; }
}

rustup target list --installed | grep -q "^$ARM_TARGET\$" \
    || rustup target add "$ARM_TARGET" > /dev/null 2>&1 \
    || skip "rustup cannot install the $ARM_TARGET target here"
command -v aarch64-linux-gnu-g++ > /dev/null 2>&1 || apt_install g++-aarch64-linux-gnu \
    || skip "the g++-aarch64-linux-gnu package cannot be installed here"
command -v qemu-aarch64-static > /dev/null 2>&1 || apt_install qemu-user-static \
    || skip "the qemu-user-static package cannot be installed here"

# From here on, every failure is real.
make --no-print-directory static-arm64 || { echo "FAIL arm64 build"; exit 1; }

passed=0
failed=0
check() {
    local name=$1
    shift
    if "$@" > target/arm64-check.log 2>&1; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/     /' target/arm64-check.log | tail -40
        failed=$((failed + 1))
    fi
}
elf_is_static_aarch64() {
    python3 - "$1" <<'PY'
import struct, sys
elf = open(sys.argv[1], "rb").read()
assert elf[:4] == b"\x7fELF" and elf[4] == 2, "not a 64-bit ELF"
assert struct.unpack_from("<H", elf, 0x12)[0] == 183, "not aarch64"
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
assert 3 not in types, "has a PT_INTERP: needs a dynamic loader"
PY
}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

check "aarch64 ELF, static (no loader)" elf_is_static_aarch64 "$BIN"
check "--version under qemu" bash -c "qemu-aarch64-static '$BIN' --version | grep -qx 'k8s-hostpath-device-plugin $version'"
check "check deploy/config.yaml under qemu" qemu-aarch64-static "$BIN" check --config deploy/config.yaml
printf '#!/bin/sh\nexec qemu-aarch64-static "%s" "$@"\n' "$PWD/$BIN" > target/arm64-daemon.sh
chmod +x target/arm64-daemon.sh
check "serve, register, ListAndWatch, Allocate, restart, SIGTERM under qemu (the demo)" \
    env DAEMON_BIN="$PWD/target/arm64-daemon.sh" "$DEMO"
echo "arm64 binary: $(stat -c %s "$BIN") bytes"
echo "arm64: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
