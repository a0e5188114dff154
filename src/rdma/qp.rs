//! Reliable-connected queue pairs: creation, state transitions, posting.
//!
//! Posting is safe (see the module contracts in [`crate::rdma`]): local
//! buffers are [`Sge`]s, which come from [`MemoryRegion::sge`](super::MemoryRegion::sge)
//! over registered `DmaBuf`s. Work requests are chained into one
//! `ibv_post_send`/`ibv_post_recv` call in a caller-owned scratch area
//! ([`SendScratch`], [`RecvScratch`]) that is reused, so posting does not
//! allocate once the scratch has grown to the largest batch.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys as sys;

use super::cq::CompletionQueue;
use super::mr::{AccessFlags, Sge};
use super::pd::ProtectionDomain;
use super::srq::SharedReceiveQueue;
use super::{check, Error, Result};

/// Queue pair capacities (requested, then actual).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QpCaps {
    /// Outstanding send-queue work requests.
    pub max_send_wr: u32,
    /// Outstanding receive work requests (ignored with an SRQ).
    pub max_recv_wr: u32,
    /// Scatter/gather entries per send-queue request.
    pub max_send_sge: u32,
    /// Scatter/gather entries per receive request.
    pub max_recv_sge: u32,
    /// Bytes that can be sent inline.
    pub max_inline_data: u32,
}

impl QpCaps {
    fn to_sys(self) -> sys::ibv_qp_cap {
        sys::ibv_qp_cap {
            max_send_wr: self.max_send_wr,
            max_recv_wr: self.max_recv_wr,
            max_send_sge: self.max_send_sge,
            max_recv_sge: self.max_recv_sge,
            max_inline_data: self.max_inline_data,
        }
    }

    fn from_sys(c: &sys::ibv_qp_cap) -> QpCaps {
        QpCaps {
            max_send_wr: c.max_send_wr,
            max_recv_wr: c.max_recv_wr,
            max_send_sge: c.max_send_sge,
            max_recv_sge: c.max_recv_sge,
            max_inline_data: c.max_inline_data,
        }
    }
}

/// What a queue pair is created with.
#[derive(Debug, Clone)]
pub struct QpInit<'a> {
    /// Completions of the send queue.
    pub send_cq: &'a Arc<CompletionQueue>,
    /// Completions of receives.
    pub recv_cq: &'a Arc<CompletionQueue>,
    /// Take receives from this shared receive queue.
    pub srq: Option<&'a Arc<SharedReceiveQueue>>,
    /// Capacities.
    pub caps: QpCaps,
    /// Signal every send-queue request, whatever its `signaled` flag.
    pub sq_sig_all: bool,
}

/// QP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum QpState {
    Reset,
    Init,
    Rtr,
    Rts,
    Sqd,
    Sqe,
    Error,
    Unknown(u32),
}

impl QpState {
    fn to_raw(self) -> u32 {
        use sys::ibv_qp_state::*;
        match self {
            QpState::Reset => IBV_QPS_RESET,
            QpState::Init => IBV_QPS_INIT,
            QpState::Rtr => IBV_QPS_RTR,
            QpState::Rts => IBV_QPS_RTS,
            QpState::Sqd => IBV_QPS_SQD,
            QpState::Sqe => IBV_QPS_SQE,
            QpState::Error => IBV_QPS_ERR,
            QpState::Unknown(v) => v,
        }
    }

    fn from_raw(v: u32) -> QpState {
        use sys::ibv_qp_state::*;
        match v {
            IBV_QPS_RESET => QpState::Reset,
            IBV_QPS_INIT => QpState::Init,
            IBV_QPS_RTR => QpState::Rtr,
            IBV_QPS_RTS => QpState::Rts,
            IBV_QPS_SQD => QpState::Sqd,
            IBV_QPS_SQE => QpState::Sqe,
            IBV_QPS_ERR => QpState::Error,
            v => QpState::Unknown(v),
        }
    }
}

