//! k8s-hostpath-device-plugin: advertise host paths as Kubernetes extended
//! resources through the kubelet's device-plugin API.
//!
//! # Layout
//!
//! One core that knows the devices, fronts that serve them, and the
//! process around them. Folders show it; no module imports one that
//! imports it back (`tests/integration/layout.rs` checks every level).
//!
//! | module | what | runs on |
//! |---|---|---|
//! | [`core`] | the core: config → resources, discovery, health, IDs, the monitor and each resource's versioned state; no gRPC | `health`, `health-check` threads |
//! | [`deviceplugin`] | the device-plugin front: services, Allocate answers, per-resource servers and owners | grpcio threads, supervisor |
//! | [`dra`] | the DRA front (`api: dra`): names, slices and their publisher, claim preparation with CDI specs, the services and sockets | `dra-publish`, `dra-prepare-*`, grpcio threads |
//! | [`kube`] | the API-server client: synchronous HTTPS (ureq, rustls), JSON, in-cluster or kubeconfig; `events`, Events on the daemon's Node (fed by the logger's event records) | `events` |
//! | [`daemon`] | the supervisor: `run(settings, loaded, control)`, a poll loop that dispatches each event to an owner; `reload` (pure: running + new config → retire / update / add), `fs_events`, `watch` (its inotify), `handover` (pod-resources, its own thread until the node settles), `release` (inotify watches removed before the exit) | main thread, `handover` |
//! | [`cli`] | command line (DESIGN.md §2) | main thread |
//! | `control` | the stop / reload handle and the status board that in-process tests wait on (re-exported by [`daemon`]) | any |
//! | [`kubelet`] | the kubelet protocol's names and constants, once | — |
//! | [`limits`] | the open-file limit: raised at start, estimated by `check` | main thread |
//! | [`retry`] | one backoff with "log once, then debug"; registration retries keyed on the gRPC status code | supervisor |
//! | [`socket`] | socket files: non-blocking liveness probe, temporary bind name linked into place, inode-checked cleanup | supervisor |
//! | [`probe`] | the `probe` command | main thread |
//! | [`logging`] | log lines as text or JSON (`--log-format`), control characters escaped | any |
//! | [`observe`] | `--listen`: `/metrics` (Prometheus text, rendered from the board and each resource's counters) and `/health`, a small poll-driven HTTP server | `http` |
//! | [`policy`] | renders deploy/policy's admission policy from a config | `make policy` |
//! | [`sim`] | a simulated kubelet for tests and `make demo` (feature `sim`, not in the release build) | its own grpcio threads |
//! | [`fuzzing`] | invariant checks shared by the fuzz targets and corpus replay (feature `fuzzing`) | — |
//! | [`api`] | generated protobuf messages (and grpcio stubs with `daemon`) | — |
//! | [`text`] | host text (file names, serials) escaped for logs and `check` | any |
//! | [`util`] | wake-up eventfds, `poll`, bounded `block_on`, poison-tolerant `lock`, Unix-socket channels and percent-encoded gRPC targets | — |
//!
//! `run_command` (module `app`) is the whole program behind `main`. The
//! `daemon` feature (default) brings everything that needs gRPC, inotify
//! and signals; without it the library is the config parser, the Allocate
//! logic and the policy renderer (what the fuzz targets build).

pub mod api;
pub mod cli;
#[cfg(feature = "daemon")]
mod control;
pub mod core;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod deviceplugin;
pub mod dra;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "daemon")]
pub mod kube;
pub mod kubelet;
pub mod limits;
#[cfg(feature = "daemon")]
pub mod logging;
#[cfg(feature = "daemon")]
pub mod observe;
pub mod policy;
#[cfg(feature = "daemon")]
pub mod probe;
#[cfg(feature = "daemon")]
pub mod retry;
#[cfg(feature = "sim")]
pub mod sim;
pub mod socket;
pub mod text;
#[cfg(feature = "daemon")]
pub mod util;

#[cfg(feature = "daemon")]
mod app;
#[cfg(feature = "daemon")]
pub use app::{run_command, Failure};
