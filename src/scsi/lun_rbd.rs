//! Commands on RBD LUNs, asynchronous on the poller that received them:
//! [`RbdEngine::start`] makes the checks [`Nexus::run`] makes and submits
//! the command's librbd operation; librbd completes it on its own thread,
//! which appends it to the engine's [`Queue`] and signals its eventfd; the
//! poller reaps it in its loop ([`RbdEngine::reap`]) and answers. No
//! other thread of srptd is involved.
//!
//! | command | operations |
//! |---|---|
//! | READ | `rbd_aio_read` |
//! | WRITE | `rbd_aio_write`; with FUA then `rbd_aio_flush` |
//! | SYNCHRONIZE CACHE | `rbd_aio_flush` |
//! | UNMAP | `rbd_aio_write_zeroes` per block descriptor, one after another |
//! | WRITE SAME | `rbd_aio_writesame`; UNMAP = 1 with zeros: `rbd_aio_write_zeroes` |
//!
//! COMPARE AND WRITE, VERIFY and WRITE AND VERIFY, and writes on a LUN
//! that has seen a COMPARE AND WRITE ([`CawLock`](super::super::caw)),
//! are [`Started::Blocking`]: the worker pool runs them with the blocking
//! librbd calls.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::{completion, Counted, Nexus, ScsiCommand, Started, Stop};
use crate::mem::DmaBuf;
use crate::rbd::{Op, Queue};
use crate::scsi::cdb::Cmd;
use crate::scsi::disk::{io_sense, unmap_descriptor};
use crate::scsi::rbd_store::RbdBackstore;
use crate::scsi::Completion;

/// What follows the operation in flight.
#[derive(Debug)]
enum Next {
    Done,
    /// FUA: flush after the write.
    Flush,
    /// UNMAP: the descriptors after `next` of the parameter list in
    /// `buf[off..off+len]`.
    Unmap {
        buf: Arc<DmaBuf>,
        off: usize,
        len: usize,
        next: usize,
        count: usize,
    },
}

/// A command's I/O in flight; holds its LUN until it completes.
struct RbdIo {
    entry: Counted,
    next: Next,
    lba: u64,
    data_in: u32,
    write: bool,
    /// Counted with the LUN's COMPARE AND WRITE lock.
    holds_write: bool,
}

impl RbdIo {
    fn store(&self) -> Option<&RbdBackstore> {
        self.entry.disk.store().rbd()
    }

    fn completion(&self, r: io::Result<()>) -> Completion {
        match r {
            Ok(()) => Completion::good(self.data_in),
            Err(e) => completion(Err(Stop::Check(io_sense(&e, self.write, self.lba)))),
        }
    }

    /// The next UNMAP descriptor with blocks, as an operation.
    fn next_unmap(&mut self) -> Option<Op> {
        let bs = u64::from(self.entry.disk.store().block_size());
        let Next::Unmap {
            buf,
            off,
            len,
            next,
            count,
        } = &mut self.next
        else {
            return None;
        };
        while *next < *count {
            let (lba, nb) = buf.with_bytes(*off, *len, |p| unmap_descriptor(p, *next));
            *next += 1;
            if nb > 0 {
                self.lba = lba;
                return Some(Op::WriteZeroes {
                    off: lba * bs,
                    len: (nb * bs) as usize,
                });
            }
        }
        None
    }
}

impl Drop for RbdIo {
    fn drop(&mut self) {
        if self.holds_write {
            self.entry.disk.caw().end_async_write();
        }
    }
}

/// What a command needs from the engine.
enum Prepared {
    Io(RbdIo, Op, Option<Arc<DmaBuf>>),
    Done(u32),
    Blocking,
}

