//! Live administration: JSON-RPC 2.0 over a Unix socket (as SPDK's
//! `rpc.py` talks to its target), one request per line.
//!
//! - [`rpc`]: the wire format, sans-I/O: a request line parses into a typed
//!   [`rpc::Call`] (or a JSON-RPC error naming the bad field); results and
//!   errors build into response lines.
//! - [`render`]: the tables `srptd ctl` prints from results.
//! - [`prometheus`]: the `stats` result as Prometheus text (`--metrics`).
//! - The server lives in the daemon (`driver::admin`), the client in the
//!   `srptd ctl` subcommand ([`client`]).
//!
//! Methods: `status`, `sessions`, `luns`, `stats`, `session_logout`
//! (`docs/administration.md`).

pub mod client;
pub mod prometheus;
pub mod render;
pub mod rpc;
