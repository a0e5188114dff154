//! Raw bindings to libibumad (rdma-core `libibumad/umad.h`), written by hand
//! for the handful of calls srptd needs: opening a port's umad device,
//! registering MAD agents, sending and receiving 256-byte MADs, and reading
//! port attributes.
//!
//! Layouts are those of rdma-core's `umad.h` (ABI version 5, the only one
//! current kernels speak). The size and offset assertions below fail the
//! build if a field is misplaced; `srptd::rdma::umad` checks `umad_size()`
//! against `sizeof(struct ib_user_mad)` after opening a port (before that,
//! libibumad reports the pre-P_Key-index layout).
//!
//! Nothing here is safe to call directly; `srptd::rdma::umad` wraps it.

use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};

/// `UMAD_CA_NAME_LEN`: size of the CA name buffers in `umad_port_t`.
pub const UMAD_CA_NAME_LEN: usize = 20;
/// `IB_UMAD_ABI_VERSION`.
pub const IB_UMAD_ABI_VERSION: c_int = 5;

/// `struct ib_mad_addr` (`ib_mad_addr_t`): the address a MAD is sent to or
/// was received from. Multi-byte fields marked `be` are big-endian;
/// `pkey_index` is host order.
///
/// The C type holds a `union { uint8_t gid[16]; union umad_gid ib_gid; }`;
/// both members are the same 16 raw bytes, so it is a byte array here.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ib_mad_addr {
    /// Remote QP number (be).
    pub qpn: u32,
    /// Q_Key (be).
    pub qkey: u32,
    /// Destination (send) or source (receive) LID (be).
    pub lid: u16,
    pub sl: u8,
    pub path_bits: u8,
    /// Non-zero when a GRH is to be sent / was received.
    pub grh_present: u8,
    /// Source GID index for sends. `umad_set_grh()` does NOT copy it.
    pub gid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// Destination (send) or source (receive) GID, network byte order.
    pub gid: [u8; 16],
    /// Flow label (be).
    pub flow_label: u32,
    /// P_Key table index (host order).
    pub pkey_index: u16,
    pub reserved: [u8; 6],
}

/// `struct ib_user_mad` without its flexible `data[]` member: what is read
/// from and written to `/dev/infiniband/umadN` precedes the MAD itself.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ib_user_mad {
    pub agent_id: u32,
    /// On receive: 0, or an errno (e.g. `ETIMEDOUT`) when a sent request
    /// comes back unanswered.
    pub status: u32,
    pub timeout_ms: u32,
    pub retries: u32,
    pub length: u32,
    pub addr: ib_mad_addr,
    // uint8_t data[0];
}

/// `umad_port_t`: port attributes read from sysfs by `umad_get_port()`;
/// release with `umad_release_port()` (it frees `pkeys`).
#[repr(C)]
#[derive(Debug)]
pub struct umad_port_t {
    pub ca_name: [c_char; UMAD_CA_NAME_LEN],
    pub portnum: c_int,
    pub base_lid: c_uint,
    pub lmc: c_uint,
    pub sm_lid: c_uint,
    pub sm_sl: c_uint,
    pub state: c_uint,
    pub phys_state: c_uint,
    pub rate: c_uint,
    /// Port capability mask (be).
    pub capmask: u32,
    /// GID 0 subnet prefix (be).
    pub gid_prefix: u64,
    /// Port GUID, GID 0 interface ID (be).
    pub port_guid: u64,
    pub pkeys_size: c_uint,
    /// `pkeys_size` P_Keys in host order, owned by the library.
    pub pkeys: *mut u16,
    pub link_layer: [c_char; UMAD_CA_NAME_LEN],
}

// Layout checks against rdma-core's umad.h (x86_64 / aarch64, LP64).
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<ib_mad_addr>() == 44);
    assert!(offset_of!(ib_mad_addr, lid) == 8);
    assert!(offset_of!(ib_mad_addr, grh_present) == 12);
    assert!(offset_of!(ib_mad_addr, gid_index) == 13);
    assert!(offset_of!(ib_mad_addr, gid) == 16);
    assert!(offset_of!(ib_mad_addr, flow_label) == 32);
    assert!(offset_of!(ib_mad_addr, pkey_index) == 36);
    assert!(size_of::<ib_user_mad>() == 64);
    assert!(offset_of!(ib_user_mad, addr) == 20);
    #[cfg(target_pointer_width = "64")]
    {
        assert!(offset_of!(umad_port_t, capmask) == 52);
        assert!(offset_of!(umad_port_t, gid_prefix) == 56);
        assert!(offset_of!(umad_port_t, pkeys) == 80);
        assert!(offset_of!(umad_port_t, link_layer) == 88);
        assert!(size_of::<umad_port_t>() == 112);
    }
};

