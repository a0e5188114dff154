//! Commands whose backstore I/O runs on an asynchronous engine: an
//! io_uring that the poller thread submits to and reaps in its own loop,
//! so a file LUN's READ, WRITE and SYNCHRONIZE CACHE involve no other
//! thread. The same checks as [`Nexus::run`] come first; the command is
//! answered when its operation completes (an abort meanwhile waits for
//! that, as for a command on the worker pool: the channel keeps it
//! executing until [`AsyncEngine::reap`] reports it).
//!
//! What the engine does not take (UNMAP, WRITE SAME, COMPARE AND WRITE,
//! VERIFY, writes on a LUN that has seen a COMPARE AND WRITE, RAM LUNs,
//! everything without backstore I/O) it reports as [`Started::Blocking`]:
//! the caller runs it with [`Nexus::run`] as before.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::{completion, Counted, Nexus, ScsiCommand, Stop};
use crate::mem::DmaBuf;
use crate::scsi::cdb::Cmd;
use crate::scsi::disk::io_sense;
use crate::scsi::file_aio::{self, AsyncFiles, Req, Step};
use crate::scsi::{Backstore, Completion, DataDir, Plan, Sense};
use crate::uring::{PushError, Ring};

/// What [`AsyncEngine::start`] did with a command.
#[derive(Debug)]
pub enum Started {
    /// Its operation is queued; [`AsyncEngine::reap`] reports it.
    Submitted,
    /// Finished without backstore I/O (a check failed, or nothing to move).
    Done(Completion),
    /// Not for the engine: run it with [`Nexus::run`].
    Blocking,
}

/// A command's backstore request in flight; holds its LUN (and so the
/// descriptors) until the operation completes.
struct InFlight {
    entry: Counted,
    req: Req,
    lba: u64,
    /// Data-in bytes to report when done.
    data_in: u32,
    /// The last operation went to the `O_DIRECT` descriptor.
    direct: bool,
    /// Counted with the LUN's COMPARE AND WRITE lock.
    holds_write: bool,
    /// The bounce chunk the data was copied into.
    bounce: Option<u16>,
}

impl InFlight {
    fn files(&self) -> Option<&AsyncFiles> {
        self.entry.disk.store().async_files()
    }

    fn completion(&self, r: io::Result<()>) -> Completion {
        match r {
            Ok(()) => Completion::good(self.data_in),
            Err(e) => {
                let write = !matches!(self.req, Req::Read { .. });
                completion(Err(Stop::Check(io_sense(&e, write, self.lba))))
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.holds_write {
            self.entry.disk.caw().end_async_write();
        }
    }
}

/// What a command needs from the engine.
enum Prepared {
    Io(InFlight),
    Done(u32),
    Blocking,
}

impl Nexus {
    /// The checks [`run`](Self::run) makes, for a command an asynchronous
    /// engine takes: its LUN, counted in until the operation has completed
    /// (a LUN removed meanwhile is flushed after it, `drain.rs`), and its
    /// plan, validated again (the capacity or write protection may have
    /// changed since planning). `None`: the LUN's backstore is not the
    /// engine's (`serves`), so the command runs on the blocking path.
    pub(super) fn admit_async(
        &self,
        c: &ScsiCommand,
        data: &DmaBuf,
        off: usize,
        len: u32,
        serves: impl Fn(&dyn Backstore) -> bool,
    ) -> Result<Option<(Counted, Plan)>, Stop> {
        if self.is_aborted(c) {
            return Err(Stop::Aborted);
        }
        let t = self.target.table.load();
        let (_, m) = self.admitted(&t, c)?;
        if !serves(m.entry.disk.store().as_ref()) {
            return Ok(None);
        }
        let entry = m.entry.count_in().ok_or_else(Sense::lun_not_supported)?;
        let plan = entry.disk.plan(&c.cmd, c.opcode)?;
        if !data.contains(off as u64, u64::from(len)) {
            return Err(Sense::internal_target_failure().into());
        }
        if plan.dir == DataDir::Out && len < plan.len {
            return Err(Sense::invalid_field_in_command_iu().into());
        }
        Ok(Some((entry, plan)))
    }

    /// The backstore request of `c`, after the checks [`run`](Self::run)
    /// makes.
    fn prepare_async(&self, c: &ScsiCommand, data: &DmaBuf, off: usize, len: u32) -> Result<Prepared, Stop> {
        if !matches!(
            c.cmd,
            Cmd::Read { .. } | Cmd::Write { .. } | Cmd::SyncCache { .. }
        ) {
            return Ok(Prepared::Blocking);
        }
        let Some((entry, plan)) = self.admit_async(c, data, off, len, |s| s.async_files().is_some())? else {
            return Ok(Prepared::Blocking);
        };
        let disk = &entry.disk;
        let bs = u64::from(disk.store().block_size());
        let (req, lba, data_in) = match c.cmd {
            Cmd::Read { lba, .. } => {
                let r = Req::Read {
                    file_off: lba * bs,
                    buf_off: off,
                    len: plan.len,
                };
                (r, lba, plan.len)
            }
            Cmd::Write { lba, fua, .. } => {
                let r = Req::Write {
                    file_off: lba * bs,
                    buf_off: off,
                    len: plan.len,
                    fua,
                };
                (r, lba, 0)
            }
            Cmd::SyncCache { lba, .. } => (Req::Flush, lba, 0),
            _ => return Ok(Prepared::Blocking),
        };
        if plan.len == 0 && req != Req::Flush {
            return Ok(Prepared::Done(0));
        }
        let holds_write = matches!(req, Req::Write { .. });
        if holds_write && !disk.caw().begin_async_write() {
            return Ok(Prepared::Blocking);
        }
        Ok(Prepared::Io(InFlight {
            entry,
            req,
            lba,
            data_in,
            direct: false,
            holds_write,
            bounce: None,
        }))
    }
}

/// Figures of an engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounts {
    /// Commands whose I/O went to the ring.
    pub commands: u64,
    /// Operations pushed (partial transfers and `O_DIRECT` refusals
    /// resubmit).
    pub ops: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Writes copied to an aligned bounce chunk for `O_DIRECT`.
    pub bounced: u64,
}

/// Bytes of one bounce chunk: the Linux initiator's immediate data (8 KiB
/// by default, `max_imm_data`) fits twice; longer misaligned writes go to
/// the worker pool, which bounces them in pieces.
const BOUNCE_CHUNK: usize = 16 << 10;
/// Bounce chunks per engine (4 MiB): a chunk per immediate-data write in
/// flight on the poller, so a few channels at queue depth 64 keep theirs
/// on the ring.
const BOUNCE_CHUNKS: u16 = 256;

/// Aligned copies of write data that arrives misaligned for `O_DIRECT`:
/// immediate data sits at the IU's data offset (80 bytes into a receive
/// slot with the Linux initiator). A copy into an aligned chunk costs a
/// `memcpy`; writing it buffered instead costs the page cache, an io-wq
/// hand-off and writeback.
struct Bounce {
    buf: Arc<DmaBuf>,
    free: Vec<u16>,
    copies: u64,
}

impl Bounce {
    fn new() -> io::Result<Bounce> {
        Ok(Bounce {
            buf: Arc::new(DmaBuf::new(BOUNCE_CHUNK * usize::from(BOUNCE_CHUNKS))?),
            free: (0..BOUNCE_CHUNKS).rev().collect(),
            copies: 0,
        })
    }

