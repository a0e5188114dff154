//! A safe io_uring for backstore I/O: [`Ring`] submits reads, writes,
//! fsyncs and fallocates on file descriptors and hands back each one's
//! result with the caller's payload.
//!
//! The only `unsafe` is pushing submission queue entries: the kernel may
//! read or write an entry's buffer until its completion is reaped. The
//! ring keeps a clone of the buffer's `Arc<DmaBuf>` (and the caller's
//! payload, which owns the descriptor) in a slot until that completion
//! arrives, and its `Drop` waits for every operation in flight, so the
//! memory outlives the operation whatever the caller does.
//!
//! Buffers that many operations use (a channel's data pool and receive
//! ring) can be registered with the ring ([`Ring::register_buffer`]): the
//! kernel pins their pages once, and reads and writes into them are
//! `READ_FIXED`/`WRITE_FIXED`, which skip pinning per operation.
//!
//! Nothing allocates per operation once the slot table has grown to the
//! largest number in flight; reaping reads the shared completion ring with
//! no system call; [`Ring::submit`] is one `io_uring_enter` for everything
//! pushed since the last one. The ring signals an eventfd on completions,
//! for a poller to sleep on.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use crate::mem::DmaBuf;

/// One operation on a file descriptor. Offsets are bytes in the file;
/// `buf_off`/`len` select the bytes of the buffer passed with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `pread` into the buffer.
    Read {
        fd: RawFd,
        file_off: u64,
        buf_off: usize,
        len: u32,
    },
    /// `pwritev2` from the buffer; `dsync`: `RWF_DSYNC` (on stable
    /// storage when it completes).
    Write {
        fd: RawFd,
        file_off: u64,
        buf_off: usize,
        len: u32,
        dsync: bool,
    },
    /// `fdatasync`.
    Fsync { fd: RawFd },
    /// `fallocate(fd, mode, file_off, len)`.
    Fallocate {
        fd: RawFd,
        mode: i32,
        file_off: u64,
        len: u64,
    },
}

impl Op {
    /// The buffer bytes the operation reads or writes.
    fn buf_range(&self) -> Option<(usize, u32)> {
        match *self {
            Op::Read { buf_off, len, .. } | Op::Write { buf_off, len, .. } => Some((buf_off, len)),
            Op::Fsync { .. } | Op::Fallocate { .. } => None,
        }
    }
}

/// Why an operation was not pushed; the payload comes back.
#[derive(Debug)]
pub enum PushError<P> {
    /// The operation moves data and no buffer was given, or its range is
    /// outside the buffer.
    BadBuffer(P),
    /// The submission queue is full even after submitting.
    Full(P),
}

struct InFlight<P> {
    buf: Option<Arc<DmaBuf>>,
    payload: P,
}

/// An io_uring with an eventfd and a table of operations in flight.
pub struct Ring<P> {
    ring: IoUring,
    eventfd: OwnedFd,
    slots: Vec<Option<InFlight<P>>>,
    free: Vec<u32>,
    /// Pushed and not yet submitted.
    queued: u32,
    in_flight: usize,
    /// Operations pushed over the ring's life.
    pushed: u64,
    /// `io_uring_enter` calls made to submit.
    enters: u64,
    /// Registered buffers by index, with how many users registered each
    /// (empty where the kernel has no sparse buffer table, before 5.19).
    fixed: Vec<Option<(Arc<DmaBuf>, u32)>>,
}

/// Slots of the registered-buffer table.
const FIXED_SLOTS: u32 = 64;

impl<P> fmt::Debug for Ring<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("queued", &self.queued)
            .field("pushed", &self.pushed)
            .finish()
    }
}

/// The opcodes [`Ring`] uses (READ and WRITE need Linux 5.6).
const OPCODES: [u8; 4] = [
    opcode::Read::CODE,
    opcode::Write::CODE,
    opcode::Fsync::CODE,
    opcode::Fallocate::CODE,
];

