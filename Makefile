# k8s-hostpath-device-plugin
#
# Every target builds with one cargo configuration (release profile, explicit
# target, static C runtime), so gRPC's C core is compiled once and the tests
# exercise the very binary that ships.

VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The architecture of `make static` / `make release`: amd64 (the host) or
# arm64 (cross-compiled, see BUILD.md).
ARCH        ?= amd64
TARGET      := x86_64-unknown-linux-gnu
ARM_TARGET  := aarch64-unknown-linux-gnu
ARM_ENV     := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
               CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
               CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export RUSTFLAGS        := -C target-feature=+crt-static
# With pkg-config and libsystemd-dev installed, gRPC's cmake would link
# -lsystemd and the static link fails; keep pkg-config from finding it.
export PKG_CONFIG_LIBDIR := /nonexistent
CARGO_FLAGS := --release --target $(TARGET) --locked
# Tests, examples and lints add the test scaffolding (the simulated kubelet,
# the fuzz invariants); `build` and `static` ship without it.
DEV_FLAGS   := $(CARGO_FLAGS) --features sim,fuzzing
OUT         := target/$(TARGET)/release
BIN         := $(OUT)/k8s-hostpath-device-plugin
IMAGE       ?= k8s-hostpath-device-plugin:$(VERSION)
# The OCI image `make image` builds without a Docker engine: its layout and
# archive, named by version; the commit and its time make it reproducible.
OCI_DIR     := dist/image
OCI_TAR     := $(OCI_DIR)/k8s-hostpath-device-plugin-$(VERSION).oci.tar
REVISION    := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
EPOCH       := $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),0)
ARM_BIN     := target/$(ARM_TARGET)/release/k8s-hostpath-device-plugin
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-arm64 build static static-arm64 test unit-test soak-short deploy-test arm64-test image-test oci-image e2e lint fmt demo bench e2e-cluster soak fuzz policy image image-multiarch release clean

all: build

# Build prerequisites: cmake for gRPC's C core, rustfmt and clippy.
deps:
	@command -v cmake >/dev/null 2>&1 || { \
		echo "installing cmake (needed to build gRPC's C core)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake >/dev/null; }
	@command -v g++ >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++ >/dev/null; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

build: deps
	cargo build $(CARGO_FLAGS) --bins

# The static, stripped binary at dist/k8s-hostpath-device-plugin (what
# Dockerfile.distroless copies into the image), for ARCH=amd64 or arm64.
static: deps
ifeq ($(ARCH),amd64)
	cargo build $(CARGO_FLAGS) --bins
	mkdir -p dist
	cp $(BIN) dist/k8s-hostpath-device-plugin
else ifeq ($(ARCH),arm64)
	$(MAKE) static-arm64
	cp target/$(ARM_TARGET)/release/k8s-hostpath-device-plugin dist/k8s-hostpath-device-plugin
else
	@echo "ARCH=$(ARCH): use amd64 or arm64"; exit 2
endif
	@ls -l dist/k8s-hostpath-device-plugin

# Cross toolchain for arm64 (BUILD.md): the rustup target and Debian's
# aarch64 C/C++ compilers; qemu-user-static to run the result here.
deps-arm64: deps
	@rustup target list --installed | grep -q '^$(ARM_TARGET)$$' || rustup target add $(ARM_TARGET)
	@command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null; }

static-arm64: deps-arm64
	$(ARM_ENV) cargo build --release --target $(ARM_TARGET) --locked --bins
	mkdir -p dist
	@ls -l target/$(ARM_TARGET)/release/k8s-hostpath-device-plugin

# The README's test command: format, lints, unit and integration tests,
# the deployment and chart checks, the arm64 smoke test, the OCI image checks.
test: lint unit-test soak-short deploy-test arm64-test image-test

# The metrics test runs Prometheus's `promtool check metrics` on live
# scrapes: promtool is built from the Go module proxy at
# tests/promtool/go.mod's pin and cached outside the checkout.
unit-test: deps
	promtool="$$(tests/gotool.sh promtool)" && PROMTOOL="$$promtool" cargo test $(DEV_FLAGS) --all-targets

soak-short: deps
	cargo build $(DEV_FLAGS) --bins --examples
	./$(OUT)/examples/soak --short

# Figures against the targets (README "Performance"); writes target/bench.json.
# The side-by-side table with generic-device-plugin (issue 26) needs Go:
# without it the bench runs alone and says so.
bench: deps
	cargo build $(DEV_FLAGS) --bins --examples
	BENCH_PEER="$$(tests/gotool.sh peer || true)" ./$(OUT)/examples/bench

# The full soak: 1000 kubelet restarts, 200 reloads, 1000 flaps, Allocate load.
soak: deps
	cargo build $(DEV_FLAGS) --bins --examples
	./$(OUT)/examples/soak

deploy-test: deps
	cargo build $(DEV_FLAGS) --bins --examples
	tests/deploy/checks.sh $(BIN) $(OUT)/examples/gen_policy

# The arm64 binary under qemu-user: --version, check, and the demo's whole
# story against the host's simulated kubelet. Skipped, with the reason, when
# the cross toolchain or qemu cannot be installed here.
arm64-test: deps
	cargo build $(DEV_FLAGS) --bins --examples
	tests/arm64/smoke.sh $(OUT)/examples/demo

# make image's OCI image (without a Docker engine), checked: the same digest
# from two builds, both architectures, the binaries byte for byte, the
# Dockerfile's entrypoint, skopeo and crane (its in-memory registry) accept
# it. crane comes from the Go module proxy (tests/crane's pin).
image-test: oci-image
	crane="$$(tests/gotool.sh crane)" && python3 tests/image/check.py target/oci-check $(VERSION) $(REVISION) $(EPOCH) \
		dist/k8s-hostpath-device-plugin-amd64 dist/k8s-hostpath-device-plugin-arm64 "$$crane"

