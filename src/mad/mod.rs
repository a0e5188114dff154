//! InfiniBand Device Management (DevMgt, management class 0x06): what lets
//! initiators and `srp_daemon` discover an SRP target.
//!
//! - [`agent`]: the sans-I/O agent that answers DevMgt Get requests for
//!   ClassPortInfo, IOUnitInfo, IOControllerProfile and ServiceEntries.
//! - [`query`]: the sans-I/O query side: the requests srp_daemon sends and
//!   how the answers decode into a [`DmReport`]; the error probe table.
//! - [`session`]: the umad I/O that runs a [`DmQuery`] (or the probes) on
//!   a port, for `srptd dm-query`.
//! - [`render`]: what `srptd dm-query` prints: text, raw dump, probe lines
//!   and JSON.
//!
//! Wire formats are in [`crate::wire::mad`]; umad I/O in
//! [`crate::rdma::umad`]. See `docs/device-management.md`.

pub mod agent;
pub mod query;
pub mod render;
pub mod session;

#[cfg(test)]
mod fixtures;

pub use agent::{DmAgent, DmConfig};
pub use query::{DmQuery, DmReport};
