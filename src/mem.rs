//! Memory that RDMA hardware reads and writes.
//!
//! A [`DmaBuf`] is page-aligned anonymous memory. Once registered as a memory
//! region and named in a posted work request, the adapter may read or write
//! it at any moment until the matching completion is polled. So it is never
//! handed out as a long-lived `&mut [u8]`; the rest of srptd copies in and out
//! with bounds-checked methods, or borrows a range for the length of a
//! closure while it owns that range (nothing posted on it).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of all live [`DmaBuf`]s (RAM LUNs, channel rings and pools, SRQ
/// rings): what `srptd ctl status` shows as buffer memory, and what a leak
/// test compares.
static MAPPED: AtomicU64 = AtomicU64::new(0);

/// Bytes of all [`DmaBuf`]s mapped now.
pub fn mapped_bytes() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

/// Page-aligned, zero-initialised memory suitable for RDMA registration and
/// for `O_DIRECT` file I/O.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: DmaBuf is plain memory with no thread affinity; all access goes
// through raw-pointer copies whose ranges are bounds-checked.
unsafe impl Send for DmaBuf {}
// SAFETY: see above; concurrent access to disjoint ranges is the intended
// use (hardware and several contexts), and overlapping access is a protocol
// race SCSI allows (unordered tasks), never a memory-safety issue for Rust
// data structures because the bytes are opaque.
unsafe impl Sync for DmaBuf {}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .finish()
    }
}

/// The page size used to round allocations.
pub const PAGE_SIZE: usize = 4096;

impl DmaBuf {
    /// Maps `len` bytes (rounded up to a page; at least one page) of
    /// zero-filled anonymous memory.
    pub fn new(len: usize) -> io::Result<DmaBuf> {
        let len = len
            .max(1)
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer size overflows"))?;
        // SAFETY: anonymous private mapping with no address hint; the result
        // is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        MAPPED.fetch_add(len as u64, Ordering::Relaxed);
        Ok(DmaBuf { ptr, len })
    }

    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a `DmaBuf` has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Virtual address of the first byte, as used in scatter/gather entries.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Raw pointer for memory registration.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[track_caller]
    fn check(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        assert!(
            matches!(end, Some(e) if e <= self.len),
            "DmaBuf range {offset}+{len} outside buffer of {} bytes",
            self.len
        );
    }