# The daemon against the real kubelet and containerd, built from the Go
# module proxy at tests/e2e/go.mod's pins and cached outside the checkout,
# in a private mount namespace (README "End-to-end with the real kubelet");
# then a run with the kubelet killed mid-way, to prove the clean-up.
# The DaemonSet's pod runs make image's OCI image, and the host-run daemon is
# the very binary inside it.
e2e: oci-image
	tests/e2e/run.sh dist/k8s-hostpath-device-plugin-amd64 $(OCI_TAR)
	tests/e2e/cleanup-test.sh e2e dist/k8s-hostpath-device-plugin-amd64 $(OCI_TAR)

# The deployment on a real control plane (etcd, kube-apiserver, scheduler,
# controller-manager) and two nodes, one with /sample, built from the Go
# module proxy at the same pins and cached the same way (README "The whole
# promise on a real cluster"). gen_policy makes the policies of the shared
# cases the API server evaluates.
e2e-cluster: oci-image
	cargo build $(DEV_FLAGS) --examples
	tests/e2e/cluster.sh $(OCI_TAR) $(OUT)/examples/gen_policy
	tests/e2e/cleanup-test.sh cluster $(OCI_TAR) $(OUT)/examples/gen_policy

lint: deps
	cargo fmt --all -- --check
	cargo clippy $(DEV_FLAGS) --all-targets -- -D warnings

fmt:
	cargo fmt --all

# The README's first command: the daemon against the simulated kubelet.
# MODE=plugin-watcher registers through the plugins registry instead.
MODE ?= kubelet-socket
demo: deps
	cargo build $(DEV_FLAGS) --bins --examples
	MODE=$(MODE) ./$(OUT)/examples/demo

# Regenerates deploy/policy/policy.yaml from deploy/config.yaml.
policy: deps
	cargo build $(DEV_FLAGS) --examples
	./$(OUT)/examples/gen_policy deploy/config.yaml > deploy/policy/policy.yaml

# Regenerates deploy/dra/deviceclasses.yaml from deploy/config.yaml.
dra-classes: deps
	cargo build $(DEV_FLAGS) --examples
	./$(OUT)/examples/gen_policy --device-classes deploy/config.yaml > deploy/dra/deviceclasses.yaml

# With a Docker engine: Dockerfile.distroless. Without one (the project's
# build machines): the same image as an OCI image made directly from the
# static binaries (make oci-image).
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		echo "docker build -f Dockerfile.distroless -t $(IMAGE) ."; \
		docker build -f Dockerfile.distroless -t $(IMAGE) .; \
	else \
		echo "no Docker engine here: building the OCI image from the static binaries (make oci-image)"; \
		$(MAKE) --no-print-directory oci-image; \
	fi

# amd64 and arm64 under one index, named $(VERSION): the layout in
# $(OCI_DIR)/layout and the archive $(OCI_TAR), for `ctr images import`,
# `skopeo copy oci-archive:$(OCI_TAR):$(VERSION) docker://...` or
# `crane push $(OCI_DIR)/layout REGISTRY/k8s-hostpath-device-plugin:$(VERSION)`.
# The binaries it holds are kept beside it (dist/k8s-hostpath-device-plugin-ARCH).
oci-image: deps-arm64
	cargo build $(CARGO_FLAGS) --bins
	$(ARM_ENV) cargo build --release --target $(ARM_TARGET) --locked --bins
	mkdir -p dist
	cp $(BIN) dist/k8s-hostpath-device-plugin-amd64
	cp $(ARM_BIN) dist/k8s-hostpath-device-plugin-arm64
	python3 deploy/image/build-oci.py $(OCI_DIR) $(VERSION) $(REVISION) $(EPOCH) \
		amd64=dist/k8s-hostpath-device-plugin-amd64 arm64=dist/k8s-hostpath-device-plugin-arm64
	@ls -l $(OCI_TAR)

# Both architectures in one manifest list (docker buildx with a builder that
# can push); the build stage cross-compiles with the same make targets.
PLATFORMS ?= linux/amd64,linux/arm64
image-multiarch:
	docker buildx build -f Dockerfile.distroless --platform $(PLATFORMS) -t $(IMAGE) --push .

# libFuzzer on each target for FUZZ_SECS seconds (nightly; cargo-fuzz is
# installed when missing). New inputs go to target/fuzz-corpus; copy the
# ones worth keeping into fuzz/corpus/<target>/, which make test replays.
FUZZ_SECS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	for t in config allocate preferred glob; do \
		mkdir -p target/fuzz-corpus/$$t; \
		env -u RUSTFLAGS -u PKG_CONFIG_LIBDIR cargo +nightly fuzz run $$t target/fuzz-corpus/$$t fuzz/corpus/$$t \
			-- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

# Binaries named with their architecture, and their checksums: amd64, and
# arm64 when its cross toolchain can be installed.
release: deps
	$(MAKE) static ARCH=amd64
	cp dist/k8s-hostpath-device-plugin dist/k8s-hostpath-device-plugin-$(VERSION)-linux-amd64
	if $(MAKE) static-arm64; then \
		cp target/$(ARM_TARGET)/release/k8s-hostpath-device-plugin dist/k8s-hostpath-device-plugin-$(VERSION)-linux-arm64; \
	else echo "arm64 skipped: its cross toolchain could not be installed"; fi
	cd dist && sha256sum k8s-hostpath-device-plugin-$(VERSION)-linux-* | grep -v sha256 | tee SHA256SUMS

clean:
	cargo clean
	rm -rf dist
