//! Raw bindings used by srptd that `rdma-sys` does not provide safely:
//! the real rdma-core inline verbs through a C shim, libibumad, and
//! librados/librbd (Ceph RBD backstores).
//!
//! Nothing here is safe to call directly; `srptd::rdma` wraps it.
#![allow(non_camel_case_types)]

use std::os::raw::{c_int, c_void};

pub mod rbd;
pub mod umad;

extern "C" {
    pub fn srptd_ibv_post_send(qp: *mut c_void, wr: *mut c_void, bad: *mut *mut c_void) -> c_int;
    pub fn srptd_ibv_post_recv(qp: *mut c_void, wr: *mut c_void, bad: *mut *mut c_void) -> c_int;
    pub fn srptd_ibv_post_srq_recv(srq: *mut c_void, wr: *mut c_void, bad: *mut *mut c_void) -> c_int;
    pub fn srptd_ibv_poll_cq(cq: *mut c_void, n: c_int, wc: *mut c_void) -> c_int;
    pub fn srptd_ibv_req_notify_cq(cq: *mut c_void, solicited_only: c_int) -> c_int;
    pub fn srptd_ibv_query_port(ctx: *mut c_void, port: u8, attr: *mut c_void) -> c_int;
    /// Writes up to `n` sizes/offsets of FFI structs (see shim.c for the
    /// order) and returns how many there are.
    pub fn srptd_abi_layout(out: *mut usize, n: c_int) -> c_int;
}
