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
}

impl Capacity {
    /// `size` bytes in blocks of `block_size` (a partial last block is not
    /// served).
    pub(super) fn new(block_size: u32, size: u64, read_only: bool) -> Capacity {
        Capacity {
            block_size,
            num_blocks: AtomicU64::new(size / u64::from(block_size)),
            read_only: AtomicBool::new(read_only),
            opened_read_only: read_only,
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

    /// Sets write protection; `refused` says why it cannot be lifted from
    /// storage opened read-only.
    pub(super) fn set_read_only(&self, read_only: bool, refused: &'static str) -> Result<(), ResizeError> {
        if !read_only && self.opened_read_only {
            return Err(ResizeError::Refused(refused));
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

    /// Checks a size asked for by a resize: whole blocks, not zero.
    pub(super) fn check_new_size(&self, size: u64) -> Result<(), ResizeError> {
        if size == 0 || size % u64::from(self.block_size) != 0 {
            return Err(ResizeError::BadSize {
                size,
                block_size: self.block_size,
            });
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
        let c = Capacity::new(4096, 1 << 20, false);
        assert_eq!(c.num_blocks(), 256);
        assert_eq!(c.range(2, 3).unwrap(), (8192, 12288));
        for (lba, blocks) in [(u64::MAX, 1), (0, u64::MAX)] {
            let e = c.range(lba, blocks).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
