//! The DRA front (DESIGN.md B18, PROTOCOL.md §6): the core's devices served
//! through Dynamic Resource Allocation, for resources with `api: dra` (or
//! every resource under `--api dra`).
//!
//! | module | what |
//! |---|---|
//! | [`names`] | device names (DNS labels) and pool names from IDs, claim UIDs checked |
//! | [`cdi`] | CDI spec content and files: atomic, never through a link, only ours removed |
//! | [`classes`] | the DeviceClasses of `deploy/dra/`, rendered from a config |
//! | `slices` | a resource's pool: the devices offered, their attributes, ResourceSlice specs |
//! | `publish` | one pool's ResourceSlices kept equal to it on the API server: no write at rest |
//! | `publisher` | the thread that keeps every pool published: coalesced, resynced, retried |
//! | `prepare` | NodePrepareResources / NodeUnprepareResources for one claim |
//! | `service` | the gRPC services: registration, DRAPlugin v1/v1beta1, health v1/v1alpha1 |
//! | `shared` | what the handlers, the workers and the supervisor share |
//! | `front` | the sockets, the server, the workers; what the supervisor holds |

pub mod cdi;
pub mod classes;
#[cfg(feature = "daemon")]
pub(crate) mod front;
pub mod names;
#[cfg(feature = "daemon")]
pub mod prepare;
#[cfg(feature = "daemon")]
pub mod publish;
#[cfg(feature = "daemon")]
pub mod publisher;
#[cfg(feature = "daemon")]
pub mod service;
#[cfg(feature = "daemon")]
pub(crate) mod shared;
#[cfg(feature = "daemon")]
pub mod slices;