    /// The buffer a transfer moves through: `buf`, or for a misaligned
    /// write to an `O_DIRECT` file a free chunk it was copied into (the
    /// request then points at it). `None`: it needs a chunk and none is
    /// free (or it is longer than one, or it is a read, which data-in
    /// pool extents never need); the worker pool, which bounces too,
    /// takes it. Never the page cache: see `direct_io.rs`.
    fn take(&mut self, io: &mut InFlight, buf: &Arc<DmaBuf>) -> Option<Arc<DmaBuf>> {
        let (file_off, buf_off, len, write) = match &mut io.req {
            Req::Write {
                file_off,
                buf_off,
                len,
                ..
            } => (file_off, buf_off, len, true),
            Req::Read {
                file_off,
                buf_off,
                len,
            } => (file_off, buf_off, len, false),
            Req::Flush => return Some(Arc::clone(buf)),
        };
        let direct = io
            .entry
            .disk
            .store()
            .async_files()
            .is_some_and(AsyncFiles::has_direct);
        let misaligned = !file_aio::aligned(buf, *buf_off, u64::from(*len), *file_off)
            && file_aio::aligned(&self.buf, 0, u64::from(*len), *file_off);
        if !direct || !misaligned {
            return Some(Arc::clone(buf));
        }
        if !write || *len as usize > BOUNCE_CHUNK {
            return None;
        }
        let c = self.free.pop()?;
        let at = usize::from(c) * BOUNCE_CHUNK;
        buf.copy_to(*buf_off, &self.buf, at, *len as usize);
        *buf_off = at;
        io.bounce = Some(c);
        self.copies += 1;
        Some(Arc::clone(&self.buf))
    }

    fn give_back(&mut self, io: &mut InFlight) {
        if let Some(c) = io.bounce.take() {
            self.free.push(c);
        }
    }
}

/// An io_uring for backstore I/O with the commands in flight on it, each
/// known by the caller's tag `T`.
pub struct AsyncEngine<T> {
    ring: Ring<(T, InFlight)>,
    again: Vec<(T, InFlight, Option<Arc<DmaBuf>>)>,
    bounce: Bounce,
    commands: u64,
}

impl<T> fmt::Debug for AsyncEngine<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEngine")
            .field("ring", &self.ring)
            .field("commands", &self.commands)
            .finish()
    }
}

