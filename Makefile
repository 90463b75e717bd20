# k8s-hostpath-device-plugin
#
# Every target builds with one cargo configuration (release profile, explicit
# target, static C runtime), so gRPC's C core is compiled once and the tests
# exercise the very binary that ships.

TARGET      ?= x86_64-unknown-linux-gnu
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
export RUSTFLAGS        := -C target-feature=+crt-static
# With pkg-config and libsystemd-dev installed, gRPC's cmake would link
# -lsystemd and the static link fails; keep pkg-config from finding it.
export PKG_CONFIG_LIBDIR := /nonexistent
CARGO_FLAGS := --release --target $(TARGET) --locked
BIN         := target/$(TARGET)/release/k8s-hostpath-device-plugin
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test lint fmt demo release clean

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

# The README's test command: format, lints, unit and integration tests.
test: deps lint
	cargo test $(CARGO_FLAGS) --all-targets

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
	MODE=$(MODE) ./target/$(TARGET)/release/examples/demo

# A stripped binary named with its architecture, and its checksum.
release: build
	mkdir -p dist
	cp $(BIN) dist/k8s-hostpath-device-plugin-$(VERSION)-linux-amd64
	cd dist && sha256sum k8s-hostpath-device-plugin-$(VERSION)-linux-amd64 | tee k8s-hostpath-device-plugin-$(VERSION)-linux-amd64.sha256

clean:
	cargo clean
	rm -rf dist