/// Attributes for [`QueuePair::modify`]: an `ibv_qp_attr` and the mask of
/// fields that are set. Normally produced by
/// [`CmId::init_qp_attr`](super::CmId::init_qp_attr) and adjusted with the
/// setters.
pub struct QpAttr {
    pub(crate) attr: sys::ibv_qp_attr,
    pub(crate) mask: u32,
}

impl Clone for QpAttr {
    fn clone(&self) -> QpAttr {
        // SAFETY: ibv_qp_attr is plain data (integers, no pointers).
        let attr = unsafe { std::ptr::read(&self.attr) };
        QpAttr {
            attr,
            mask: self.mask,
        }
    }
}

impl fmt::Debug for QpAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QpAttr")
            .field("state", &self.state())
            .field("mask", &format_args!("{:#x}", self.mask))
            .field("dest_qp_num", &self.attr.dest_qp_num)
            .field("path_mtu", &self.attr.path_mtu)
            .field("max_rd_atomic", &self.attr.max_rd_atomic)
            .field("max_dest_rd_atomic", &self.attr.max_dest_rd_atomic)
            .finish_non_exhaustive()
    }
}

macro_rules! attr_setter {
    ($(#[$m:meta])* $name:ident, $field:ident, $ty:ty, $flag:ident) => {
        $(#[$m])*
        pub fn $name(&mut self, v: $ty) -> &mut Self {
            self.attr.$field = v;
            self.mask |= sys::ibv_qp_attr_mask::$flag.0;
            self
        }
    };
}

impl QpAttr {
    /// Attributes with only the target state set.
    pub fn new(state: QpState) -> QpAttr {
        // SAFETY: ibv_qp_attr is plain integers; all-zero is valid.
        let mut attr: sys::ibv_qp_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        attr.qp_state = state.to_raw();
        QpAttr {
            attr,
            mask: sys::ibv_qp_attr_mask::IBV_QP_STATE.0,
        }
    }

    /// The target state.
    pub fn state(&self) -> QpState {
        QpState::from_raw(self.attr.qp_state)
    }

    /// The raw `ibv_qp_attr_mask`.
    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// Destination QP number (set for RTR).
    pub fn dest_qp_num(&self) -> u32 {
        self.attr.dest_qp_num
    }

    /// `max_dest_rd_atomic` (RTR: RDMA READs the peer may have outstanding
    /// against us).
    pub fn max_dest_rd_atomic(&self) -> u8 {
        self.attr.max_dest_rd_atomic
    }

    /// `max_rd_atomic` (RTS: RDMA READs we may have outstanding).
    pub fn max_rd_atomic(&self) -> u8 {
        self.attr.max_rd_atomic
    }

    attr_setter!(
        /// Sets `max_dest_rd_atomic` (responder resources), for RTR.
        set_max_dest_rd_atomic, max_dest_rd_atomic, u8, IBV_QP_MAX_DEST_RD_ATOMIC
    );
    attr_setter!(
        /// Sets `max_rd_atomic` (initiator depth), for RTS.
        set_max_rd_atomic, max_rd_atomic, u8, IBV_QP_MAX_QP_RD_ATOMIC
    );
    attr_setter!(
        /// Sets the minimum RNR NAK timer (RTR).
        set_min_rnr_timer, min_rnr_timer, u8, IBV_QP_MIN_RNR_TIMER
    );
    attr_setter!(
        /// Sets the local ACK timeout (RTS).
        set_timeout, timeout, u8, IBV_QP_TIMEOUT
    );
    attr_setter!(
        /// Sets the transport retry count (RTS).
        set_retry_cnt, retry_cnt, u8, IBV_QP_RETRY_CNT
    );
    attr_setter!(
        /// Sets the RNR retry count (RTS; 7 = infinite).
        set_rnr_retry, rnr_retry, u8, IBV_QP_RNR_RETRY
    );

    /// Sets the remote access rights of the QP (INIT).
    pub fn set_access(&mut self, access: AccessFlags) -> &mut Self {
        self.attr.qp_access_flags = access.bits();
        self.mask |= sys::ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS.0;
        self
    }
}

/// A reliable-connected queue pair created by us (`ibv_create_qp`).
pub struct QueuePair {
    qp: NonNull<sys::ibv_qp>,
    qp_num: u32,
    caps: QpCaps,
    // Dropped after the QP (field order is irrelevant: Drop runs first).
    pd: Arc<ProtectionDomain>,
    send_cq: Arc<CompletionQueue>,
    recv_cq: Arc<CompletionQueue>,
    srq: Option<Arc<SharedReceiveQueue>>,
}

// SAFETY: libibverbs QPs are thread-safe; providers lock the queues.
unsafe impl Send for QueuePair {}
// SAFETY: as above.
unsafe impl Sync for QueuePair {}

impl fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePair")
            .field("qp_num", &self.qp_num)
            .field("caps", &self.caps)
            .field("srq", &self.srq.is_some())
            .finish()
    }
}

