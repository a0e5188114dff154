//! Protection domains.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys as sys;

use super::device::Context;
use super::{check, Error, Ptr, Result};

/// A protection domain (`ibv_pd`). Memory regions, queue pairs and shared
/// receive queues are created in one and hold an `Arc` of it.
pub struct ProtectionDomain {
    pd: NonNull<sys::ibv_pd>,
    ctx: Arc<Context>,
}

// SAFETY: libibverbs PDs may be used from any thread.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above.
unsafe impl Sync for ProtectionDomain {}

impl fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("pd", &Ptr(self.pd.as_ptr() as usize))
            .finish()
    }
}

impl ProtectionDomain {
    /// Allocates a protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<ProtectionDomain>> {
        // SAFETY: valid context.
        let pd = unsafe { sys::ibv_alloc_pd(ctx.as_ptr()) };
        let pd = NonNull::new(pd).ok_or_else(|| Error::last("ibv_alloc_pd"))?;
        Ok(Arc::new(ProtectionDomain { pd, ctx: ctx.clone() }))
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::ibv_pd {
        self.pd.as_ptr()
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: allocated by us, freed once; children hold Arcs of self.
        let rc = unsafe { sys::ibv_dealloc_pd(self.pd.as_ptr()) };
        if let Err(e) = check("ibv_dealloc_pd", rc) {
            tracing::error!("{e}");
        }
    }
}
