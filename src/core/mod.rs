//! The core: what this node has. The resources the config defines, the
//! devices found for them, their health and stable IDs, and each
//! resource's versioned state. It knows no gRPC and no Kubernetes API:
//! the fronts (the device-plugin front, and the DRA driver) serve what it
//! knows through their own protocol.
//!
//! | module | what | depends on |
//! |---|---|---|
//! | [`glob`] | path patterns: components, captures, matching | — |
//! | [`sensitive`] | which host paths are sensitive, by category (B16) | — |
//! | [`resource`] | what a resource is: the typed values the config yields | `glob` |
//! | [`given`] | what a container is told of the devices it got: env names and lists | — |
//! | [`health`] | host-path checks (typed reasons), resolution inside the host root, OrCreate through directory descriptors | `resource`, `sensitive` |
//! | [`discovery`] | devices that come and go: scans, IDs, pairing, the device set | `resource`, `glob`, `health`, `sensitive` |
//! | [`config`] | the YAML config, validated into resources (§3) | `resource`, `glob`, `discovery`, `health`, `sensitive` |
//! | [`stats`] | what happened to a resource, counted: lock-free counters and histograms the metrics read | — |
//! | `state` | one resource's versioned state: health, devices, streams, its counters | `resource`, `discovery`, `stats` |
//! | `monitor` | the health monitor's threads: every host-path check and watch | `resource`, `discovery`, `health`, `state` |
//!
//! No module here uses one above it in this table (a test checks it).

pub mod config;
pub mod discovery;
pub mod given;
pub mod glob;
pub mod health;
#[cfg(feature = "daemon")]
pub mod monitor;
pub mod resource;
pub mod sensitive;
#[cfg(feature = "daemon")]
pub mod state;
pub mod stats;