impl<T> AsyncEngine<T> {
    /// An engine with a ring of `entries` submission slots; fails where
    /// io_uring is unavailable (see [`Ring::new`]).
    pub fn new(entries: u32) -> io::Result<AsyncEngine<T>> {
        let mut ring = Ring::new(entries)?;
        let bounce = Bounce::new()?;
        ring.register_buffer(&bounce.buf);
        Ok(AsyncEngine {
            ring,
            again: Vec::with_capacity(entries as usize),
            bounce,
            commands: 0,
        })
    }

    /// Readable when completions are waiting (see [`Ring::eventfd`]).
    pub fn eventfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ring.eventfd()
    }

    /// Resets the eventfd after it was found readable.
    pub fn clear_event(&self) {
        self.ring.clear_event();
    }

    /// Registers a buffer commands move data through (a channel's data
    /// pool or receive ring), see [`Ring::register_buffer`].
    pub fn register_buffer(&mut self, buf: &Arc<DmaBuf>) -> bool {
        self.ring.register_buffer(buf)
    }

    /// Undoes one [`register_buffer`](Self::register_buffer).
    pub fn unregister_buffer(&mut self, buf: &Arc<DmaBuf>) {
        self.ring.unregister_buffer(buf);
    }

    /// Commands in flight (operations not yet reaped).
    pub fn in_flight(&self) -> usize {
        self.ring.in_flight()
    }

    /// What the engine did so far.
    pub fn counts(&self) -> EngineCounts {
        let (ops, enters) = self.ring.counts();
        EngineCounts {
            commands: self.commands,
            ops,
            enters,
            bounced: self.bounce.copies,
        }
    }

    /// Starts command `c` of `nexus` with `buf[off..off+len]` as its data
    /// (as [`Nexus::run`] takes them). Queued operations go to the kernel
    /// at the next [`submit`](Self::submit).
    pub fn start(
        &mut self,
        tag: T,
        nexus: &Nexus,
        c: &ScsiCommand,
        buf: &Arc<DmaBuf>,
        off: usize,
        len: u32,
    ) -> Started {
        match nexus.prepare_async(c, buf, off, len) {
            Err(stop) => Started::Done(completion(Err(stop))),
            Ok(Prepared::Done(n)) => Started::Done(Completion::good(n)),
            Ok(Prepared::Blocking) => Started::Blocking,
            Ok(Prepared::Io(mut io)) => {
                let Some(data) = self.bounce.take(&mut io, buf) else {
                    return Started::Blocking;
                };
                match self.push(tag, io, Some(&data)) {
                    Ok(()) => {
                        self.commands += 1;
                        Started::Submitted
                    }
                    // The ring refused: run it the blocking way instead.
                    Err((_, mut io)) => {
                        self.bounce.give_back(&mut io);
                        Started::Blocking
                    }
                }
            }
        }
    }

    fn push(&mut self, tag: T, mut io: InFlight, buf: Option<&Arc<DmaBuf>>) -> Result<(), (T, InFlight)> {
        let Some(files) = io.files() else {
            return Err((tag, io));
        };
        let (op, direct) = files.op(&io.req, buf.map(|b| &**b));
        io.direct = direct;
        let buf = buf.filter(|_| io.req != Req::Flush);
        match self.ring.push(op, buf, (tag, io)) {
            Ok(()) => Ok(()),
            Err(PushError::Full(p) | PushError::BadBuffer(p)) => Err(p),
        }
    }

    /// Sends the operations queued since the last call to the kernel (one
    /// system call; none if nothing is queued).
    pub fn submit(&mut self) -> io::Result<usize> {
        self.ring.submit()
    }

    /// Appends the commands whose I/O finished to `out`, with their
    /// completions; no system call (resubmissions of partial transfers
    /// go out with the next [`submit`](Self::submit)). Returns how many
    /// operations completed.
    pub fn reap(&mut self, out: &mut Vec<(T, Completion)>) -> usize {
        let mut again = std::mem::take(&mut self.again);
        let bounce = &mut self.bounce;
        let n = self.ring.reap(|(tag, mut io), buf, res| {
            let mut refused = false;
            let step = io.req.advance(res, io.direct, &mut refused, buf.as_deref());
            if let (true, Some(files)) = (refused, io.files()) {
                files.refuse_direct();
            }
            match step {
                Step::Done(r) => {
                    bounce.give_back(&mut io);
                    out.push((tag, io.completion(r)));
                }
                Step::Again => again.push((tag, io, buf)),
            }
        });
        for (tag, io, buf) in again.drain(..) {
            if let Err((tag, mut io)) = self.push(tag, io, buf.as_ref()) {
                self.bounce.give_back(&mut io);
                let failed = io.completion(Err(io::Error::other("resubmitting to io_uring failed")));
                out.push((tag, failed));
            }
        }
        self.again = again;
        n
    }

    /// Submits and blocks until at least one operation completes (for
    /// callers with nothing else to do: tests, shutdown).
    pub fn wait(&mut self) -> io::Result<()> {
        self.ring.wait()
    }
}
