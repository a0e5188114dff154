//! The one place with `unsafe` code: memory that RDMA hardware reads and
//! writes, and the verbs / RDMA/CM wrappers over `rdma-sys` (raw bindgen
//! bindings) and `srptd-ffi` (a C shim calling rdma-core's real static-inline
//! verbs: post send/recv, poll CQ, request notification, query port).
//!
//! # Object graph
//!
//! One file per verbs object. Every child holds an `Arc` of what it depends
//! on, so destruction order is enforced by reference counts:
//!
//! ```text
//! EventChannel <- CmId(inner) <- Context (borrowed from a CM id)
//! Context <- ProtectionDomain <- MemoryRegion (owns Arc<DmaBuf>)
//! Context <- CompletionChannel <- CompletionQueue
//! ProtectionDomain, CompletionQueue(s), [SharedReceiveQueue] <- QueuePair
//! ```
//!
//! Destroy failures are logged with `tracing::error!`, never panicked on.
//!
//! # Unsafe contracts (what the safe API relies on)
//!
//! 1. **Only [`DmaBuf`](crate::mem::DmaBuf) memory is ever registered.**
//!    [`MemoryRegion`] can only be built from an `Arc<DmaBuf>` and keeps it
//!    alive. A `DmaBuf` is never handed out as a long-lived Rust reference;
//!    its bytes are opaque and copied in and out. So whatever the adapter
//!    does with a posted work request - even a stale or wrong one - it can
//!    only change opaque `DmaBuf` bytes, never Rust objects.
//! 2. **Local scatter/gather entries come from a memory region.** An [`Sge`]
//!    is built by [`MemoryRegion::sge`], which checks the range against the
//!    registered buffer, or by the `unsafe` [`Sge::from_raw`]. This is why
//!    [`QueuePair::post_send`], [`QueuePair::post_recv`] and
//!    [`SharedReceiveQueue::post_recv`] are safe functions. Remote
//!    addresses/rkeys name the peer's memory and are protected by the peer's
//!    registration.
//! 3. **Buffer ownership is tracked above this layer.** The sans-I/O layer
//!    must not read a receive buffer, or rewrite a send buffer, between
//!    posting it and polling its completion (see `DmaBuf::with_bytes`).
//!    Breaking that gives wrong bytes, not memory unsafety (point 1).
//!    Deregistering (dropping) a memory region with work still posted makes
//!    that work complete in error.
//! 4. **Events are acknowledged.** RDMA/CM events are copied into a
//!    [`CmEvent`] and acknowledged before [`EventChannel::get_event`]
//!    returns. Completion events are counted per CQ and acknowledged in
//!    batches; the rest are acknowledged before `ibv_destroy_cq` (which
//!    would otherwise block forever).
//! 5. **Thread safety.** libibverbs objects are thread-safe, so contexts,
//!    PDs, MRs, CQs, QPs, SRQs and channels are `Send + Sync`. A [`CmId`] is
//!    `Send` but not `Sync` (librdmacm does not promise concurrent calls on
//!    one id).
//!
//! # Pitfalls (checked on soft-RoCE, kernel 6.1, rdma-core 44)
//!
//! - rdma-sys hand-writes `ibv_send_wr`, `ibv_wc`, `rdma_cm_event` and
//!   others; a unit test compares their layout with the C headers through
//!   the shim. Its `ibv_query_port` binding is the legacy compat symbol:
//!   use [`Context::query_port`] (the shim).
//! - With our own QP, `rdma_init_qp_attr(INIT)` on the active side before
//!   `connect` gives access flags 0; INIT must be re-applied after
//!   `ConnectResponse` (as librdmacm does) or the peer's RDMA READ/WRITE
//!   fails with a remote access error. [`CmId::ready_qp`] does this.
//! - `rdma_init_qp_attr` needs `qp_state` set on input.
//! - The REQ private data arrives padded to 56 bytes.
//! - librdmacm keeps the device context it opened cached for the process
//!   (`rdma resource show` keeps `ctx 1` after every id is gone), and a
//!   driver without `disassociate_ucontext` (rxe) cannot finish removing the
//!   device while it is open: [`Context::retire`] and [`RetiredContext`]
//!   (`release.rs`) let go of it.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;

pub mod cm;
pub mod cq;
pub mod device;
pub mod mr;
pub mod pd;
pub mod qp;
pub mod release;
pub mod srq;
pub mod umad;

pub use cm::{
    CmEvent, CmEventKind, CmId, CmIdHandle, ConnParam, EventChannel, IbAddr, PortSpace, ReceivedConnParam,
};
pub use cq::{CompletionChannel, CompletionQueue, CqEvent, WcOpcode, WcStatus, WorkCompletion};
pub use device::{devices, Context, DeviceAttr, DeviceInfo, Gid, LinkLayer, PortAttr, PortState};
pub use mr::{AccessFlags, MemoryRegion, Sge};
pub use pd::ProtectionDomain;
pub use qp::{
    PostError, QpAttr, QpCaps, QpInit, QpState, QueuePair, RecvRequest, RecvScratch, Remote, SendOp,
    SendRequest, SendScratch,
};
pub use release::{Release, RetiredContext};
pub use srq::SharedReceiveQueue;

