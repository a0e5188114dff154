//! Completion channels, completion queues and work completions.

use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use rdma_sys as sys;

use super::device::Context;
use super::{check, set_nonblocking, Error, Ptr, Result};

/// Completion events are acknowledged in batches of this many.
const ACK_BATCH: u32 = 32;

/// A completion event channel (`ibv_comp_channel`): a non-blocking file
/// descriptor that becomes readable when an armed CQ attached to it gets a
/// completion. Pollable with poll/epoll (tokio `AsyncFd`).
pub struct CompletionChannel {
    ch: NonNull<sys::ibv_comp_channel>,
    ctx: Arc<Context>,
}

// SAFETY: comp channels are thread-safe in libibverbs (reads of the fd and
// the ack counters are serialised internally).
unsafe impl Send for CompletionChannel {}
// SAFETY: as above.
unsafe impl Sync for CompletionChannel {}

impl fmt::Debug for CompletionChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionChannel")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// A completion event read from a [`CompletionChannel`]: which CQ (its
/// `user_data`) has new completions. The CQ must be re-armed and polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEvent {
    /// The `user_data` given to [`CompletionQueue::new`].
    pub user_data: u64,
}

/// Per-CQ state reachable from the `cq_context` pointer of an event.
struct CqState {
    user_data: u64,
    unacked: AtomicU32,
    closing: AtomicBool,
    /// How the CQ was last armed and not fired since (no event read):
    /// [`UNARMED`], [`ARMED_SOLICITED`] or [`ARMED_ALL`].
    armed: AtomicU8,
}

const UNARMED: u8 = 0;
const ARMED_SOLICITED: u8 = 1;
const ARMED_ALL: u8 = 2;

impl CompletionChannel {
    /// Creates a channel on `ctx`, in non-blocking mode.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<CompletionChannel>> {
        // SAFETY: valid context.
        let ch = unsafe { sys::ibv_create_comp_channel(ctx.as_ptr()) };
        let ch = NonNull::new(ch).ok_or_else(|| Error::last("ibv_create_comp_channel"))?;
        let ch = CompletionChannel { ch, ctx: ctx.clone() };
        set_nonblocking(ch.as_raw_fd(), "fcntl(comp_channel)")?;
        Ok(Arc::new(ch))
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Reads one event, or `None` if none is pending. The event is counted
    /// against its CQ and acknowledged in batches (and before the CQ is
    /// destroyed).
    pub fn get_event(&self) -> Result<Option<CqEvent>> {
        let mut cq: *mut sys::ibv_cq = std::ptr::null_mut();
        let mut cq_ctx: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: valid channel; out-pointers on the stack.
        let rc = unsafe { sys::ibv_get_cq_event(self.ch.as_ptr(), &mut cq, &mut cq_ctx) };
        if rc != 0 {
            let e = Error::last("ibv_get_cq_event");
            return if e.is_would_block() { Ok(None) } else { Err(e) };
        }
        // SAFETY: every CQ attached to a channel is created by
        // `CompletionQueue::new` with cq_context pointing at its boxed
        // CqState. That CQ cannot finish `ibv_destroy_cq` (which frees the
        // state after) until this event is acknowledged, so the state is
        // alive here.
        let state = unsafe { &*(cq_ctx as *const CqState) };
        // An event fires once per arming.
        state.armed.store(UNARMED, Ordering::SeqCst);
        let prev = state.unacked.fetch_add(1, Ordering::SeqCst);
        // If the CQ is being dropped, its drop may already have acked what
        // it saw and be waiting in ibv_destroy_cq for this event: ack now.
        if prev + 1 >= ACK_BATCH || state.closing.load(Ordering::SeqCst) {
            let n = state.unacked.swap(0, Ordering::SeqCst);
            if n > 0 {
                // SAFETY: cq is alive (see above); n events were reported.
                unsafe { sys::ibv_ack_cq_events(cq, n) };
            }
        }
        Ok(Some(CqEvent {
            user_data: state.user_data,
        }))
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ibv_comp_channel {
        self.ch.as_ptr()
    }
}

impl AsRawFd for CompletionChannel {
    fn as_raw_fd(&self) -> RawFd {
        // SAFETY: plain field read of a valid channel.
        unsafe { (*self.ch.as_ptr()).fd }
    }
}

impl AsFd for CompletionChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd lives as long as the channel, which outlives the
        // borrow.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl Drop for CompletionChannel {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once; every CQ on it holds an Arc
        // of it, so none is left.
        let rc = unsafe { sys::ibv_destroy_comp_channel(self.ch.as_ptr()) };
        if let Err(e) = check("ibv_destroy_comp_channel", rc) {
            tracing::error!("{e}");
        }
    }
}

