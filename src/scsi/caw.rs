//! COMPARE AND WRITE (SBC-3 5.2) and what makes it atomic.
//!
//! SBC-3 5.2 asks for "an uninterrupted series of actions": read the
//! blocks, compare them with the verify half of the data-out, and only if
//! they match write the other half; no other write may land on those
//! blocks in between. Each LUN has one [`CawLock`]:
//!
//! - A COMPARE AND WRITE runs holding its lock exclusively (so CAWs on one
//!   LUN run one at a time, as LIO's `caw_sem` makes them).
//! - Executed writes (WRITE, WRITE AND VERIFY, WRITE SAME, UNMAP) take it
//!   shared, but only once the LUN has seen a CAW: until then they check
//!   one flag and take nothing.
//! - Zero-copy writes (RAM LUNs) land by RDMA before any code runs, so no
//!   lock can order them: from the first CAW planned on a LUN on, its
//!   writes are planned without zero copy and executed like a file LUN's
//!   (the flag never clears: initiators that use CAW, such as ESXi's ATS
//!   locking, use it all the time).
//!
//! - Writes on the poller's io_uring (file LUNs) cannot hold a lock across
//!   the operation: each counts itself in flight, then checks the flag,
//!   and goes to the worker pool (taking the lock shared) if a CAW was
//!   seen; a CAW, after its plan set the flag, waits under its exclusive
//!   lock for the count to fall to zero. (Sequentially consistent on both
//!   sides: either the write sees the flag or the CAW sees the count.)
//!
//! The guarantee: every write planned after the LUN's first CAW was
//! planned is ordered against every CAW (whole before or whole after).
//! Writes already planned then (a zero-copy write whose data is still
//! arriving, an executed write that checked the flag first) are not.
//! Reads are not ordered against a CAW, as against any write.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use super::backstore::Backstore;
use super::cdb::Cmd;
use super::disk::io_sense;
use super::sense::Sense;
use super::{DataDir, Plan};
use crate::mem::DmaBuf;

/// MAXIMUM COMPARE AND WRITE LENGTH (SBC-3 6.5.3: a one-byte field, as is
/// NUMBER OF LOGICAL BLOCKS), further bounded so that both halves of the
/// data-out fit in MAXIMUM TRANSFER LENGTH.
const MAX_CAW_BLOCKS: u32 = 255;

/// The COMPARE AND WRITE state of one LUN.
#[derive(Debug)]
pub struct CawLock {
    /// Set when the first CAW is planned on the LUN; never cleared.
    seen: AtomicBool,
    /// Writes in flight on an asynchronous engine.
    async_writes: AtomicUsize,
    /// Taken exclusively by a CAW, shared by executed writes. Holds the
    /// buffer the medium is read into for the compare (allocated by the
    /// first CAW, once, sized for the largest one).
    lock: RwLock<Option<DmaBuf>>,
    max_blocks: u32,
    block_size: u32,
}

impl CawLock {
    /// The lock of a LUN of `block_size` bytes whose transfers are at most
    /// `max_xfer_blocks` blocks.
    pub fn new(block_size: u32, max_xfer_blocks: u32) -> CawLock {
        CawLock {
            seen: AtomicBool::new(false),
            async_writes: AtomicUsize::new(0),
            lock: RwLock::new(None),
            max_blocks: MAX_CAW_BLOCKS.min(max_xfer_blocks / 2),
            block_size,
        }
    }

    /// MAXIMUM COMPARE AND WRITE LENGTH, in blocks (block limits VPD).
    pub fn max_blocks(&self) -> u32 {
        self.max_blocks
    }

    /// Whether WRITEs may still move their data with zero copy: until the
    /// first COMPARE AND WRITE.
    pub fn zero_copy_writes(&self) -> bool {
        !self.seen.load(Ordering::SeqCst)
    }