    /// Whether `offset..offset+len` lies inside the buffer.
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|e| e <= self.len as u64)
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the buffer.
    #[track_caller]
    pub fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        // SAFETY: range checked above; dst is a distinct Rust allocation.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the buffer at `offset`.
    #[track_caller]
    pub fn write(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        // SAFETY: range checked above; src is a distinct Rust allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) }
    }

    /// Sets `len` bytes at `offset` to `byte`.
    #[track_caller]
    pub fn fill(&self, offset: usize, len: usize, byte: u8) {
        self.check(offset, len);
        // SAFETY: range checked above.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(offset), byte, len) }
    }

    /// Copies `len` bytes from `self[offset..]` to `dst[dst_offset..]`.
    /// The ranges may overlap when `dst` is `self`.
    #[track_caller]
    pub fn copy_to(&self, offset: usize, dst: &DmaBuf, dst_offset: usize, len: usize) {
        self.check(offset, len);
        dst.check(dst_offset, len);
        // SAFETY: both ranges checked; `copy` tolerates overlap.
        unsafe {
            std::ptr::copy(
                self.ptr.as_ptr().add(offset),
                dst.ptr.as_ptr().add(dst_offset),
                len,
            )
        }
    }

    /// Borrows `offset..offset+len` for the duration of `f`.
    ///
    /// The caller must own that range: no work request that could write it
    /// is posted (for a receive buffer: its completion has been polled and
    /// it has not been reposted). Otherwise the bytes may change under `f`.
    #[track_caller]
    pub fn with_bytes<R>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        self.check(offset, len);
        // SAFETY: range checked; lifetime limited to the closure. Hardware
        // writes into an owned range cannot happen by the contract above.
        let s = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) };
        f(s)
    }

    /// Mutable variant of [`with_bytes`](Self::with_bytes), with the same
    /// ownership contract (no work request posted that reads or writes it).
    #[track_caller]
    pub fn with_bytes_mut<R>(&self, offset: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.check(offset, len);
        // SAFETY: as in `with_bytes`; the range is owned by the caller, and
        // the closure cannot leak the borrow.
        let s = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) };
        f(s)
    }

    /// `pread(2)` from `fd` at `file_offset` into `self[offset..offset+len]`.
    /// Returns the number of bytes read (short at end of file).
    #[track_caller]
    pub fn read_from_fd(
        &self,
        fd: BorrowedFd<'_>,
        offset: usize,
        len: usize,
        file_offset: u64,
    ) -> io::Result<usize> {
        self.check(offset, len);
        // SAFETY: the destination range was checked above; `io_loop` keeps
        // every call inside it.
        self.io_loop(offset, len, file_offset, |p, n, off| unsafe {
            libc::pread(fd.as_raw_fd(), p.cast(), n, off)
        })
    }

    /// `pwrite(2)` of `self[offset..offset+len]` to `fd` at `file_offset`,
    /// retried until all bytes are written.
    #[track_caller]
    pub fn write_to_fd(
        &self,
        fd: BorrowedFd<'_>,
        offset: usize,
        len: usize,
        file_offset: u64,
    ) -> io::Result<()> {
        self.check(offset, len);
        // SAFETY: the source range was checked above; `io_loop` keeps every
        // call inside it.
        let done = self.io_loop(offset, len, file_offset, |p, n, off| unsafe {
            libc::pwrite(fd.as_raw_fd(), p.cast_const().cast(), n, off)
        })?;
        if done < len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote nothing"));
        }
        Ok(())
    }

    /// Calls `op(ptr, len, file_offset)` (a `pread`/`pwrite`) over
    /// `self[offset..offset+len]` until it is all moved or `op` moves
    /// nothing, retrying on `EINTR`; returns the bytes moved. The caller
    /// has checked the range.
    fn io_loop(
        &self,
        offset: usize,
        len: usize,
        file_offset: u64,
        op: impl Fn(*mut u8, usize, libc::off_t) -> isize,
    ) -> io::Result<usize> {
        let mut done = 0usize;
        while done < len {
            // SAFETY: `offset + done < offset + len`, inside the checked range.
            let p = unsafe { self.ptr.as_ptr().add(offset + done) };
            let n = op(p, len - done, (file_offset + done as u64) as libc::off_t);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped once.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        MAPPED.fetch_sub(self.len as u64, Ordering::Relaxed);
        if rc != 0 {
            tracing::error!("munmap of DmaBuf failed: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn rounds_to_pages_and_is_zeroed() {
        let b = DmaBuf::new(10).unwrap();
        assert_eq!(b.len(), PAGE_SIZE);
        assert_eq!(b.addr() % PAGE_SIZE as u64, 0);
        let mut out = [0xffu8; 16];
        b.read(100, &mut out);
        assert_eq!(out, [0u8; 16]);
    }

    #[test]
    fn copies_round_trip() {
        let a = DmaBuf::new(8192).unwrap();
        let b = DmaBuf::new(8192).unwrap();
        a.write(4000, b"hello, srp");
        a.copy_to(4000, &b, 10, 10);
        let mut out = [0u8; 10];
        b.read(10, &mut out);
        assert_eq!(&out, b"hello, srp");
        a.fill(4000, 5, b'x');
        a.with_bytes(4000, 10, |s| assert_eq!(s, b"xxxxx, srp"));
    }

    #[test]
    fn mapped_bytes_follow_live_buffers() {
        // 2 GiB, never touched: far more than other tests hold at once.
        const BIG: u64 = 2 << 30;
        let b = DmaBuf::new(BIG as usize).unwrap();
        assert!(mapped_bytes() >= BIG);
        drop(b);
        assert!(mapped_bytes() < BIG);
    }

    #[test]
    #[should_panic(expected = "outside buffer")]
    fn out_of_bounds_is_caught() {
        let a = DmaBuf::new(4096).unwrap();
        a.write(4090, &[0u8; 7]);
    }

    #[test]
    fn file_io() {
        use std::os::fd::AsFd;
        let f = tempfile_in_tmp();
        let a = DmaBuf::new(4096).unwrap();
        a.write(0, b"abcdef");
        a.write_to_fd(f.as_fd(), 0, 6, 512).unwrap();
        let b = DmaBuf::new(4096).unwrap();
        assert_eq!(b.read_from_fd(f.as_fd(), 0, 6, 512).unwrap(), 6);
        b.with_bytes(0, 6, |s| assert_eq!(s, b"abcdef"));
        assert_eq!(
            b.read_from_fd(f.as_fd(), 0, 100, 512).unwrap(),
            6,
            "short read at EOF"
        );
    }

    /// An empty read-write file in the temporary directory, already
    /// unlinked (gone when closed, whatever the test does).
    pub(crate) fn tempfile_in_tmp() -> std::fs::File {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "srptd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