/// A completion queue (`ibv_cq`).
pub struct CompletionQueue {
    cq: NonNull<sys::ibv_cq>,
    state: Box<CqState>,
    capacity: u32,
    channel: Option<Arc<CompletionChannel>>,
    ctx: Arc<Context>,
}

// SAFETY: libibverbs CQs are thread-safe (providers lock polling).
unsafe impl Send for CompletionQueue {}
// SAFETY: as above.
unsafe impl Sync for CompletionQueue {}

impl fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("cq", &Ptr(self.cq.as_ptr() as usize))
            .field("capacity", &self.capacity)
            .field("user_data", &self.state.user_data)
            .finish()
    }
}

impl CompletionQueue {
    /// Creates a CQ with room for at least `cqe` entries, optionally
    /// attached to `channel` (needed for [`arm`](Self::arm)). `user_data`
    /// is reported by [`CompletionChannel::get_event`].
    pub fn new(
        ctx: &Arc<Context>,
        cqe: u32,
        channel: Option<&Arc<CompletionChannel>>,
        comp_vector: i32,
        user_data: u64,
    ) -> Result<Arc<CompletionQueue>> {
        if let Some(ch) = channel {
            if !ch.context().same_context(ctx) {
                return Err(Error::Invalid("completion channel of another device context"));
            }
        }
        let cqe_i = i32::try_from(cqe.max(1)).map_err(|_| Error::Invalid("cqe too large"))?;
        let state = Box::new(CqState {
            user_data,
            unacked: AtomicU32::new(0),
            closing: AtomicBool::new(false),
            armed: AtomicU8::new(UNARMED),
        });
        let state_ptr = &*state as *const CqState as *mut libc::c_void;
        let ch_ptr = channel.map_or(std::ptr::null_mut(), |c| c.as_ptr());
        // SAFETY: valid context and channel; cq_context is the boxed state
        // which lives until after ibv_destroy_cq.
        let cq = unsafe { sys::ibv_create_cq(ctx.as_ptr(), cqe_i, state_ptr, ch_ptr, comp_vector) };
        let cq = NonNull::new(cq).ok_or_else(|| Error::last("ibv_create_cq"))?;
        // SAFETY: valid CQ; cqe is the actual capacity.
        let capacity = unsafe { (*cq.as_ptr()).cqe }.max(0) as u32;
        Ok(Arc::new(CompletionQueue {
            cq,
            state,
            capacity,
            channel: channel.cloned(),
            ctx: ctx.clone(),
        }))
    }

    /// Actual number of entries (at least what was asked for).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The `user_data` given at creation.
    pub fn user_data(&self) -> u64 {
        self.state.user_data
    }

