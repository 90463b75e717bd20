//! k8s-hostpath-device-plugin: advertise host paths as Kubernetes extended
//! resources through the kubelet's device-plugin API.
//!
//! # Layout
//!
//! | module | what | runs on |
//! |---|---|---|
//! | [`cli`] | command line (DESIGN.md §2) | main thread |
//! | [`config`] | YAML config, validated into typed resources (§3) | main thread |
//! | [`daemon`] | the supervisor: `run(settings, loaded, control)`, a poll loop that dispatches each event to an owner; reload, stop; never touches a host path | main thread |
//! | `owner` | one resource's owner: state, server, socket, registration in flight, retry timers | supervisor |
//! | `server` | one resource's gRPC server: bound on a private name, linked into place; bulk stop with one grace | supervisor |
//! | `control` | the stop / reload handle and the status board that in-process tests wait on (re-exported by [`daemon`]) | any |
//! | [`plugin`] | DevicePlugin / plugin-watcher Registration services, per-resource versioned state | grpcio completion-queue threads |
//! | [`kubelet`] | the kubelet protocol's names and constants, once | — |
//! | [`limits`] | the open-file limit: raised at start, estimated by `check` | main thread |
//! | [`monitor`] | the health monitor: dispatcher + worker threads own every host-path check and watch; `scan` (full scans within a watch budget, or the single entries events named), `mounts` (which resources a mount change concerns) | `health`, `health-check` threads |
//! | [`discovery`] | devices that come and go: glob patterns, USB from sysfs, groups → devices; `id` (every ID, in one place), `pair` (members by what their wildcards matched), `leaf` (one entry looked at again), `set` (the device set merged over time, slots derived) | `health-check` workers |
//! | [`health`] | host-path checks (typed reasons), resolution inside the host root, OrCreate through directory descriptors | `health-check` workers |
//! | [`reload`] | pure: running resources + new config → retire / update / add | supervisor |
//! | [`retry`] | one backoff with "log once, then debug"; registration retries keyed on the gRPC status code | supervisor |
//! | [`sensitive`] | which host paths are sensitive, by category (B16) | — |
//! | [`socket`] | socket files: non-blocking liveness probe, temporary bind name linked into place, inode-checked cleanup | supervisor |
//! | [`probe`] | the `probe` command | main thread |
//! | [`policy`] | renders deploy/policy's admission policy from a config | `make policy` |
//! | [`sim`] | a simulated kubelet for tests and `make demo` (feature `sim`, not in the release build) | its own grpcio threads |
//! | [`alloc`] | Allocate / preferred-allocation answers, the device list (pure) | grpcio completion-queue threads |
//! | [`fuzzing`] | invariant checks shared by the fuzz targets and corpus replay (feature `fuzzing`) | — |
//! | [`api`] | generated protobuf messages (and grpcio stubs with `daemon`) | — |
//! | [`fs_events`] | pure: a batch of the supervisor's inotify events → what changed (restart, directory, our sockets, config, overflow) | supervisor |
//! | [`watch`] | the supervisor's inotify instance: socket dir, config dir (host paths have the monitor's own) | supervisor |
//! | [`text`] | host text (file names, serials) escaped for logs and `check` | any |
//! | [`util`] | self-pipes, `poll`, bounded `block_on`, poison-tolerant `lock`, Unix-socket channels and percent-encoded gRPC targets | — |
//!
//! `run_command` (module `app`) is the whole program behind `main`. The
//! `daemon` feature (default) brings everything that needs gRPC, inotify
//! and signals; without it the library is the config parser, the Allocate
//! logic and the policy renderer (what the fuzz targets build).

pub mod alloc;
pub mod api;
pub mod cli;
pub mod config;
#[cfg(feature = "daemon")]
mod control;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod discovery;
#[cfg(feature = "daemon")]
pub mod fs_events;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub mod kubelet;
pub mod limits;
#[cfg(feature = "daemon")]
pub mod monitor;
#[cfg(feature = "daemon")]
mod owner;
#[cfg(feature = "daemon")]
pub mod plugin;
pub mod policy;
#[cfg(feature = "daemon")]
pub mod probe;
pub mod reload;
#[cfg(feature = "daemon")]
pub mod retry;
pub mod sensitive;
#[cfg(feature = "daemon")]
mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod socket;
pub mod text;
#[cfg(feature = "daemon")]
pub mod util;
#[cfg(feature = "daemon")]
pub mod watch;

#[cfg(feature = "daemon")]
mod app;
#[cfg(feature = "daemon")]
pub use app::{run_command, Failure};