    /// Plans a COMPARE AND WRITE of `blocks` (the LBA range and write
    /// protection already checked) and marks the LUN as using CAW.
    pub fn plan(&self, blocks: u32) -> Result<Plan, Sense> {
        // SBC-3 5.2: NUMBER OF LOGICAL BLOCKS above MAXIMUM COMPARE AND
        // WRITE LENGTH is INVALID FIELD IN CDB; 0 transfers, compares and
        // writes nothing and is not an error.
        if blocks > self.max_blocks {
            return Err(Sense::invalid_field_in_cdb_at(13, None));
        }
        if blocks == 0 {
            return Ok(Plan::none());
        }
        self.seen.store(true, Ordering::SeqCst);
        // Both halves: verify data, then write data (never zero copy).
        Ok(Plan::new(DataDir::Out, 2 * blocks * self.block_size))
    }

    /// For a command that writes the medium when it executes: the shared
    /// hold that keeps it apart from a running CAW, once the LUN uses CAW.
    /// An asynchronous write (one that holds no lock while it runs) may
    /// start: no CAW was seen on this LUN. On true the caller calls
    /// [`end_async_write`](Self::end_async_write) when it completes; on
    /// false it runs the write as an executed one.
    pub fn begin_async_write(&self) -> bool {
        self.async_writes.fetch_add(1, Ordering::SeqCst);
        if self.seen.load(Ordering::SeqCst) {
            self.async_writes.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// An asynchronous write begun with `begin_async_write` completed.
    pub fn end_async_write(&self) {
        self.async_writes.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn hold_for(&self, cmd: &Cmd) -> Option<RwLockReadGuard<'_, Option<DmaBuf>>> {
        let writes = matches!(
            cmd,
            Cmd::Write { .. } | Cmd::WriteAndVerify { .. } | Cmd::WriteSame { .. } | Cmd::Unmap { .. }
        );
        if !writes {
            return None;
        }
        self.hold_for_write()
    }

    /// What [`hold_for`](Self::hold_for) holds for a write of the medium
    /// that is not a command of its own (EXTENDED COPY's destination).
    pub fn hold_for_write(&self) -> Option<RwLockReadGuard<'_, Option<DmaBuf>>> {
        if self.zero_copy_writes() {
            return None;
        }
        Some(self.lock.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Executes a planned COMPARE AND WRITE: `data[off..]` holds `blocks`
    /// blocks of verify data, then `blocks` blocks of write data.
    pub fn execute(
        &self,
        store: &dyn Backstore,
        lba: u64,
        blocks: u32,
        fua: bool,
        data: &DmaBuf,
        off: usize,
    ) -> Result<(), Sense> {
        let n = blocks as usize * self.block_size as usize;
        if n == 0 {
            return Ok(());
        }
        if !data.contains(off as u64, 2 * n as u64) {
            return Err(Sense::internal_target_failure());
        }
        let mut held = self.lock.write().unwrap_or_else(|p| p.into_inner());
        // Asynchronous writes that started before the flag was set (a CAW
        // runs on a worker thread, never on the poller that reaps them).
        while self.async_writes.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        if held.is_none() {
            let len = self.max_blocks as usize * self.block_size as usize;
            *held = Some(DmaBuf::new(len).map_err(|_| Sense::internal_target_failure())?);
        }
        let medium = held.as_ref().ok_or_else(Sense::internal_target_failure)?;
        if medium.len() < n {
            return Err(Sense::internal_target_failure());
        }
        store
            .read(lba, medium, 0, n)
            .map_err(|e| io_sense(&e, false, lba))?;
        let differs = medium.with_bytes(0, n, |m| data.with_bytes(off, n, |v| first_difference(m, v)));
        // SBC-3 5.2: on a miscompare, MISCOMPARE DURING VERIFY OPERATION
        // with VALID = 1 and INFORMATION = the offset of the first byte
        // that differs; nothing is written.
        if let Some(i) = differs {
            return Err(Sense::miscompare(i as u64));
        }
        store
            .write(lba, data, off + n, n, fua)
            .map_err(|e| io_sense(&e, true, lba))
    }
}

/// The index of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}
