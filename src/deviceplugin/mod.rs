//! The device-plugin front: each resource served to the kubelet through
//! the device-plugin API (PROTOCOL.md §2–3), from the core's state.
//!
//! | module | what | runs on |
//! |---|---|---|
//! | [`alloc`] | Allocate / preferred-allocation answers, the device list (pure) | grpcio completion-queue threads |
//! | `service` | the DevicePlugin and plugin-watcher Registration services | grpcio completion-queue threads |
//! | `server` | one resource's gRPC server: bound on a private name, linked into place; bulk stop with one grace | supervisor |
//! | `owner` | one resource's owner: state, server, socket, registration in flight, retry timers | supervisor |

pub mod alloc;
#[cfg(feature = "daemon")]
pub(crate) mod owner;
#[cfg(feature = "daemon")]
pub(crate) mod server;
#[cfg(feature = "daemon")]
pub mod service;
