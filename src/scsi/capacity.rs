//! What a file and an RBD backstore share: the block size, the capacity
//! (changed by a live resize), write protection (changed live, but never
//! lifted from storage opened read-only), and byte offsets of LBAs.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::backstore::ResizeError;

/// Block size, capacity and write protection of one backstore.
#[derive(Debug)]
pub(super) struct Capacity {
    block_size: u32,
    num_blocks: AtomicU64,
    read_only: AtomicBool,
    /// Opened without write access: write protection cannot be lifted.
    opened_read_only: bool,
    /// What a change refused for that says (the storage named).
    opened_read_only_refusal: &'static str,
}

impl Capacity {
    /// `size` bytes in blocks of `block_size` (a partial last block is not
    /// served); `read_only`: opened without write access, which
    /// `refusal` tells whoever asks for a write-enabling change.
    pub(super) fn new(block_size: u32, size: u64, read_only: bool, refusal: &'static str) -> Capacity {
        Capacity {
            block_size,
            num_blocks: AtomicU64::new(size / u64::from(block_size)),
            read_only: AtomicBool::new(read_only),
            opened_read_only: read_only,
            opened_read_only_refusal: refusal,
        }
    }

    pub(super) fn block_size(&self) -> u32 {
        self.block_size
    }

    pub(super) fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Relaxed)
    }

    pub(super) fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    pub(super) fn opened_read_only(&self) -> bool {
        self.opened_read_only
    }

    /// Sets write protection (never lifted from storage opened read-only).
    pub(super) fn set_read_only(&self, read_only: bool) -> Result<(), ResizeError> {
        if !read_only && self.opened_read_only {
            return Err(ResizeError::Refused(self.opened_read_only_refusal));
        }
        self.read_only.store(read_only, Ordering::Relaxed);
        Ok(())
    }

    /// An error unless writes are allowed now.
    pub(super) fn check_writable(&self) -> io::Result<()> {
        if self.read_only() {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only backstore",
            ))
        } else {
            Ok(())
        }
    }

    /// Byte offset of `lba`.
    pub(super) fn offset(&self, lba: u64) -> io::Result<u64> {
        lba.checked_mul(u64::from(self.block_size))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))
    }

    /// Byte offset and length of `blocks` blocks from `lba`.
    pub(super) fn range(&self, lba: u64, blocks: u64) -> io::Result<(u64, u64)> {
        let len = blocks
            .checked_mul(u64::from(self.block_size))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
        Ok((self.offset(lba)?, len))
    }

    /// Checks a resize of the storage to `size` bytes: whole blocks, not
    /// zero, storage opened writable.
    pub(super) fn check_resize(&self, size: u64) -> Result<(), ResizeError> {
        if size == 0 || size % u64::from(self.block_size) != 0 {
            return Err(ResizeError::BadSize {
                size,
                block_size: self.block_size,
            });
        }
        if self.opened_read_only {
            return Err(ResizeError::Refused(self.opened_read_only_refusal));
        }
        Ok(())
    }

    /// Takes `size` bytes as the new capacity; returns it in blocks.
    pub(super) fn set_size(&self, size: u64) -> Result<u64, ResizeError> {
        let bs = u64::from(self.block_size);
        if size < bs {
            return Err(ResizeError::BadSize {
                size,
                block_size: self.block_size,
            });
        }
        self.num_blocks.store(size / bs, Ordering::Relaxed);
        Ok(size / bs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_in_bytes_and_overflow_is_an_error() {
        let c = Capacity::new(4096, 1 << 20, false, "");
        assert_eq!(c.num_blocks(), 256);
        assert_eq!(c.range(2, 3).unwrap(), (8192, 12288));
        for (lba, blocks) in [(u64::MAX, 1), (0, u64::MAX)] {
            let e = c.range(lba, blocks).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn storage_opened_read_only_refuses_with_its_own_words() {
        let c = Capacity::new(512, 4096, true, "opened read-only: add it writable");
        let refused = |r: Result<(), ResizeError>| match r {
            Err(ResizeError::Refused(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(c.set_read_only(false)),
            "opened read-only: add it writable"
        );
        assert_eq!(refused(c.check_resize(8192)), "opened read-only: add it writable");
        // A bad size is named first; protection may still be set.
        assert!(matches!(
            c.check_resize(1000),
            Err(ResizeError::BadSize { size: 1000, .. })
        ));
        assert!(c.set_read_only(true).is_ok() && c.read_only());
        let w = Capacity::new(512, 4096, false, "");
        assert!(w.check_resize(8192).is_ok() && w.set_read_only(false).is_ok());
        assert!(matches!(w.check_resize(0), Err(ResizeError::BadSize { .. })));
    }
}