    /// The completion channel, if any.
    pub fn channel(&self) -> Option<&Arc<CompletionChannel>> {
        self.channel.as_ref()
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ibv_cq {
        self.cq.as_ptr()
    }

    /// Polls up to `out.len()` completions into `out`; returns how many.
    pub fn poll(&self, out: &mut [WorkCompletion]) -> Result<usize> {
        const CHUNK: usize = 16;
        let mut raw: [MaybeUninit<sys::ibv_wc>; CHUNK] = [const { MaybeUninit::uninit() }; CHUNK];
        let mut done = 0;
        while done < out.len() {
            let want = (out.len() - done).min(CHUNK);
            // SAFETY: valid CQ; `raw` has room for `want` entries.
            let n = unsafe {
                srptd_ffi::srptd_ibv_poll_cq(self.cq.as_ptr().cast(), want as i32, raw.as_mut_ptr().cast())
            };
            if n < 0 {
                return Err(Error::errno("ibv_poll_cq", if n == -1 { libc::EIO } else { -n }));
            }
            let n = n as usize;
            for (dst, src) in out[done..done + n].iter_mut().zip(&raw[..n]) {
                // SAFETY: the provider wrote the first n entries.
                *dst = WorkCompletion::from_sys(unsafe { src.assume_init_ref() });
            }
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    /// Polls into `out`; when nothing is there, arms the CQ, polls again
    /// and sleeps on its completion channel, up to `timeout` in all
    /// (blocking-style programs and tests; the daemon's pollers do this
    /// across many CQs). Returns how many completions were written, 0 on
    /// timeout.
    pub fn wait_poll(&self, out: &mut [WorkCompletion], timeout: std::time::Duration) -> Result<usize> {
        let ch = self
            .channel()
            .ok_or(Error::Invalid("CQ without a completion channel"))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let n = self.poll(out)?;
            if n > 0 {
                return Ok(n);
            }
            self.arm(false)?;
            let n = self.poll(out)?;
            if n > 0 {
                return Ok(n);
            }
            if !super::wait_readable_until(ch.as_fd(), deadline, "poll(completion channel)")? {
                return Ok(0);
            }
            while ch.get_event()?.is_some() {}
        }
    }

    /// Requests a completion event for the next completion (or the next
    /// solicited one). Needs a channel. No system call while an earlier
    /// request at least as wide is pending: a CQ stays armed until its
    /// event fires, and a fired event stays readable on the channel until
    /// [`CompletionChannel::get_event`] takes it.
    pub fn arm(&self, solicited_only: bool) -> Result<()> {
        if self.channel.is_none() {
            return Err(Error::Invalid("CQ has no completion channel"));
        }
        let want = if solicited_only {
            ARMED_SOLICITED
        } else {
            ARMED_ALL
        };
        if self.state.armed.load(Ordering::SeqCst) >= want {
            return Ok(());
        }
        // SAFETY: valid CQ.
        let rc =
            unsafe { srptd_ffi::srptd_ibv_req_notify_cq(self.cq.as_ptr().cast(), solicited_only as i32) };
        check("ibv_req_notify_cq", rc)?;
        self.state.armed.store(want, Ordering::SeqCst);
        Ok(())
    }

    /// Acknowledges the events counted so far (normally batched).
    pub fn ack_events(&self) {
        let n = self.state.unacked.swap(0, Ordering::SeqCst);
        if n > 0 {
            // SAFETY: valid CQ; n events were reported for it.
            unsafe { sys::ibv_ack_cq_events(self.cq.as_ptr(), n) };
        }
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // See CompletionChannel::get_event for the closing handshake.
        self.state.closing.store(true, Ordering::SeqCst);
        self.ack_events();
        // SAFETY: created by us, destroyed once; QPs using it hold Arcs of
        // self so none is left; all events we read are acknowledged.
        let rc = unsafe { sys::ibv_destroy_cq(self.cq.as_ptr()) };
        if let Err(e) = check("ibv_destroy_cq", rc) {
            tracing::error!("{e}");
        }
    }
}

/// Completion status (`ibv_wc_status`). Unknown values are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WcStatus(pub u32);

impl WcStatus {
    /// Success.
    pub const SUCCESS: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_SUCCESS);
    /// Local length error (receive buffer too small).
    pub const LOC_LEN_ERR: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_LOC_LEN_ERR);
    /// Local protection error (bad lkey or range).
    pub const LOC_PROT_ERR: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_LOC_PROT_ERR);
    /// Flushed: the QP went to the error state.
    pub const WR_FLUSH_ERR: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR);
    /// Remote access error (bad rkey or range).
    pub const REM_ACCESS_ERR: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_REM_ACCESS_ERR);
    /// Transport retries exceeded (peer gone).
    pub const RETRY_EXC_ERR: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_RETRY_EXC_ERR);
    /// Receiver not ready retries exceeded.
    pub const RNR_RETRY_EXC_ERR: WcStatus = WcStatus(sys::ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR);

    /// Whether the work request succeeded.
    pub fn is_success(self) -> bool {
        self == WcStatus::SUCCESS
    }

    /// The verbs name of the status.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 24] = [
            "success",
            "local length error",
            "local QP operation error",
            "local EE context operation error",
            "local protection error",
            "WR flushed",
            "memory window bind error",
            "bad response error",
            "local access error",
            "remote invalid request error",
            "remote access error",
            "remote operation error",
            "transport retry counter exceeded",
            "RNR retry counter exceeded",
            "local RDD violation error",
            "remote invalid RD request",
            "operation aborted",
            "invalid EE context number",
            "invalid EE context state",
            "fatal error",
            "response timeout error",
            "general error",
            "TM error",
            "TM rendezvous incomplete",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("unknown")
    }
}

impl fmt::Debug for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WcStatus({}: {})", self.0, self.name())
    }
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a completed work request was. Only meaningful when the status is
/// success (verbs leave it undefined for errors, e.g. flushes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub enum WcOpcode {
    #[default]
    Send,
    RdmaWrite,
    RdmaRead,
    CompSwap,
    FetchAdd,
    BindMw,
    LocalInv,
    Recv,
    RecvRdmaWithImm,
    Other(u32),
}

impl WcOpcode {
    fn from_raw(v: u32) -> WcOpcode {
        use sys::ibv_wc_opcode::*;
        match v {
            IBV_WC_SEND => WcOpcode::Send,
            IBV_WC_RDMA_WRITE => WcOpcode::RdmaWrite,
            IBV_WC_RDMA_READ => WcOpcode::RdmaRead,
            IBV_WC_COMP_SWAP => WcOpcode::CompSwap,
            IBV_WC_FETCH_ADD => WcOpcode::FetchAdd,
            IBV_WC_BIND_MW => WcOpcode::BindMw,
            IBV_WC_LOCAL_INV => WcOpcode::LocalInv,
            IBV_WC_RECV => WcOpcode::Recv,
            IBV_WC_RECV_RDMA_WITH_IMM => WcOpcode::RecvRdmaWithImm,
            v => WcOpcode::Other(v),
        }
    }

