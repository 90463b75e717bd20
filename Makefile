# k8s-hostpath-device-plugin
#
# Every target builds with one cargo configuration (release profile, explicit
# target, static C runtime), so gRPC's C core is compiled once and the tests
# exercise the very binary that ships.

VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The architecture of `make static` / `make release`: amd64 (the host).
ARCH        ?= amd64
TARGET      := x86_64-unknown-linux-gnu
export RUSTFLAGS        := -C target-feature=+crt-static
# With pkg-config and libsystemd-dev installed, gRPC's cmake would link
# -lsystemd and the static link fails; keep pkg-config from finding it.
export PKG_CONFIG_LIBDIR := /nonexistent
CARGO_FLAGS := --release --target $(TARGET) --locked
OUT         := target/$(TARGET)/release
BIN         := $(OUT)/k8s-hostpath-device-plugin
IMAGE       ?= k8s-hostpath-device-plugin:$(VERSION)
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build static test unit-test soak-short deploy-test lint fmt demo bench soak policy image release clean

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

# The static, stripped binary at dist/k8s-hostpath-device-plugin
# (what Dockerfile.distroless copies into the image).
static: build
	@[ "$(ARCH)" = amd64 ] || { echo "ARCH=$(ARCH): only amd64 is supported"; exit 2; }
	mkdir -p dist
	cp $(BIN) dist/k8s-hostpath-device-plugin
	@ls -l dist/k8s-hostpath-device-plugin

# The README's test command: format, lints, unit and integration tests,
# and the deployment checks.
test: lint unit-test soak-short deploy-test

unit-test: deps
	cargo test $(CARGO_FLAGS) --all-targets

soak-short: deps
	cargo build $(CARGO_FLAGS) --bins --examples
	./$(OUT)/examples/soak --short

# Figures against the targets (README "Performance"); writes target/bench.json.
bench: deps
	cargo build $(CARGO_FLAGS) --bins --examples
	./$(OUT)/examples/bench

# The full soak: 1000 kubelet restarts, 200 reloads, 1000 flaps, Allocate load.
soak: deps
	cargo build $(CARGO_FLAGS) --bins --examples
	./$(OUT)/examples/soak

deploy-test: deps
	cargo build $(CARGO_FLAGS) --bins --examples
	tests/deploy/checks.sh $(BIN) $(OUT)/examples/gen_policy

lint: deps
	cargo fmt --all -- --check
	cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings

fmt:
	cargo fmt --all

# The README's first command: the daemon against the simulated kubelet.
# MODE=plugin-watcher registers through the plugins registry instead.
MODE ?= kubelet-socket
demo: deps
	cargo build $(CARGO_FLAGS) --bins --examples
	MODE=$(MODE) ./$(OUT)/examples/demo

# Regenerates deploy/policy/policy.yaml from deploy/config.yaml.
policy: deps
	cargo build $(CARGO_FLAGS) --examples
	./$(OUT)/examples/gen_policy deploy/config.yaml > deploy/policy/policy.yaml

# Needs a Docker engine (none runs on the project's build machines).
image:
	docker build -f Dockerfile.distroless -t $(IMAGE) .

# Binaries named with their architecture, and their checksums.
release: static
	cp dist/k8s-hostpath-device-plugin dist/k8s-hostpath-device-plugin-$(VERSION)-linux-$(ARCH)
	cd dist && sha256sum k8s-hostpath-device-plugin-$(VERSION)-linux-$(ARCH) | tee k8s-hostpath-device-plugin-$(VERSION)-linux-$(ARCH).sha256

clean:
	cargo clean
	rm -rf dist