/// A failed post: requests before `posted` were posted and will complete;
/// the rest were not.
#[derive(Debug, thiserror::Error)]
#[error("posted {posted} work requests, then {error}")]
pub struct PostError {
    /// Index of the first request that was not posted.
    pub posted: usize,
    /// Why.
    #[source]
    pub error: Error,
}

impl QueuePair {
    /// Creates an RC queue pair in `pd` (state RESET).
    pub fn new_rc(pd: &Arc<ProtectionDomain>, init: &QpInit<'_>) -> Result<QueuePair> {
        let ctx = pd.context();
        if !init.send_cq.context().same_context(ctx) || !init.recv_cq.context().same_context(ctx) {
            return Err(Error::Invalid("CQ of another device context"));
        }
        if let Some(srq) = init.srq {
            if !Arc::ptr_eq(srq.pd(), pd) {
                return Err(Error::Invalid("SRQ of another protection domain"));
            }
        }
        // SAFETY: plain struct; all-zero is valid (null pointers).
        let mut a: sys::ibv_qp_init_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        a.send_cq = init.send_cq.as_ptr();
        a.recv_cq = init.recv_cq.as_ptr();
        a.srq = init.srq.map_or(std::ptr::null_mut(), |s| s.as_ptr());
        a.cap = init.caps.to_sys();
        a.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
        a.sq_sig_all = init.sq_sig_all as i32;
        // SAFETY: valid PD, CQs and SRQ (kept alive by the Arcs stored
        // below); `a` is a valid init struct the call may update (caps).
        let qp = unsafe { sys::ibv_create_qp(pd.as_ptr(), &mut a) };
        let qp = NonNull::new(qp).ok_or_else(|| Error::last("ibv_create_qp"))?;
        // SAFETY: valid QP; qp_num is immutable.
        let qp_num = unsafe { (*qp.as_ptr()).qp_num };
        Ok(QueuePair {
            qp,
            qp_num,
            caps: QpCaps::from_sys(&a.cap),
            pd: pd.clone(),
            send_cq: init.send_cq.clone(),
            recv_cq: init.recv_cq.clone(),
            srq: init.srq.cloned(),
        })
    }

    /// The QP number.
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// Actual capacities.
    pub fn caps(&self) -> QpCaps {
        self.caps
    }

    /// The protection domain.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// The send CQ.
    pub fn send_cq(&self) -> &Arc<CompletionQueue> {
        &self.send_cq
    }

    /// The receive CQ.
    pub fn recv_cq(&self) -> &Arc<CompletionQueue> {
        &self.recv_cq
    }

    /// The shared receive queue, if any.
    pub fn srq(&self) -> Option<&Arc<SharedReceiveQueue>> {
        self.srq.as_ref()
    }