impl<P> Ring<P> {
    /// A ring of `entries` submission slots (rounded up to a power of two)
    /// with a completion queue four times that. Fails where io_uring is
    /// unavailable (`ENOSYS`: old kernel or disabled by sysctl; `EPERM`:
    /// seccomp, container policy) or lacks an opcode (`EOPNOTSUPP`).
    pub fn new(entries: u32) -> io::Result<Ring<P>> {
        let entries = entries.clamp(8, 4096).next_power_of_two();
        let ring = IoUring::builder().setup_cqsize(entries * 4).build(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if let Some(op) = OPCODES.iter().find(|&&c| !probe.is_supported(c)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring opcode {op} not supported by this kernel"),
            ));
        }
        // SAFETY: eventfd(2) takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let fixed = match ring.submitter().register_buffers_sparse(FIXED_SLOTS) {
            Ok(()) => (0..FIXED_SLOTS).map(|_| None).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no registered buffers for io_uring");
                Vec::new()
            }
        };
        Ok(Ring {
            fixed,
            ring,
            eventfd,
            slots: Vec::with_capacity(entries as usize),
            free: Vec::with_capacity(entries as usize),
            queued: 0,
            in_flight: 0,
            pushed: 0,
            enters: 0,
        })
    }

    /// Readable after completions were posted: sleep on it, then
    /// [`clear_event`](Self::clear_event) and [`reap`](Self::reap).
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Resets the eventfd (after it was found readable).
    pub fn clear_event(&self) {
        let mut b = [0u8; 8];
        // Nonblocking: EAGAIN when nothing was signalled.
        let _ = read_counter(self.eventfd.as_fd(), &mut b);
    }

    /// Operations pushed whose completion was not reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Operations pushed over the ring's life, and `io_uring_enter` calls.
    pub fn counts(&self) -> (u64, u64) {
        (self.pushed, self.enters)
    }

    /// Registers `buf` (or counts one more user of it): reads and writes
    /// into it then skip pinning its pages. False when it could not be
    /// (no table, table full, the kernel refused); operations still work.
    pub fn register_buffer(&mut self, buf: &Arc<DmaBuf>) -> bool {
        if let Some((_, users)) = self.fixed.iter_mut().flatten().find(|(b, _)| Arc::ptr_eq(b, buf)) {
            *users += 1;
            return true;
        }
        let Some(i) = self.fixed.iter().position(Option::is_none) else {
            return false;
        };
        let iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        // SAFETY: the iovec describes `buf`'s whole mapping, which the
        // table entry keeps alive (an `Arc`) until it is unregistered; the
        // kernel pins the pages and holds them while operations use them.
        match unsafe {
            self.ring
                .submitter()
                .register_buffers_update(i as u32, &iov, None)
        } {
            Ok(()) => {
                self.fixed[i] = Some((Arc::clone(buf), 1));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "registering an io_uring buffer failed");
                false
            }
        }
    }

    /// Drops one user of a buffer registered with `register_buffer`; the
    /// last one removes it from the table (operations in flight on it
    /// keep its pages until they complete).
    pub fn unregister_buffer(&mut self, buf: &Arc<DmaBuf>) {
        let Some(i) = self.fixed_index(buf) else {
            return;
        };
        if let Some((_, users)) = &mut self.fixed[i] {
            *users -= 1;
            if *users > 0 {
                return;
            }
        }
        let iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }];
        // SAFETY: an empty iovec removes the table entry; no memory is
        // passed.
        if let Err(e) = unsafe {
            self.ring
                .submitter()
                .register_buffers_update(i as u32, &iov, None)
        } {
            tracing::warn!(error = %e, "removing an io_uring buffer failed; keeping it");
            return;
        }
        self.fixed[i] = None;
    }

    fn fixed_index(&self, buf: &Arc<DmaBuf>) -> Option<usize> {
        self.fixed
            .iter()
            .position(|f| f.as_ref().is_some_and(|(b, _)| Arc::ptr_eq(b, buf)))
    }

    /// Buffers registered now.
    pub fn registered_buffers(&self) -> usize {
        self.fixed.iter().flatten().count()
    }

    /// Queues `op` (submitted by the next [`submit`](Self::submit)). A
    /// `Read` or `Write` needs `buf` and a range inside it; the ring holds
    /// `buf` and `payload` until the completion is reaped. The caller keeps
    /// the descriptor open that long (the payload may own it).
    pub fn push(&mut self, op: Op, buf: Option<&Arc<DmaBuf>>, payload: P) -> Result<(), PushError<P>> {
        let entry = match (op.buf_range(), buf) {
            (None, _) => Self::entry(op, std::ptr::null_mut(), None),
            (Some((off, len)), Some(b)) if b.contains(off as u64, u64::from(len)) => {
                let fixed = self.fixed_index(b).map(|i| i as u16);
                // In bounds: checked just above.
                Self::entry(op, b.as_mut_ptr().wrapping_add(off), fixed)
            }
            (Some(_), _) => return Err(PushError::BadBuffer(payload)),
        };
        if self.ring.submission().is_full() && self.submit().is_err() {
            return Err(PushError::Full(payload));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let entry = entry.user_data(u64::from(slot));
        // SAFETY: the entry points into `buf[off..off+len]` (checked above)
        // or at no memory. The slot keeps a clone of `buf` until the entry's
        // completion is reaped (`reap`, or `Drop`, which waits for every
        // operation in flight), so the memory outlives the operation.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.free.push(slot);
            return Err(PushError::Full(payload));
        }
        self.slots[slot as usize] = Some(InFlight {
            buf: buf.filter(|_| op.buf_range().is_some()).cloned(),
            payload,
        });
        self.queued += 1;
        self.in_flight += 1;
        self.pushed += 1;
        Ok(())
    }

    /// The entry for `op` on `ptr`; `fixed`: the index of the registered
    /// buffer `ptr` lies in.
    fn entry(op: Op, ptr: *mut u8, fixed: Option<u16>) -> squeue::Entry {
        match op {
            Op::Read {
                fd, file_off, len, ..
            } => match fixed {
                Some(i) => opcode::ReadFixed::new(types::Fd(fd), ptr, len, i)
                    .offset(file_off)
                    .build(),
                None => opcode::Read::new(types::Fd(fd), ptr, len)
                    .offset(file_off)
                    .build(),
            },
            Op::Write {
                fd,
                file_off,
                len,
                dsync,
                ..
            } => {
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                match fixed {
                    Some(i) => opcode::WriteFixed::new(types::Fd(fd), ptr.cast_const(), len, i)
                        .offset(file_off)
                        .rw_flags(flags)
                        .build(),
                    None => opcode::Write::new(types::Fd(fd), ptr.cast_const(), len)
                        .offset(file_off)
                        .rw_flags(flags)
                        .build(),
                }
            }
            Op::Fsync { fd } => opcode::Fsync::new(types::Fd(fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Fallocate {
                fd,
                mode,
                file_off,
                len,
            } => opcode::Fallocate::new(types::Fd(fd), len)
                .offset(file_off)
                .mode(mode)
                .build(),
        }
    }

    /// Submits everything pushed since the last call: one `io_uring_enter`,
    /// none when nothing was pushed.
    pub fn submit(&mut self) -> io::Result<usize> {
        if self.queued == 0 {
            return Ok(0);
        }
        self.enters += 1;
        loop {
            match self.ring.submit() {
                Ok(n) => {
                    self.queued = self.queued.saturating_sub(n as u32);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `f(payload, buffer, result)` for each completion posted
    /// (result: bytes moved, or `-errno`); no system call. Returns how many.
    pub fn reap(&mut self, mut f: impl FnMut(P, Option<Arc<DmaBuf>>, i32)) -> usize {
        let mut n = 0;
        // One view of the completion ring: its head moves on when dropped.
        for cqe in &mut self.ring.completion() {
            let slot = cqe.user_data() as usize;
            let Some(done) = self.slots.get_mut(slot).and_then(Option::take) else {
                tracing::error!(slot, "io_uring completion for an empty slot");
                continue;
            };
            self.free.push(slot as u32);
            self.in_flight -= 1;
            n += 1;
            f(done.payload, done.buf, cqe.result());
        }
        n
    }

    /// Submits and blocks until at least one completion is posted (tests,
    /// shutdown).
    pub fn wait(&mut self) -> io::Result<()> {
        if self.in_flight == 0 {
            return Ok(());
        }
        self.enters += 1;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(n) => {
                    self.queued = self.queued.saturating_sub(n as u32);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl<P> Drop for Ring<P> {
    /// Waits for every operation in flight: their buffers are freed only
    /// after the kernel is done with them.
    fn drop(&mut self) {
        while self.in_flight > 0 {
            if let Err(e) = self.wait() {
                // The kernel refuses to wait: leak the buffers rather than
                // free memory it may still write.
                tracing::error!(error = %e, in_flight = self.in_flight, "io_uring wait at shutdown failed");
                std::mem::forget(std::mem::take(&mut self.slots));
                return;
            }
            self.reap(|_, _, _| {});
        }
    }
}

/// `read(2)` of an eventfd's 8-byte counter.
fn read_counter(fd: BorrowedFd<'_>, b: &mut [u8; 8]) -> io::Result<usize> {
    // SAFETY: `b` is 8 writable bytes for the length of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn ring() -> Option<Ring<u32>> {
        match Ring::new(8) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}); skipping");
                None
            }
        }
    }

    /// Submits `op` alone as `tag` and returns its result.
    fn one(r: &mut Ring<u32>, op: Op, buf: &Arc<DmaBuf>, tag: u32) -> i32 {
        r.push(op, Some(buf), tag).unwrap();
        r.submit().unwrap();
        r.wait().unwrap();
        let mut res = None;
        assert_eq!(r.reap(|p, _, n| res = Some((p, n))), 1);
        let (p, n) = res.unwrap();
        assert_eq!(p, tag);
        n
    }

    #[test]
    fn reads_writes_and_syncs_a_file() {
        let Some(mut r) = ring() else { return };
        let mut f = crate::mem::tests::tempfile_in_tmp();
        f.write_all(&[7u8; 8192]).unwrap();
        let fd = f.as_raw_fd();
        let buf = Arc::new(DmaBuf::new(8192).unwrap());
        buf.fill(0, 4096, 0x5a);
        let w = Op::Write {
            fd,
            file_off: 4096,
            buf_off: 0,
            len: 4096,
            dsync: true,
        };
        r.push(w, Some(&buf), 1).unwrap();
        r.push(Op::Fsync { fd }, None, 2).unwrap();
        assert_eq!(r.submit().unwrap(), 2);
        let mut got = vec![];
        while got.len() < 2 {
            r.wait().unwrap();
            r.reap(|p, _, res| got.push((p, res)));
        }
        got.sort();
        assert_eq!(got, [(1, 4096), (2, 0)]);
        let rd = Op::Read {
            fd,
            file_off: 0,
            buf_off: 0,
            len: 8192,
        };
        assert_eq!(one(&mut r, rd, &buf, 3), 8192);
        buf.with_bytes(0, 8192, |b| {
            assert!(b[..4096].iter().all(|&x| x == 7));
            assert!(b[4096..].iter().all(|&x| x == 0x5a));
        });
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn registered_buffers_read_and_write_fixed() {
        let Some(mut r) = ring() else { return };
        let buf = Arc::new(DmaBuf::new(16384).unwrap());
        if !r.register_buffer(&buf) {
            eprintln!("no registered buffers here; skipping");
            return;
        }
        assert!(r.register_buffer(&buf), "a second user");
        assert_eq!(r.registered_buffers(), 1);
        let f = crate::mem::tests::tempfile_in_tmp();
        let fd = f.as_raw_fd();
        buf.fill(4096, 4096, 0x33);
        let w = Op::Write {
            fd,
            file_off: 0,
            buf_off: 4096,
            len: 4096,
            dsync: false,
        };
        assert_eq!(one(&mut r, w, &buf, 1), 4096);
        let rd = Op::Read {
            fd,
            file_off: 0,
            buf_off: 12288,
            len: 4096,
        };
        assert_eq!(one(&mut r, rd, &buf, 2), 4096);
        buf.with_bytes(12288, 4096, |b| assert!(b.iter().all(|&x| x == 0x33)));
        r.unregister_buffer(&buf);
        assert_eq!(r.registered_buffers(), 1);
        r.unregister_buffer(&buf);
        assert_eq!(r.registered_buffers(), 0);
    }

    #[test]
    fn refuses_ranges_outside_the_buffer() {
        let Some(mut r) = ring() else { return };
        let buf = Arc::new(DmaBuf::new(4096).unwrap());
        let op = Op::Read {
            fd: 0,
            file_off: 0,
            buf_off: 4000,
            len: 512,
        };
        assert!(matches!(r.push(op, Some(&buf), 9), Err(PushError::BadBuffer(9))));
        assert!(matches!(r.push(op, None, 9), Err(PushError::BadBuffer(9))));
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn drop_waits_for_operations_in_flight() {
        let Some(mut r) = ring() else { return };
        let buf = Arc::new(DmaBuf::new(4096).unwrap());
        let f = std::fs::File::open("/dev/zero").unwrap();
        buf.fill(0, 4096, 1);
        let op = Op::Read {
            fd: f.as_raw_fd(),
            file_off: 0,
            buf_off: 0,
            len: 4096,
        };
        r.push(op, Some(&buf), 0).unwrap();
        r.submit().unwrap();
        drop(r);
        buf.with_bytes(0, 4096, |b| assert!(b.iter().all(|&x| x == 0)));
    }
}
