//! srptd: a userspace SCSI RDMA Protocol (SRP) target.
//!
//! Layers, from the wire up (see `docs/architecture.md`):
//! - [`wire`]: SRP information units and descriptors as typed structs,
//!   parsed from and built into byte buffers. No state, no I/O.
//! - [`scsi`]: SCSI command emulation for direct-access LUNs, sense data,
//!   LUN tables with access lists, and backstores (RAM, file, block device).
//! - [`proto`]: the sans-I/O SRP channel: login negotiation, credits, the
//!   per-command state machine and descriptor mapping. It consumes events
//!   and emits actions; it never touches hardware.
//! - [`rdma`]: verbs and RDMA/CM wrappers over rdma-core.
//! - [`mem`]: [`mem::DmaBuf`], the memory RDMA hardware reads and writes
//!   (registered buffers, backstore RAM, `O_DIRECT` I/O).
//! - [`os`]: small wrappers over system calls std lacks (hole punching,
//!   `poll(2)`, the TSC).
//! - [`uring`]: a safe io_uring for backstore I/O driven by the pollers.
//! - [`rbd`]: a safe librbd (Ceph RBD images) whose asynchronous
//!   completions the pollers reap.
//! - [`admin`]: the admin socket's JSON-RPC (`srptd ctl`).
//! - [`config`]: the config file and flags, checked into the driver's
//!   options and the SCSI target's configuration.
//! - [`driver`]: the running daemon: RDMA/CM connection management on a
//!   small tokio runtime, channels on poller threads. (Not to be confused
//!   with the SCSI target, `scsi::Target`.)
//!
//! `unsafe` code lives only in `rdma`, `mem`, `os`, `uring` and `rbd` (and `ffi/`).
#![deny(unsafe_code)]

pub mod admin;
pub mod config;
pub mod driver;
pub mod mad;
#[allow(unsafe_code)]
pub mod mem;
#[allow(unsafe_code)]
pub mod os;
pub mod proto;
#[allow(unsafe_code)]
pub mod rbd;
#[allow(unsafe_code)]
pub mod rdma;
pub mod scsi;
#[allow(unsafe_code)]
pub mod uring;
pub mod wire;