    /// Applies `attr` (`ibv_modify_qp`).
    pub fn modify(&self, attr: &QpAttr) -> Result<()> {
        let a = &attr.attr as *const sys::ibv_qp_attr as *mut sys::ibv_qp_attr;
        // SAFETY: valid QP; ibv_modify_qp only reads the attr struct.
        let rc = unsafe { sys::ibv_modify_qp(self.qp.as_ptr(), a, attr.mask as i32) };
        check("ibv_modify_qp", rc)
    }

    /// Moves the QP to the error state: outstanding requests are flushed
    /// with [`WcStatus::WR_FLUSH_ERR`](super::WcStatus::WR_FLUSH_ERR).
    pub fn to_error(&self) -> Result<()> {
        self.modify(&QpAttr::new(QpState::Error))
    }

    /// The current state (`ibv_query_qp`).
    pub fn state(&self) -> Result<QpState> {
        // SAFETY: plain structs; zero is valid.
        let mut a: sys::ibv_qp_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: as above.
        let mut i: sys::ibv_qp_init_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: valid QP and out-structs.
        let rc = unsafe {
            sys::ibv_query_qp(
                self.qp.as_ptr(),
                &mut a,
                sys::ibv_qp_attr_mask::IBV_QP_STATE.0 as i32,
                &mut i,
            )
        };
        check("ibv_query_qp", rc)?;
        Ok(QpState::from_raw(a.qp_state))
    }

    /// Posts `wrs` to the send queue in one call.
    pub fn post_send(
        &self,
        wrs: &[SendRequest<'_>],
        scratch: &mut SendScratch,
    ) -> std::result::Result<(), PostError> {
        scratch.post("ibv_post_send", wrs, |head, bad| {
            // SAFETY: valid QP; `head` is a well-formed chain in `scratch`
            // whose sg lists point at its sges, alive for the call. Every
            // Sge names registered DmaBuf memory (module contract 2).
            unsafe { srptd_ffi::srptd_ibv_post_send(self.qp.as_ptr().cast(), head.cast(), bad.cast()) }
        })
    }

    /// Posts `wrs` to the receive queue in one call (not with an SRQ).
    pub fn post_recv(
        &self,
        wrs: &[RecvRequest<'_>],
        scratch: &mut RecvScratch,
    ) -> std::result::Result<(), PostError> {
        if self.srq.is_some() && !wrs.is_empty() {
            return Err(PostError {
                posted: 0,
                error: Error::Invalid("QP uses an SRQ: post to the SRQ"),
            });
        }
        scratch.post("ibv_post_recv", wrs, |head, bad| {
            // SAFETY: as in post_send.
            unsafe { srptd_ffi::srptd_ibv_post_recv(self.qp.as_ptr().cast(), head.cast(), bad.cast()) }
        })
    }
}

/// Maps a post return code and `bad_wr` to how many requests were posted.
fn post_result<T>(
    op: &'static str,
    rc: i32,
    head: *mut T,
    bad: *mut T,
    n: usize,
) -> std::result::Result<(), PostError> {
    if rc == 0 {
        return Ok(());
    }
    let posted = if bad.is_null() {
        0
    } else {
        ((bad as usize).wrapping_sub(head as usize) / std::mem::size_of::<T>()).min(n)
    };
    let error = match check(op, rc) {
        Err(e) => e,
        Ok(()) => Error::errno(op, libc::EIO),
    };
    Err(PostError { posted, error })
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once. Outstanding work requests
        // are discarded; their buffers are DmaBufs (module contract 1).
        let rc = unsafe { sys::ibv_destroy_qp(self.qp.as_ptr()) };
        if let Err(e) = check("ibv_destroy_qp", rc) {
            tracing::error!("qp {}: {e}", self.qp_num);
        }
    }
}

/// The remote side of an RDMA READ/WRITE: address and rkey in the peer's
/// memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// Remote virtual address.
    pub addr: u64,
    /// Remote key.
    pub rkey: u32,
}