/// The `long method_mask[16 / sizeof(long)]` argument of `umad_register`:
/// a 128-bit bitmap, bit `m` set for method `m` (kernel `set_bit` order:
/// bit `m % BITS` of word `m / BITS`).
pub type umad_method_mask = [c_long; 16 / std::mem::size_of::<c_long>()];

#[link(name = "ibumad")]
extern "C" {
    pub fn umad_init() -> c_int;
    pub fn umad_done() -> c_int;

    pub fn umad_get_port(ca_name: *const c_char, portnum: c_int, port: *mut umad_port_t) -> c_int;
    pub fn umad_release_port(port: *mut umad_port_t) -> c_int;

    /// Returns the port's fd (opened `O_RDWR | O_NONBLOCK`) or a negative
    /// errno.
    pub fn umad_open_port(ca_name: *const c_char, portnum: c_int) -> c_int;
    pub fn umad_close_port(portid: c_int) -> c_int;

    pub fn umad_get_mad(umad: *mut c_void) -> *mut c_void;
    pub fn umad_size() -> usize;
    pub fn umad_status(umad: *mut c_void) -> c_int;

    pub fn umad_get_mad_addr(umad: *mut c_void) -> *mut ib_mad_addr;
    /// Copies GID, flow label, hop limit and traffic class from `mad_addr`
    /// (flow label in host order) and sets `grh_present`; NOT `gid_index`.
    pub fn umad_set_grh(umad: *mut c_void, mad_addr: *mut c_void) -> c_int;
    /// `dlid`, `dqp`, `qkey` in host order.
    pub fn umad_set_addr(umad: *mut c_void, dlid: c_int, dqp: c_int, sl: c_int, qkey: c_int) -> c_int;
    pub fn umad_set_pkey(umad: *mut c_void, pkey_index: c_int) -> c_int;
    pub fn umad_get_pkey(umad: *mut c_void) -> c_int;

    /// Writes `umad_size() + length` bytes; `timeout_ms`/`retries` ask the
    /// kernel to wait for (and retransmit until) the matching response.
    pub fn umad_send(
        portid: c_int,
        agentid: c_int,
        umad: *mut c_void,
        length: c_int,
        timeout_ms: c_int,
        retries: c_int,
    ) -> c_int;
    /// Returns the agent id the MAD was received for, or a negative errno
    /// (`-ETIMEDOUT` when `timeout_ms` elapsed; `-EWOULDBLOCK` when
    /// `timeout_ms` is 0 and nothing is queued). `*length` is the MAD
    /// buffer size on input and the received MAD length on output.
    pub fn umad_recv(portid: c_int, umad: *mut c_void, length: *mut c_int, timeout_ms: c_int) -> c_int;
    pub fn umad_poll(portid: c_int, timeout_ms: c_int) -> c_int;
    pub fn umad_get_fd(portid: c_int) -> c_int;

    /// Returns the agent id, or `-EPERM` on any failure (e.g. the class is
    /// already registered by a kernel agent such as ib_srpt).
    pub fn umad_register(
        portid: c_int,
        mgmt_class: c_int,
        mgmt_version: c_int,
        rmpp_version: u8,
        method_mask: *mut c_long,
    ) -> c_int;
    pub fn umad_unregister(portid: c_int, agentid: c_int) -> c_int;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umad_size_is_old_or_new_abi() {
        // libibumad reports the layout without `pkey_index` (56 bytes) until
        // a port has been opened and IB_USER_MAD_ENABLE_PKEY accepted; then
        // `sizeof(struct ib_user_mad)`. srptd::rdma::umad checks for 64
        // after opening.
        // SAFETY: umad_size takes no arguments and only reads a flag.
        let n = unsafe { umad_size() };
        assert!(n == 56 || n == std::mem::size_of::<ib_user_mad>(), "{n}");
    }
}