    /// Whether this completes a receive (posted with `post_recv`).
    pub fn is_recv(self) -> bool {
        matches!(self, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm)
    }
}

/// A work completion copied out of `ibv_wc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkCompletion {
    /// The `wr_id` of the completed request.
    pub wr_id: u64,
    /// Status.
    pub status: WcStatus,
    /// Opcode (valid on success only).
    pub opcode: WcOpcode,
    /// Vendor error syndrome (on error).
    pub vendor_err: u32,
    /// Bytes received (receives) or transferred (RDMA READ).
    pub byte_len: u32,
    /// Immediate data (host order) if the peer sent some.
    pub imm_data: Option<u32>,
    /// The rkey the peer invalidated (SEND with invalidate).
    pub invalidated_rkey: Option<u32>,
    /// Local QP number.
    pub qp_num: u32,
    /// Remote QP number (UD only).
    pub src_qp: u32,
    /// Raw `ibv_wc_flags`.
    pub wc_flags: u32,
    /// P_Key index (GSI/UD).
    pub pkey_index: u16,
    /// Source LID (UD).
    pub slid: u16,
    /// Service level (UD).
    pub sl: u8,
    /// DLID path bits (UD).
    pub dlid_path_bits: u8,
}

impl WorkCompletion {
    pub(crate) fn from_sys(wc: &sys::ibv_wc) -> WorkCompletion {
        // SAFETY: the union is a plain u32 in both interpretations.
        let imm_or_inv = unsafe { wc.imm_data_invalidated_rkey_union.imm_data };
        let flags = wc.wc_flags;
        WorkCompletion {
            wr_id: wc.wr_id,
            status: WcStatus(wc.status),
            opcode: WcOpcode::from_raw(wc.opcode),
            vendor_err: wc.vendor_err,
            byte_len: wc.byte_len,
            imm_data: (flags & sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0).then(|| u32::from_be(imm_or_inv)),
            invalidated_rkey: (flags & sys::ibv_wc_flags::IBV_WC_WITH_INV.0 != 0).then_some(imm_or_inv),
            qp_num: wc.qp_num,
            src_qp: wc.src_qp,
            wc_flags: flags,
            pkey_index: wc.pkey_index,
            slid: wc.slid,
            sl: wc.sl,
            dlid_path_bits: wc.dlid_path_bits,
        }
    }

    /// Whether it succeeded.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed_wc() -> sys::ibv_wc {
        // SAFETY: ibv_wc is plain integers and an integer union.
        unsafe { MaybeUninit::<sys::ibv_wc>::zeroed().assume_init() }
    }

    #[test]
    fn wc_conversion_recv_with_imm() {
        let mut wc = zeroed_wc();
        wc.wr_id = 0xdead_beef_0000_0001;
        wc.status = sys::ibv_wc_status::IBV_WC_SUCCESS;
        wc.opcode = sys::ibv_wc_opcode::IBV_WC_RECV;
        wc.byte_len = 64;
        wc.qp_num = 0x11;
        wc.wc_flags = sys::ibv_wc_flags::IBV_WC_WITH_IMM.0;
        wc.imm_data_invalidated_rkey_union.imm_data = 0x1234_5678u32.to_be();
        let w = WorkCompletion::from_sys(&wc);
        assert_eq!(w.wr_id, 0xdead_beef_0000_0001);
        assert!(w.is_success());
        assert_eq!(w.opcode, WcOpcode::Recv);
        assert!(w.opcode.is_recv());
        assert_eq!(w.byte_len, 64);
        assert_eq!(w.qp_num, 0x11);
        assert_eq!(w.imm_data, Some(0x1234_5678));
        assert_eq!(w.invalidated_rkey, None);
    }

    #[test]
    fn wc_conversion_error_and_invalidate() {
        let mut wc = zeroed_wc();
        wc.status = sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR;
        wc.opcode = 77;
        wc.wc_flags = sys::ibv_wc_flags::IBV_WC_WITH_INV.0;
        wc.imm_data_invalidated_rkey_union.invalidated_rkey = 0xabcd;
        let w = WorkCompletion::from_sys(&wc);
        assert_eq!(w.status, WcStatus::WR_FLUSH_ERR);
        assert_eq!(w.status.to_string(), "WR flushed");
        assert_eq!(w.opcode, WcOpcode::Other(77));
        assert_eq!(w.invalidated_rkey, Some(0xabcd));
        assert_eq!(w.imm_data, None);
        assert_eq!(WcStatus(999).name(), "unknown");
        assert_eq!(WcStatus(12).name(), "transport retry counter exceeded");
    }
}