/// The operation of a send-queue request. Immediate data is in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// SEND: the peer receives into a posted receive.
    Send,
    /// SEND with immediate data.
    SendWithImm(u32),
    /// SEND that invalidates the given rkey at the peer.
    SendWithInv(u32),
    /// RDMA WRITE of the local entries to `Remote`.
    RdmaWrite(Remote),
    /// RDMA WRITE with immediate data (consumes a receive at the peer).
    RdmaWriteWithImm(Remote, u32),
    /// RDMA READ from `Remote` into the local entries.
    RdmaRead(Remote),
}

/// A send-queue work request.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    /// Returned in the completion.
    pub wr_id: u64,
    /// What to do.
    pub op: SendOp,
    /// Local buffers (gathered for sends/writes, scattered for reads).
    pub local: &'a [Sge],
    /// Generate a completion even if the QP is not `sq_sig_all`.
    pub signaled: bool,
    /// Ask the peer for a solicited event (SEND).
    pub solicited: bool,
    /// Wait for prior RDMA READs to finish first.
    pub fence: bool,
    /// Copy the data into the request at post time (small sends).
    pub inline: bool,
}

impl<'a> SendRequest<'a> {
    /// A signaled request with no flags.
    pub fn new(wr_id: u64, op: SendOp, local: &'a [Sge]) -> SendRequest<'a> {
        SendRequest {
            wr_id,
            op,
            local,
            signaled: true,
            solicited: false,
            fence: false,
            inline: false,
        }
    }

    /// Sets `signaled`.
    pub fn signaled(mut self, on: bool) -> Self {
        self.signaled = on;
        self
    }

    /// Sets `solicited`.
    pub fn solicited(mut self, on: bool) -> Self {
        self.solicited = on;
        self
    }

    /// Sets `fence`.
    pub fn fence(mut self, on: bool) -> Self {
        self.fence = on;
        self
    }

    /// Sets `inline`.
    pub fn inline(mut self, on: bool) -> Self {
        self.inline = on;
        self
    }

    fn fill(&self, wr: &mut sys::ibv_send_wr) {
        use sys::ibv_wr_opcode::*;
        let (opcode, remote, imm) = match self.op {
            SendOp::Send => (IBV_WR_SEND, None, None),
            SendOp::SendWithImm(i) => (IBV_WR_SEND_WITH_IMM, None, Some(i.to_be())),
            SendOp::SendWithInv(rkey) => (IBV_WR_SEND_WITH_INV, None, Some(rkey)),
            SendOp::RdmaWrite(r) => (IBV_WR_RDMA_WRITE, Some(r), None),
            SendOp::RdmaWriteWithImm(r, i) => (IBV_WR_RDMA_WRITE_WITH_IMM, Some(r), Some(i.to_be())),
            SendOp::RdmaRead(r) => (IBV_WR_RDMA_READ, Some(r), None),
        };
        wr.wr_id = self.wr_id;
        wr.opcode = opcode;
        let f = |on: bool, flag: sys::ibv_send_flags| if on { flag.0 } else { 0 };
        wr.send_flags = f(self.signaled, sys::ibv_send_flags::IBV_SEND_SIGNALED)
            | f(self.solicited, sys::ibv_send_flags::IBV_SEND_SOLICITED)
            | f(self.fence, sys::ibv_send_flags::IBV_SEND_FENCE)
            | f(self.inline, sys::ibv_send_flags::IBV_SEND_INLINE);
        if let Some(imm) = imm {
            wr.imm_data_invalidated_rkey_union.imm_data = imm;
        }
        if let Some(r) = remote {
            wr.wr.rdma = sys::rdma_t {
                remote_addr: r.addr,
                rkey: r.rkey,
            };
        }
    }
}

/// A receive work request.
#[derive(Debug, Clone, Copy)]
pub struct RecvRequest<'a> {
    /// Returned in the completion.
    pub wr_id: u64,
    /// Buffers to scatter the received message into.
    pub local: &'a [Sge],
}

