//! Shared receive queues.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys as sys;

use super::pd::ProtectionDomain;
use super::qp::{PostError, RecvRequest, RecvScratch};
use super::{check, Error, Ptr, Result};

/// A shared receive queue (`ibv_srq`): receives for several QPs.
pub struct SharedReceiveQueue {
    srq: NonNull<sys::ibv_srq>,
    max_wr: u32,
    max_sge: u32,
    pd: Arc<ProtectionDomain>,
}

// SAFETY: libibverbs SRQs are thread-safe.
unsafe impl Send for SharedReceiveQueue {}
// SAFETY: as above.
unsafe impl Sync for SharedReceiveQueue {}

impl fmt::Debug for SharedReceiveQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedReceiveQueue")
            .field("srq", &Ptr(self.srq.as_ptr() as usize))
            .field("max_wr", &self.max_wr)
            .field("max_sge", &self.max_sge)
            .finish()
    }
}

impl SharedReceiveQueue {
    /// Creates an SRQ in `pd` with room for `max_wr` receives of up to
    /// `max_sge` entries; `srq_limit` arms the limit event (0 = off).
    pub fn new(pd: &Arc<ProtectionDomain>, max_wr: u32, max_sge: u32, srq_limit: u32) -> Result<Arc<Self>> {
        // SAFETY: plain struct; zero is valid.
        let mut a: sys::ibv_srq_init_attr = unsafe { MaybeUninit::zeroed().assume_init() };
        a.attr = sys::ibv_srq_attr {
            max_wr,
            max_sge,
            srq_limit,
        };
        // SAFETY: valid PD and init struct (updated with actual sizes).
        let srq = unsafe { sys::ibv_create_srq(pd.as_ptr(), &mut a) };
        let srq = NonNull::new(srq).ok_or_else(|| Error::last("ibv_create_srq"))?;
        Ok(Arc::new(SharedReceiveQueue {
            srq,
            max_wr: a.attr.max_wr,
            max_sge: a.attr.max_sge,
            pd: pd.clone(),
        }))
    }

    /// Actual capacity in receives.
    pub fn max_wr(&self) -> u32 {
        self.max_wr
    }

    /// Actual entries per receive.
    pub fn max_sge(&self) -> u32 {
        self.max_sge
    }

    /// The protection domain.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ibv_srq {
        self.srq.as_ptr()
    }

    /// Posts receives in one call.
    pub fn post_recv(
        &self,
        wrs: &[RecvRequest<'_>],
        scratch: &mut RecvScratch,
    ) -> std::result::Result<(), PostError> {
        scratch.post("ibv_post_srq_recv", wrs, |head, bad| {
            // SAFETY: valid SRQ; chain alive in scratch for the call; Sges
            // name registered DmaBuf memory (module contract 2).
            unsafe { srptd_ffi::srptd_ibv_post_srq_recv(self.srq.as_ptr().cast(), head.cast(), bad.cast()) }
        })
    }
}

impl Drop for SharedReceiveQueue {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once; QPs using it hold Arcs.
        let rc = unsafe { sys::ibv_destroy_srq(self.srq.as_ptr()) };
        if let Err(e) = check("ibv_destroy_srq", rc) {
            tracing::error!("{e}");
        }
    }
}