impl Nexus {
    /// The first librbd operation of `c`, after the checks
    /// [`run`](Self::run) makes. `zero`: a zeroed block for WRITE SAME
    /// with NDOB.
    fn prepare_rbd(
        &self,
        c: &ScsiCommand,
        data: &Arc<DmaBuf>,
        off: usize,
        len: u32,
        zero: &Arc<DmaBuf>,
    ) -> Result<Prepared, Stop> {
        if !matches!(
            c.cmd,
            Cmd::Read { .. }
                | Cmd::Write { .. }
                | Cmd::SyncCache { .. }
                | Cmd::Unmap { .. }
                | Cmd::WriteSame { .. }
        ) {
            return Ok(Prepared::Blocking);
        }
        let Some((entry, plan)) = self.admit_async(c, data, off, len, |s| s.rbd().is_some())? else {
            return Ok(Prepared::Blocking);
        };
        let disk = &entry.disk;
        let bs = disk.store().block_size() as usize;
        let byte = |lba: u64| lba * bs as u64;
        let mut next = Next::Done;
        let (op, buf, lba, data_in) = match c.cmd {
            Cmd::Read { lba, .. } => {
                let op = Op::Read {
                    off: byte(lba),
                    buf_off: off,
                    len: plan.len as usize,
                };
                (op, Some(data), lba, plan.len)
            }
            Cmd::Write { lba, fua, .. } => {
                if fua {
                    next = Next::Flush;
                }
                let op = Op::Write {
                    off: byte(lba),
                    buf_off: off,
                    len: plan.len as usize,
                };
                (op, Some(data), lba, 0)
            }
            Cmd::SyncCache { lba, .. } => (Op::Flush, None, lba, 0),
            Cmd::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => {
                let (pattern, at) = if ndob { (zero, 0) } else { (data, off) };
                let total = blocks as usize * bs;
                let zeros = ndob || pattern.with_bytes(at, bs, |p| p.iter().all(|&b| b == 0));
                let op = if disk.write_same_deallocates(unmap, zeros) {
                    Op::WriteZeroes {
                        off: byte(lba),
                        len: total,
                    }
                } else {
                    Op::WriteSame {
                        off: byte(lba),
                        len: total,
                        buf_off: at,
                        pattern_len: bs,
                    }
                };
                (op, Some(pattern), lba, 0)
            }
            Cmd::Unmap { .. } => {
                if plan.len == 0 {
                    return Ok(Prepared::Done(0));
                }
                let n = plan.len as usize;
                let count = data.with_bytes(off, n, |p| disk.check_unmap(p))?;
                next = Next::Unmap {
                    buf: Arc::clone(data),
                    off,
                    len: n,
                    next: 0,
                    count,
                };
                (Op::Flush, None, 0, 0)
            }
            _ => return Ok(Prepared::Blocking),
        };
        let write = !matches!(c.cmd, Cmd::Read { .. });
        if plan.len == 0 && matches!(c.cmd, Cmd::Read { .. } | Cmd::Write { .. }) {
            return Ok(Prepared::Done(0));
        }
        let holds_write = write && !matches!(c.cmd, Cmd::SyncCache { .. });
        if holds_write && !disk.caw().begin_async_write() {
            return Ok(Prepared::Blocking);
        }
        let mut io = RbdIo {
            entry,
            next,
            lba,
            data_in,
            write,
            holds_write,
        };
        if matches!(io.next, Next::Unmap { .. }) {
            // The first descriptor with blocks, or nothing to do.
            return Ok(match io.next_unmap() {
                Some(op) => Prepared::Io(io, op, None),
                None => Prepared::Done(0),
            });
        }
        Ok(Prepared::Io(io, op, buf.cloned()))
    }
}

/// One poller's RBD commands in flight, each known by the caller's tag.
pub struct RbdEngine<T> {
    queue: Queue<(T, RbdIo)>,
    /// Follow-up operations found while reaping (FUA flushes, UNMAP
    /// descriptors), submitted after.
    again: Vec<(T, RbdIo, Op)>,
    /// One zeroed 4 KiB block (WRITE SAME with NDOB).
    zero: Arc<DmaBuf>,
    commands: u64,
}