/// A raw work request that can be chained (`ibv_send_wr`, `ibv_recv_wr`).
pub trait RawWr: Sized {
    /// Points the request at `n` scatter/gather entries.
    fn set_sg_list(&mut self, sg: *mut sys::ibv_sge, n: i32);
    fn set_next(&mut self, next: *mut Self);
}

impl RawWr for sys::ibv_send_wr {
    fn set_sg_list(&mut self, sg: *mut sys::ibv_sge, n: i32) {
        self.sg_list = sg;
        self.num_sge = n;
    }
    fn set_next(&mut self, next: *mut Self) {
        self.next = next;
    }
}

impl RawWr for sys::ibv_recv_wr {
    fn set_sg_list(&mut self, sg: *mut sys::ibv_sge, n: i32) {
        self.sg_list = sg;
        self.num_sge = n;
    }
    fn set_next(&mut self, next: *mut Self) {
        self.next = next;
    }
}

/// A safe work request that becomes a [`RawWr`] of type `W`.
pub(crate) trait ToRawWr<W> {
    /// The request without its scatter/gather list and link.
    fn to_raw(&self) -> W;
    fn local(&self) -> &[Sge];
}

impl ToRawWr<sys::ibv_send_wr> for SendRequest<'_> {
    fn to_raw(&self) -> sys::ibv_send_wr {
        // SAFETY: plain struct of integers, pointers and unions of those.
        let mut wr: sys::ibv_send_wr = unsafe { MaybeUninit::zeroed().assume_init() };
        self.fill(&mut wr);
        wr
    }
    fn local(&self) -> &[Sge] {
        self.local
    }
}

impl ToRawWr<sys::ibv_recv_wr> for RecvRequest<'_> {
    fn to_raw(&self) -> sys::ibv_recv_wr {
        sys::ibv_recv_wr {
            wr_id: self.wr_id,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
        }
    }
    fn local(&self) -> &[Sge] {
        self.local
    }
}

/// Reusable memory in which work requests are chained for one post; empty
/// between posts. [`SendScratch`] for send queues, [`RecvScratch`] for
/// receive queues and SRQs.
pub struct WrChain<W> {
    wrs: Vec<W>,
    sges: Vec<sys::ibv_sge>,
}

/// Chains send work requests ([`QueuePair::post_send`]).
pub type SendScratch = WrChain<sys::ibv_send_wr>;
/// Chains receive work requests ([`QueuePair::post_recv`],
/// [`SharedReceiveQueue::post_recv`](super::SharedReceiveQueue::post_recv)).
pub type RecvScratch = WrChain<sys::ibv_recv_wr>;

// SAFETY: the vectors are empty between calls (cleared after each post), so
// no raw pointer in them is ever observed from another thread.
unsafe impl<W> Send for WrChain<W> {}
// SAFETY: shared references give no access to the contents.
unsafe impl<W> Sync for WrChain<W> {}

impl<W> fmt::Debug for WrChain<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrChain")
            .field("wr_capacity", &self.wrs.capacity())
            .field("sge_capacity", &self.sges.capacity())
            .finish()
    }
}

impl<W: RawWr> WrChain<W> {
    /// Room for `wrs` requests and `sges` entries in all; grows if a post
    /// needs more.
    pub fn with_capacity(wrs: usize, sges: usize) -> WrChain<W> {
        WrChain {
            wrs: Vec::with_capacity(wrs),
            sges: Vec::with_capacity(sges),
        }
    }

