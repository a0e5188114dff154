//! Memory regions over [`DmaBuf`]s, and scatter/gather entries into them.

use std::fmt;
use std::ops::BitOr;
use std::ptr::NonNull;
use std::sync::Arc;

use rdma_sys as sys;

use super::pd::ProtectionDomain;
use super::{check, Error, Result};
use crate::mem::DmaBuf;

/// Access rights of a memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessFlags(u32);

impl AccessFlags {
    /// Local access only (the adapter may read it for sends).
    pub const LOCAL_READ: AccessFlags = AccessFlags(0);
    /// The adapter may write it locally (receives, RDMA READ targets).
    pub const LOCAL_WRITE: AccessFlags = AccessFlags(sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0);
    /// A peer may RDMA WRITE into it (requires `LOCAL_WRITE`).
    pub const REMOTE_WRITE: AccessFlags = AccessFlags(sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0);
    /// A peer may RDMA READ from it.
    pub const REMOTE_READ: AccessFlags = AccessFlags(sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0);

    /// The raw `ibv_access_flags` bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether all flags of `other` are set.
    pub fn contains(self, other: AccessFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for AccessFlags {
    type Output = AccessFlags;
    fn bitor(self, rhs: AccessFlags) -> AccessFlags {
        AccessFlags(self.0 | rhs.0)
    }
}

/// A registered [`DmaBuf`] (`ibv_mr`). Keeps the buffer and the protection
/// domain alive; deregisters on drop.
pub struct MemoryRegion {
    mr: NonNull<sys::ibv_mr>,
    lkey: u32,
    rkey: u32,
    access: AccessFlags,
    buf: Arc<DmaBuf>,
    pd: Arc<ProtectionDomain>,
}

// SAFETY: an ibv_mr is immutable after registration and may be used and
// deregistered from any thread; DmaBuf is Send + Sync.
unsafe impl Send for MemoryRegion {}
// SAFETY: as above.
unsafe impl Sync for MemoryRegion {}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &format_args!("{:#x}", self.buf.addr()))
            .field("len", &self.buf.len())
            .field("lkey", &format_args!("{:#x}", self.lkey))
            .field("rkey", &format_args!("{:#x}", self.rkey))
            .field("access", &self.access)
            .finish()
    }
}

impl MemoryRegion {
    /// Registers all of `buf` in `pd`.
    pub fn register(
        pd: &Arc<ProtectionDomain>,
        buf: Arc<DmaBuf>,
        access: AccessFlags,
    ) -> Result<MemoryRegion> {
        if access.contains(AccessFlags::REMOTE_WRITE) && !access.contains(AccessFlags::LOCAL_WRITE) {
            return Err(Error::Invalid("REMOTE_WRITE requires LOCAL_WRITE"));
        }
        // SAFETY: the buffer is a live mapping of buf.len() bytes kept alive
        // by the Arc stored in the region; only DmaBuf memory is registered
        // (module contract 1).
        let mr = unsafe {
            sys::ibv_reg_mr(
                pd.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                access.bits() as i32,
            )
        };
        let mr = NonNull::new(mr).ok_or_else(|| Error::last("ibv_reg_mr"))?;
        // SAFETY: freshly returned valid MR; the keys are immutable.
        let (lkey, rkey) = unsafe { ((*mr.as_ptr()).lkey, (*mr.as_ptr()).rkey) };
        Ok(MemoryRegion {
            mr,
            lkey,
            rkey,
            access,
            buf,
            pd: pd.clone(),
        })
    }

    /// Local key, for scatter/gather entries.
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// Remote key, for peers' RDMA READ/WRITE.
    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    /// Virtual address of the first byte.
    pub fn addr(&self) -> u64 {
        self.buf.addr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false (a `DmaBuf` has at least one page).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The access rights it was registered with.
    pub fn access(&self) -> AccessFlags {
        self.access
    }

    /// The registered buffer.
    pub fn buf(&self) -> &Arc<DmaBuf> {
        &self.buf
    }

    /// The protection domain.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// A scatter/gather entry for `offset..offset+len` of this region, or
    /// `None` if the range is outside it.
    pub fn sge(&self, offset: usize, len: u32) -> Option<Sge> {
        if !self.buf.contains(offset as u64, len as u64) {
            return None;
        }
        Some(Sge {
            addr: self.buf.addr() + offset as u64,
            len,
            lkey: self.lkey,
        })
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered by us, deregistered once. Work still posted on
        // it completes in error (module contract 3); the buffer is released
        // after this, when the Arc field drops.
        let rc = unsafe { sys::ibv_dereg_mr(self.mr.as_ptr()) };
        if let Err(e) = check("ibv_dereg_mr", rc) {
            tracing::error!("{e}");
        }
    }
}

/// A local scatter/gather entry: a range of a registered [`DmaBuf`] and its
/// lkey. Built by [`MemoryRegion::sge`] (checked) or [`Sge::from_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sge {
    addr: u64,
    len: u32,
    lkey: u32,
}

impl Sge {
    /// An entry from raw parts.
    ///
    /// # Safety
    /// `addr..addr+len` must lie inside memory registered under `lkey` that
    /// is a [`DmaBuf`] (or otherwise memory no Rust reference points into)
    /// and stays mapped while any work request naming it is outstanding.
    pub unsafe fn from_raw(addr: u64, len: u32, lkey: u32) -> Sge {
        Sge { addr, len, lkey }
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the entry is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The first `len` bytes of this entry, or `None` if longer.
    pub fn truncate(&self, len: u32) -> Option<Sge> {
        (len <= self.len).then_some(Sge {
            addr: self.addr,
            len,
            lkey: self.lkey,
        })
    }

    /// The range `offset..offset+len` of this entry, or `None`.
    pub fn slice(&self, offset: u32, len: u32) -> Option<Sge> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then_some(Sge {
            addr: self.addr + offset as u64,
            len,
            lkey: self.lkey,
        })
    }

    pub(crate) fn to_sys(self) -> sys::ibv_sge {
        sys::ibv_sge {
            addr: self.addr,
            length: self.len,
            lkey: self.lkey,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_bits_match_verbs() {
        assert_eq!(AccessFlags::LOCAL_WRITE.bits(), 1);
        assert_eq!(AccessFlags::REMOTE_WRITE.bits(), 2);
        assert_eq!(AccessFlags::REMOTE_READ.bits(), 4);
        let a = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ;
        assert!(a.contains(AccessFlags::REMOTE_READ));
        assert!(!a.contains(AccessFlags::REMOTE_WRITE));
    }

    #[test]
    fn sge_slicing_is_bounded() {
        // SAFETY: never posted.
        let s = unsafe { Sge::from_raw(0x1000, 100, 7) };
        assert_eq!(s.slice(10, 90).unwrap().addr(), 0x100a);
        assert!(s.slice(10, 91).is_none());
        assert!(s.slice(u32::MAX, 2).is_none());
        assert_eq!(s.truncate(5).unwrap().len(), 5);
        assert!(s.truncate(101).is_none());
    }
}