/// An error from a verbs or RDMA/CM call: which call, and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A library call failed with an errno.
    #[error("{op}: {source}")]
    Os {
        /// The rdma-core function that failed.
        op: &'static str,
        /// The errno it reported.
        #[source]
        source: io::Error,
    },
    /// An argument was rejected before calling into rdma-core.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// The errno, if the error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            Error::Invalid(_) => Some(libc::EINVAL),
        }
    }

    /// Whether this is `EAGAIN`/`EWOULDBLOCK` (nothing ready on a
    /// non-blocking channel).
    pub fn is_would_block(&self) -> bool {
        self.raw_os_error() == Some(libc::EAGAIN)
    }

    pub(crate) fn errno(op: &'static str, errno: i32) -> Error {
        Error::Os {
            op,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The current `errno`.
    pub(crate) fn last(op: &'static str) -> Error {
        let source = io::Error::last_os_error();
        // Some rdma-core paths return failure without setting errno.
        let source = match source.raw_os_error() {
            Some(0) | None => io::Error::from_raw_os_error(libc::EIO),
            Some(_) => source,
        };
        Error::Os { op, source }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Os { op, source } => io::Error::new(source.kind(), format!("{op}: {source}")),
            Error::Invalid(m) => io::Error::new(io::ErrorKind::InvalidInput, m),
        }
    }
}

/// Result of the RDMA layer.
pub type Result<T> = std::result::Result<T, Error>;

/// Maps the return conventions of rdma-core to a `Result`:
/// - `0`: success;
/// - `-1`: failure with `errno` set (librdmacm, and libibverbs wrappers);
/// - any other negative value: `-errno` (some providers);
/// - a positive value: the errno itself (most `ibv_*` functions: post,
///   modify, query, destroy).
pub(crate) fn check(op: &'static str, rc: i32) -> Result<()> {
    match rc {
        0 => Ok(()),
        -1 => Err(Error::last(op)),
        rc if rc < 0 => Err(Error::errno(op, -rc)),
        rc => Err(Error::errno(op, rc)),
    }
}

/// Puts a file descriptor in non-blocking mode.
pub(crate) fn set_nonblocking(fd: i32, op: &'static str) -> Result<()> {
    // SAFETY: fcntl on an fd owned by a live channel; no memory involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::last(op));
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(Error::last(op));
    }
    Ok(())
}

/// [`wait_readable`] until `deadline`; false once it has passed (`op`
/// names the wait in errors).
pub(crate) fn wait_readable_until(
    fd: BorrowedFd<'_>,
    deadline: std::time::Instant,
    op: &'static str,
) -> Result<bool> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Ok(false);
    }
    crate::os::wait_readable(fd, Some(left)).map_err(|source| Error::Os { op, source })
}

/// Formats a `u64` GUID (host order) as `xxxx:xxxx:xxxx:xxxx`, as sysfs does.
pub fn format_guid(guid: u64) -> String {
    format!(
        "{:04x}:{:04x}:{:04x}:{:04x}",
        (guid >> 48) & 0xffff,
        (guid >> 32) & 0xffff,
        (guid >> 16) & 0xffff,
        guid & 0xffff
    )
}

/// A `Debug` helper printing a pointer as hex.
pub(crate) struct Ptr(pub usize);

impl fmt::Debug for Ptr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping_conventions() {
        assert!(check("x", 0).is_ok());
        assert_eq!(
            check("ibv_post_send", libc::ENOMEM).unwrap_err().raw_os_error(),
            Some(libc::ENOMEM)
        );
        assert_eq!(
            check("prov", -libc::EINVAL).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        // -1 reads errno; force a known one.
        // SAFETY: writing this thread's errno.
        unsafe { *libc::__errno_location() = libc::EAGAIN };
        let e = check("rdma_get_cm_event", -1).unwrap_err();
        assert!(e.is_would_block());
        assert!(e.to_string().starts_with("rdma_get_cm_event: "), "{e}");
        // errno 0 with a failure still gives an error.
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = 0 };
        assert_eq!(check("x", -1).unwrap_err().raw_os_error(), Some(libc::EIO));
        let io: io::Error = Error::errno("ibv_modify_qp", libc::EINVAL).into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn guid_format() {
        assert_eq!(format_guid(0x0000_00ff_fe00_7701), "0000:00ff:fe00:7701");
    }
}

#[cfg(test)]
mod abi_tests {
    use rdma_sys as sys;
    use std::mem::{offset_of, size_of};

    /// rdma-sys hand-writes several structs (send WR, WC, CM event); check
    /// them against the C compiler's view of the installed headers.
    #[test]
    fn rdma_sys_layouts_match_headers() {
        let mut c = [0usize; 16];
        // SAFETY: the buffer has room for 16 entries.
        let n = unsafe { srptd_ffi::srptd_abi_layout(c.as_mut_ptr(), c.len() as i32) };
        assert_eq!(n, 16);
        let rust = [
            size_of::<sys::ibv_send_wr>(),
            offset_of!(sys::ibv_send_wr, wr),
            offset_of!(sys::ibv_send_wr, qp_type),
            size_of::<sys::ibv_recv_wr>(),
            size_of::<sys::ibv_sge>(),
            size_of::<sys::ibv_wc>(),
            offset_of!(sys::ibv_wc, qp_num),
            size_of::<sys::ibv_port_attr>(),
            size_of::<sys::ibv_qp_attr>(),
            size_of::<sys::ibv_qp_init_attr>(),
            size_of::<sys::rdma_cm_event>(),
            offset_of!(sys::rdma_cm_event, param),
            size_of::<sys::rdma_conn_param>(),
            size_of::<sys::rdma_cm_id>(),
            size_of::<super::cm::SockaddrIb>(),
            offset_of!(super::cm::SockaddrIb, sib_sid),
        ];
        assert_eq!(rust, c);
    }
}