    /// Builds the chain; returns its head. Pointers stay valid until the
    /// next mutation of `self`.
    fn build<R: ToRawWr<W>>(&mut self, reqs: &[R]) -> *mut W {
        // Empty: `post` clears after every use.
        debug_assert!(self.wrs.is_empty() && self.sges.is_empty());
        let nsge: usize = reqs.iter().map(|r| r.local().len()).sum();
        self.sges.reserve(nsge);
        self.wrs.reserve(reqs.len());
        for r in reqs {
            self.sges.extend(r.local().iter().map(|s| s.to_sys()));
        }
        // No more pushes to `sges`: pointers into it are stable now.
        let base = self.sges.as_mut_ptr();
        let mut off = 0usize;
        for r in reqs {
            let mut wr = r.to_raw();
            let n = r.local().len();
            let sg = if n == 0 {
                std::ptr::null_mut()
            } else {
                // SAFETY: off + n <= nsge entries pushed above.
                unsafe { base.add(off) }
            };
            wr.set_sg_list(sg, n as i32);
            off += n;
            self.wrs.push(wr);
        }
        link(&mut self.wrs, |w, next| w.set_next(next))
    }

    /// Chains `reqs` and hands the head and the `bad_wr` out-pointer to
    /// `post` (the `ibv_post_*` call); maps its result. `op` names it in
    /// errors.
    pub(crate) fn post<R: ToRawWr<W>>(
        &mut self,
        op: &'static str,
        reqs: &[R],
        post: impl FnOnce(*mut W, *mut *mut W) -> i32,
    ) -> std::result::Result<(), PostError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let head = self.build(reqs);
        let mut bad: *mut W = std::ptr::null_mut();
        let rc = post(head, &mut bad);
        let r = post_result(op, rc, head, bad, reqs.len());
        self.clear();
        r
    }

    fn clear(&mut self) {
        self.wrs.clear();
        self.sges.clear();
    }
}

