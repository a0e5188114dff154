//! InfiniBand Device Management (DevMgt, management class 0x06): what lets
//! initiators and `srp_daemon` discover an SRP target.
//!
//! - [`agent`]: the sans-I/O agent that answers DevMgt Get requests for
//!   ClassPortInfo, IOUnitInfo, IOControllerProfile and ServiceEntries.
//! - [`client`]: the query side: builds the requests srp_daemon sends,
//!   decodes the answers into a [`client::DmReport`], and
//!   [`client::query`] runs it over a umad port.
//!
//! Wire formats are in [`crate::wire::mad`]; umad I/O in
//! [`crate::rdma::umad`]. See `docs/device-management.md`.

pub mod agent;
pub mod client;
#[cfg(test)]
mod fixtures;

pub use agent::{DmAgent, DmConfig};
pub use client::{query, DmReport};