impl<T> fmt::Debug for RbdEngine<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdEngine")
            .field("queue", &self.queue)
            .field("commands", &self.commands)
            .finish()
    }
}

impl<T> RbdEngine<T> {
    /// An engine for about `capacity` commands in flight (more grow its
    /// tables).
    pub fn new(capacity: usize) -> io::Result<RbdEngine<T>> {
        Ok(RbdEngine {
            queue: Queue::new(capacity)?,
            again: Vec::with_capacity(capacity),
            zero: Arc::new(DmaBuf::new(4096)?),
            commands: 0,
        })
    }

    /// Readable when completions wait (see [`Queue::eventfd`]).
    pub fn eventfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.queue.eventfd()
    }

    /// Resets the eventfd (before sleeping, after it was readable).
    pub fn clear_event(&self) {
        self.queue.clear_event();
    }

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Commands started on the engine, and librbd operations submitted.
    pub fn counts(&self) -> (u64, u64) {
        (self.commands, self.queue.submitted())
    }

    /// Starts command `c` of `nexus` with `buf[off..off+len]` as its data
    /// (as [`Nexus::run`] takes them); librbd sends it at once.
    pub fn start(
        &mut self,
        tag: T,
        nexus: &Nexus,
        c: &ScsiCommand,
        buf: &Arc<DmaBuf>,
        off: usize,
        len: u32,
    ) -> Started {
        match nexus.prepare_rbd(c, buf, off, len, &self.zero) {
            Err(stop) => Started::Done(completion(Err(stop))),
            Ok(Prepared::Done(n)) => Started::Done(Completion::good(n)),
            Ok(Prepared::Blocking) => Started::Blocking,
            Ok(Prepared::Io(io, op, data)) => {
                self.commands += 1;
                match self.submit(tag, io, op, data.as_ref()) {
                    Ok(()) => Started::Submitted,
                    Err((_, io, e)) => Started::Done(io.completion(Err(e))),
                }
            }
        }
    }

    fn submit(
        &mut self,
        tag: T,
        io: RbdIo,
        op: Op,
        data: Option<&Arc<DmaBuf>>,
    ) -> Result<(), (T, RbdIo, io::Error)> {
        let Some(image) = io.store().map(|s| Arc::clone(s.image())) else {
            return Err((tag, io, io::Error::other("not an RBD LUN")));
        };
        self.queue
            .submit(&image, op, data, (tag, io))
            .map_err(|((tag, io), e)| (tag, io, e))
    }

    /// Appends the commands whose I/O finished to `out`, with their
    /// completions, and submits follow-up operations. No system call of
    /// its own. Returns how many operations completed.
    pub fn reap(&mut self, out: &mut Vec<(T, Completion)>) -> usize {
        let mut again = std::mem::take(&mut self.again);
        let n = self.queue.reap(|(tag, mut io), _, ret| {
            if ret < 0 {
                let e = io::Error::from_raw_os_error((-ret) as i32);
                out.push((tag, io.completion(Err(e))));
                return;
            }
            match io.next {
                Next::Done => out.push((tag, io.completion(Ok(())))),
                Next::Flush => {
                    io.next = Next::Done;
                    again.push((tag, io, Op::Flush));
                }
                Next::Unmap { .. } => match io.next_unmap() {
                    Some(op) => again.push((tag, io, op)),
                    None => out.push((tag, io.completion(Ok(())))),
                },
            }
        });
        for (tag, io, op) in again.drain(..) {
            if let Err((tag, io, e)) = self.submit(tag, io, op, None) {
                out.push((tag, io.completion(Err(e))));
            }
        }
        self.again = again;
        n
    }

    /// Blocks until a completion waits or `timeout` passed (tests).
    pub fn wait(&self, timeout: std::time::Duration) -> io::Result<()> {
        self.queue.wait(timeout)
    }
}