/// Links `v[i].next = &v[i+1]`, last to null; returns `&v[0]`.
fn link<T>(v: &mut [T], set: impl Fn(&mut T, *mut T)) -> *mut T {
    let base = v.as_mut_ptr();
    let n = v.len();
    for (i, w) in v.iter_mut().enumerate() {
        let next = if i + 1 < n {
            // SAFETY: i + 1 < n is inside the slice.
            unsafe { base.add(i + 1) }
        } else {
            std::ptr::null_mut()
        };
        set(w, next);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sge(addr: u64, len: u32) -> Sge {
        // SAFETY: never posted.
        unsafe { Sge::from_raw(addr, len, 0x42) }
    }

    #[test]
    fn send_chain_layout() {
        let a = [sge(0x1000, 64)];
        let b = [sge(0x2000, 4096), sge(0x4000, 512)];
        let remote = Remote {
            addr: 0xdead_0000,
            rkey: 0x77,
        };
        let reqs = [
            SendRequest::new(1, SendOp::RdmaRead(remote), &b).signaled(false),
            SendRequest::new(2, SendOp::RdmaWrite(remote), &b)
                .signaled(false)
                .fence(true),
            SendRequest::new(3, SendOp::SendWithImm(0x0102_0304), &a).solicited(true),
            SendRequest::new(4, SendOp::Send, &[]).inline(true),
        ];
        let mut s = SendScratch::with_capacity(2, 2);
        let head = s.build(&reqs);
        let mut p = head;
        let mut seen = Vec::new();
        while !p.is_null() {
            // SAFETY: the chain lives in `s`, unchanged since build.
            let w = unsafe { &*p };
            let sg: Vec<(u64, u32, u32)> = (0..w.num_sge as usize)
                // SAFETY: sg_list has num_sge entries.
                .map(|i| unsafe { *w.sg_list.add(i) })
                .map(|g| (g.addr, g.length, g.lkey))
                .collect();
            seen.push((w.wr_id, w.opcode, w.send_flags, sg));
            if matches!(
                w.opcode,
                sys::ibv_wr_opcode::IBV_WR_RDMA_READ | sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE
            ) {
                // SAFETY: rdma member set for these opcodes.
                let r = unsafe { w.wr.rdma };
                assert_eq!((r.remote_addr, r.rkey), (0xdead_0000, 0x77));
            }
            if w.opcode == sys::ibv_wr_opcode::IBV_WR_SEND_WITH_IMM {
                // SAFETY: imm member set for this opcode.
                let imm = unsafe { w.imm_data_invalidated_rkey_union.imm_data };
                assert_eq!(imm, 0x0102_0304u32.to_be());
            }
            p = w.next;
        }
        use sys::ibv_send_flags as F;
        use sys::ibv_wr_opcode::*;
        let two = vec![(0x2000, 4096, 0x42), (0x4000, 512, 0x42)];
        assert_eq!(
            seen,
            vec![
                (1, IBV_WR_RDMA_READ, 0, two.clone()),
                (2, IBV_WR_RDMA_WRITE, F::IBV_SEND_FENCE.0, two),
                (
                    3,
                    IBV_WR_SEND_WITH_IMM,
                    F::IBV_SEND_SIGNALED.0 | F::IBV_SEND_SOLICITED.0,
                    vec![(0x1000, 64, 0x42)]
                ),
                (
                    4,
                    IBV_WR_SEND,
                    F::IBV_SEND_SIGNALED.0 | F::IBV_SEND_INLINE.0,
                    vec![]
                ),
            ]
        );
        // Reuse without reallocation once grown.
        s.clear();
        let cap = (s.wrs.capacity(), s.sges.capacity());
        s.build(&reqs);
        assert_eq!(cap, (s.wrs.capacity(), s.sges.capacity()));
    }

    #[test]
    fn recv_chain_layout() {
        let a = [sge(0x1000, 64)];
        let b = [sge(0x2000, 128), sge(0x3000, 128)];
        let reqs = [
            RecvRequest { wr_id: 10, local: &a },
            RecvRequest { wr_id: 11, local: &b },
        ];
        let mut s = RecvScratch::with_capacity(0, 0);
        let head = s.build(&reqs);
        // SAFETY: chain in `s`.
        let (w0, w1) = unsafe { (&*head, &*(*head).next) };
        assert_eq!((w0.wr_id, w0.num_sge, w1.wr_id, w1.num_sge), (10, 1, 11, 2));
        assert!(w1.next.is_null());
        // SAFETY: two entries.
        assert_eq!(unsafe { (*w1.sg_list.add(1)).addr }, 0x3000);
    }

    #[test]
    fn bad_wr_maps_to_index() {
        let mut v = [0u64; 4];
        let head = v.as_mut_ptr();
        // SAFETY: inside the array.
        let bad = unsafe { head.add(2) };
        let e = post_result("ibv_post_send", libc::ENOMEM, head, bad, 4).unwrap_err();
        assert_eq!(e.posted, 2);
        assert_eq!(e.error.raw_os_error(), Some(libc::ENOMEM));
        assert!(post_result("x", 0, head, std::ptr::null_mut(), 4).is_ok());
        assert_eq!(
            post_result("x", libc::EINVAL, head, std::ptr::null_mut(), 4)
                .unwrap_err()
                .posted,
            0
        );
    }

    #[test]
    fn qp_attr_setters_set_mask() {
        let mut a = QpAttr::new(QpState::Rtr);
        a.set_max_dest_rd_atomic(4).set_min_rnr_timer(12);
        assert_eq!(a.state(), QpState::Rtr);
        use sys::ibv_qp_attr_mask as M;
        assert_eq!(
            a.mask(),
            M::IBV_QP_STATE.0 | M::IBV_QP_MAX_DEST_RD_ATOMIC.0 | M::IBV_QP_MIN_RNR_TIMER.0
        );
        assert_eq!(a.max_dest_rd_atomic(), 4);
    }
}
