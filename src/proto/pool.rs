//! Data buffer pool: a buddy allocator over one pre-registered [`DmaBuf`].
//!
//! Commands whose data cannot move straight between the initiator and the
//! backstore (file LUNs, emulated commands, fetched descriptor tables) get a
//! contiguous, page-aligned extent of the channel's pool for the length of
//! the command. Contiguity keeps each RDMA operation to one local SGE and
//! keeps `O_DIRECT` I/O aligned. All bookkeeping is allocated once when the
//! pool is created; `alloc` and `free` never touch the heap.

use std::sync::Arc;

use crate::mem::{DmaBuf, PAGE_SIZE};

/// Smallest block handed out.
pub const BLOCK: usize = PAGE_SIZE;

const NIL: u32 = u32::MAX;

/// A contiguous piece of the pool owned by one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the pool buffer.
    pub offset: u64,
    /// Usable length in bytes (the rounded block size, at least the request).
    pub len: u64,
    order: u8,
}

/// Buddy allocator over an `Arc<DmaBuf>` whose length is `BLOCK << max_order`.
#[derive(Debug)]
pub struct DataPool {
    buf: Arc<DmaBuf>,
    max_order: u8,
    /// Head of the free list for each order (block index or NIL).
    heads: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For a block index that starts a free block: its order + 1; else 0.
    free_order: Vec<u8>,
    free_bytes: u64,
}

impl DataPool {
    /// Bytes of the buffer a pool of at least `size` bytes needs: a power
    /// of two number of blocks.
    pub fn bytes_for(size: usize) -> usize {
        size.div_ceil(BLOCK).max(1).next_power_of_two() * BLOCK
    }

    /// A pool over `buf` (the caller allocates it, with
    /// [`DataPool::bytes_for`] bytes): the largest power of two number of
    /// blocks that fits.
    pub fn new(buf: Arc<DmaBuf>) -> DataPool {
        let fit = (buf.len() / BLOCK).max(1);
        let blocks = 1usize << fit.ilog2();
        let max_order = blocks.trailing_zeros() as u8;
        let mut p = DataPool {
            buf,
            max_order,
            heads: vec![NIL; max_order as usize + 1],
            next: vec![NIL; blocks],
            prev: vec![NIL; blocks],
            free_order: vec![0; blocks],
            free_bytes: 0,
        };
        p.push(0, max_order);
        p
    }

    /// The memory behind the pool (to register, and to read/write extents).
    pub fn buf(&self) -> &Arc<DmaBuf> {
        &self.buf
    }

    /// Total size in bytes.
    pub fn capacity(&self) -> u64 {
        (BLOCK as u64) << self.max_order
    }

    /// Bytes currently free (possibly fragmented).
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Whether a request of `len` bytes could ever be satisfied.
    pub fn fits(&self, len: u64) -> bool {
        len <= self.capacity()
    }

    fn order_for(len: u64) -> u8 {
        let blocks = len.div_ceil(BLOCK as u64).max(1);
        blocks.next_power_of_two().trailing_zeros() as u8
    }

    fn push(&mut self, idx: u32, order: u8) {
        let head = self.heads[order as usize];
        self.next[idx as usize] = head;
        self.prev[idx as usize] = NIL;
        if head != NIL {
            self.prev[head as usize] = idx;
        }
        self.heads[order as usize] = idx;
        self.free_order[idx as usize] = order + 1;
        self.free_bytes += (BLOCK as u64) << order;
    }

    fn unlink(&mut self, idx: u32, order: u8) {
        let (n, p) = (self.next[idx as usize], self.prev[idx as usize]);
        if p != NIL {
            self.next[p as usize] = n;
        } else {
            self.heads[order as usize] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
        self.free_order[idx as usize] = 0;
        self.free_bytes -= (BLOCK as u64) << order;
    }

    /// Allocates a contiguous extent of at least `len` bytes, or `None` when
    /// no free block is large enough right now.
    pub fn alloc(&mut self, len: u64) -> Option<Extent> {
        if !self.fits(len) {
            return None;
        }
        let want = Self::order_for(len);
        let mut order = want;
        while order <= self.max_order && self.heads[order as usize] == NIL {
            order += 1;
        }
        if order > self.max_order {
            return None;
        }
        let idx = self.heads[order as usize];
        self.unlink(idx, order);
        // Split down, returning the upper halves to the free lists.
        while order > want {
            order -= 1;
            self.push(idx + (1u32 << order), order);
        }
        Some(Extent {
            offset: idx as u64 * BLOCK as u64,
            len: (BLOCK as u64) << want,
            order: want,
        })
    }

    /// Returns an extent to the pool, merging free buddies.
    pub fn free(&mut self, ext: Extent) {
        let mut idx = (ext.offset / BLOCK as u64) as u32;
        let mut order = ext.order;
        debug_assert_eq!(self.free_order[idx as usize], 0, "double free of pool extent");
        while order < self.max_order {
            let buddy = idx ^ (1u32 << order);
            if self.free_order[buddy as usize] != order + 1 {
                break;
            }
            self.unlink(buddy, order);
            idx = idx.min(buddy);
            order += 1;
        }
        self.push(idx, order);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn test_pool(size: usize) -> DataPool {
        DataPool::new(Arc::new(DmaBuf::new(DataPool::bytes_for(size)).unwrap()))
    }

    #[test]
    fn rounds_and_splits() {
        let mut p = test_pool(1 << 20);
        assert_eq!(p.capacity(), 1 << 20);
        let a = p.alloc(1).unwrap();
        assert_eq!((a.offset, a.len), (0, 4096));
        let b = p.alloc(5000).unwrap();
        assert_eq!(b.len, 8192);
        assert_eq!(b.offset % 8192, 0);
        assert_eq!(p.free_bytes(), (1 << 20) - 4096 - 8192);
        p.free(a);
        p.free(b);
        assert_eq!(p.free_bytes(), 1 << 20);
        // Fully merged again: the whole pool is one block.
        let all = p.alloc(1 << 20).unwrap();
        assert_eq!(all.offset, 0);
        assert!(p.alloc(1).is_none());
        p.free(all);
    }

    #[test]
    fn too_large_never_fits() {
        let mut p = test_pool(64 << 10);
        assert!(!p.fits(128 << 10));
        assert!(p.alloc(128 << 10).is_none());
        assert!(p.alloc(64 << 10).is_some());
    }

    proptest! {
        /// Random alloc/free sequences: extents never overlap, stay inside
        /// the pool, and freeing everything restores the whole pool.
        #[test]
        fn no_overlap(ops in proptest::collection::vec((any::<bool>(), 1u64..(300 << 10)), 1..200)) {
            let mut p = test_pool(1 << 20);
            let mut live: Vec<Extent> = Vec::new();
            for (alloc, len) in ops {
                if alloc || live.is_empty() {
                    if let Some(e) = p.alloc(len) {
                        prop_assert!(e.len >= len);
                        prop_assert!(e.offset + e.len <= p.capacity());
                        for o in &live {
                            prop_assert!(e.offset + e.len <= o.offset || o.offset + o.len <= e.offset);
                        }
                        live.push(e);
                    }
                } else {
                    let e = live.swap_remove((len as usize) % live.len());
                    p.free(e);
                }
                let used: u64 = live.iter().map(|e| e.len).sum();
                prop_assert_eq!(used + p.free_bytes(), p.capacity());
            }
            for e in live.drain(..) { p.free(e); }
            prop_assert_eq!(p.free_bytes(), p.capacity());
            prop_assert!(p.alloc(p.capacity()).is_some());
        }
    }
}
