//! The DRA front (DESIGN.md B18, PROTOCOL.md §6): the core's devices served
//! through Dynamic Resource Allocation. Being built (issue 21): so far the
//! names it publishes and the CDI specs it writes.
//!
//! | module | what |
//! |---|---|
//! | [`names`] | device names (DNS labels) and pool names from IDs, claim UIDs checked |
//! | [`cdi`] | CDI spec content and files: atomic, never through a link, only ours removed |
//! | `publish` | one pool's ResourceSlices kept equal to it on the API server: no write at rest |
//! | `slices` | a resource's pool: the devices offered, their attributes, ResourceSlice specs |

pub mod cdi;
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
pub mod slices;
