//! Letting go of librdmacm's verbs context of a removed device.
//!
//! librdmacm opens one verbs context per device and keeps it for the whole
//! process (`cma_dev->verbs` in rdma-core's `librdmacm/cma.c`). It closes it
//! only when it re-reads the device list, finds the device gone and no id
//! uses it (`sync_devices_list`); with an empty list it gives up before
//! looking, so the context of the last device is never closed. A driver that
//! cannot disassociate user contexts (rxe, siw) makes the kernel's device
//! removal wait until every file of the context is closed: the command file
//! (`cmd_fd`, `/dev/infiniband/uverbsN`) and the async event file
//! (`async_fd`). Hence [`RetiredContext`]:
//!
//! 1. [`Context::retire`] is called while the device state still holds the
//!    context (so it is certainly open): it notes the two descriptor numbers
//!    and takes a duplicate of each, which pins the files they refer to.
//! 2. [`RetiredContext::try_release`] waits until every [`Context`] handle of
//!    the device is gone (every QP, CQ, SRQ, MR, PD and completion channel
//!    made through it is destroyed and no ring is mapped any more), then
//!    destroys the CM id the context was borrowed from. librdmacm's use count
//!    of the device is then zero and it has deallocated its own PD, so
//!    nothing of the process lives in the kernel's context except the
//!    context itself.
//! 3. For each descriptor number that still refers to the very file noted in
//!    step 1 (`kcmp(KCMP_FILE)` against the duplicate: a closed and reused
//!    number refers to another file), librdmacm still holds the context, and
//!    the number is pointed at `/dev/null`, opened read-only (`dup3`). The
//!    duplicates are closed; the kernel sees the files released and the
//!    removal finishes.
//!
//! Why this is sound:
//! - The numbers stay allocated (now to `/dev/null`) until librdmacm closes
//!   them in `ibv_close_device`, so no other descriptor is closed in their
//!   place. librdmacm does that when it next re-reads a non-empty device
//!   list: the removed device is missing from it (a device added again is a
//!   new `ibv_device` with a new kernel index, and librdmacm's `match()`
//!   compares node GUID and index), and the entry's use count is zero.
//! - Until then nothing in librdmacm uses the entry. Should a verbs command
//!   still reach it, `/dev/null` read-only fails every `write`, `ioctl` and
//!   writable `mmap`: the command fails, nothing is mistaken for an answer.
//! - The check in step 3 and the `dup3` are not one atomic step: no other
//!   thread may make librdmacm calls meanwhile (they could close the number
//!   and another file could take it). srptd makes every librdmacm call on its
//!   control thread, the one that retires contexts; a [`RetiredContext`] is
//!   not `Send`, so it is released on the thread that made it.
//!
//! Limits: a driver that maps context-wide pages into the process (mlx5's
//! doorbell pages) keeps its file alive through the mapping; such drivers
//! disassociate contexts, so their removal does not wait on this anyway.
//! Without `kcmp` (a kernel built without `CONFIG_KCMP`) nothing is
//! revoked, and the removal waits for srptd to exit.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use super::cm::CmIdInner;
use super::device::Context;

/// `KCMP_FILE` from `<linux/kcmp.h>`.
const KCMP_FILE: libc::c_int = 0;

/// One of a retired context's descriptors: librdmacm's number for it and
/// our duplicate of the file it referred to at retirement.
struct File {
    what: &'static str,
    fd: RawFd,
    dup: OwnedFd,
}

/// librdmacm's context of a removed device, on its way out
/// ([`Context::retire`]). Dropping it without a successful
/// [`try_release`](Self::try_release) leaves the context to librdmacm.
pub struct RetiredContext {
    device: String,
    ctx: Weak<Context>,
    cm_id: Option<Arc<CmIdInner>>,
    files: Vec<File>,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for RetiredContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetiredContext")
            .field("device", &self.device)
            .field("handles", &self.ctx.strong_count())
            .field(
                "fds",
                &self.files.iter().map(|f| (f.what, f.fd)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What [`RetiredContext::try_release`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// Handles of the context or of its CM id are still alive: try again.
    Busy,
    /// librdmacm had already closed the context itself.
    Closed,
    /// librdmacm still held the context: its descriptors now refer to
    /// `/dev/null` and the device's files are released.
    Revoked,
    /// librdmacm's descriptors could not be checked or replaced (the
    /// error); the context stays open.
    Kept(String),
}

impl Context {
    /// Notes librdmacm's context of a device that is going away, so that
    /// [`RetiredContext::try_release`] can close it once every handle of it
    /// is gone. Only for a context borrowed from a CM id.
    pub fn retire(self: &Arc<Self>) -> super::Result<RetiredContext> {
        let Some(cm_id) = self.cm_id() else {
            return Err(super::Error::Invalid("not a context librdmacm keeps"));
        };
        let (cmd_fd, async_fd) = self.fds();
        let mut files = Vec::with_capacity(2);
        for (what, fd) in [("cmd_fd", cmd_fd), ("async_fd", async_fd)] {
            if fd < 0 {
                continue;
            }
            // SAFETY: the context is open (`self` holds it), so are its
            // descriptors.
            let f = unsafe { File::note(what, fd) }.map_err(|source| super::Error::Os {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                source,
            })?;
            files.push(f);
        }
        Ok(RetiredContext {
            device: self.name(),
            ctx: Arc::downgrade(self),
            cm_id: Some(cm_id.clone()),
            files,
            _not_send: PhantomData,
        })
    }
}

impl RetiredContext {
    /// The device's name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Once no handle of the context is left: destroys its CM id and, if
    /// librdmacm still holds the context, points its descriptors at
    /// `/dev/null` (see the module documentation). Anything but
    /// [`Release::Busy`] is final.
    pub fn try_release(&mut self) -> Release {
        if self.ctx.strong_count() > 0 {
            return Release::Busy;
        }
        if let Some(id) = self.cm_id.take() {
            match Arc::try_unwrap(id) {
                // Dropped here: rdma_destroy_id, librdmacm's last use of the
                // device.
                Ok(inner) => drop(inner),
                Err(id) => {
                    self.cm_id = Some(id);
                    return Release::Busy;
                }
            }
        }
        release_files(std::mem::take(&mut self.files))
    }
}

impl File {
    /// Notes descriptor `fd` and pins the file it refers to now.
    ///
    /// # Safety
    /// `fd` must be open.
    unsafe fn note(what: &'static str, fd: RawFd) -> io::Result<File> {
        // SAFETY: open, as the caller promises, for this short borrow.
        let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        Ok(File { what, fd, dup })
    }
}

/// Points every noted number that still refers to its noted file at
/// `/dev/null`, then closes the duplicates (releasing the files).
fn release_files(files: Vec<File>) -> Release {
    let mut revoked = false;
    let mut kept = Vec::new();
    for f in files {
        match same_file(f.fd, f.dup.as_raw_fd()) {
            Ok(false) => {}
            Ok(true) => match point_at_dev_null(f.fd) {
                Ok(()) => revoked = true,
                Err(e) => kept.push(format!("{} {}: {e}", f.what, f.fd)),
            },
            Err(e) => kept.push(format!("kcmp({} {}): {e}", f.what, f.fd)),
        }
        // `f.dup` closes here: the file is released once the number no
        // longer refers to it.
    }
    if !kept.is_empty() {
        Release::Kept(kept.join("; "))
    } else if revoked {
        Release::Revoked
    } else {
        Release::Closed
    }
}

/// Whether descriptors `a` and `b` of this process refer to the same open
/// file (`kcmp(KCMP_FILE)`); false if `a` is not open.
fn same_file(a: RawFd, b: RawFd) -> io::Result<bool> {
    // SAFETY: kcmp only compares kernel objects of this process; the
    // arguments are plain integers.
    let pid = unsafe { libc::getpid() };
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    match rc {
        0 => Ok(true),
        r if r > 0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBADF) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Makes descriptor number `fd` refer to `/dev/null` opened read-only
/// (close-on-exec), closing what it referred to; the number stays taken.
fn point_at_dev_null(fd: RawFd) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup3 onto a number this process owns (the caller checked that
    // it still refers to the retired context's file); `null` stays open
    // across the call and is closed after it.
    let rc = unsafe { libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, IntoRawFd};

    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: out-array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn same_file_tells_duplicates_from_other_files() {
        let (r, w) = pipe();
        let dup = w.try_clone().unwrap();
        assert!(same_file(w.as_raw_fd(), dup.as_raw_fd()).unwrap());
        assert!(!same_file(r.as_raw_fd(), dup.as_raw_fd()).unwrap());
        // A closed number is not the same file.
        let n = w.into_raw_fd();
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(n) };
        assert!(!same_file(n, dup.as_raw_fd()).unwrap());
    }

    #[test]
    fn a_noted_file_still_held_is_revoked_and_released() {
        let (mut r, w) = pipe();
        let n = w.into_raw_fd();
        // SAFETY: `n` is open.
        let f = unsafe { File::note("w", n) }.unwrap();
        assert_eq!(release_files(vec![f]), Release::Revoked);
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).unwrap(), 0, "the pipe's writer was released");
        // SAFETY: the number is ours (now /dev/null); closed once.
        drop(unsafe { std::fs::File::from_raw_fd(n) });
    }

    #[test]
    fn a_number_closed_and_taken_by_another_file_is_left_alone() {
        let (_r, w) = pipe();
        let n = w.as_raw_fd();
        // SAFETY: `n` is open.
        let f = unsafe { File::note("w", n) }.unwrap();
        drop(w);
        // The lowest free number: most likely `n` again.
        let (mut r2, mut w2) = pipe();
        let reused = w2.as_raw_fd() == n || r2.as_raw_fd() == n;
        assert_eq!(release_files(vec![f]), Release::Closed);
        // The new pipe still works end to end, whichever number it got.
        w2.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        r2.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x", "reused={reused}");
    }

    #[test]
    fn pointing_at_dev_null_releases_the_file_and_keeps_the_number() {
        let (mut r, w) = pipe();
        let n = w.into_raw_fd();
        point_at_dev_null(n).unwrap();
        // The pipe's only writer is gone: the reader sees end of file.
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        // The number is still taken, now read-only /dev/null: writes fail,
        // reads see end of file, close-on-exec is set.
        // SAFETY: the number is ours; the File closes it once.
        let mut null = unsafe { std::fs::File::from_raw_fd(n) };
        assert!(null.write(b"x").is_err());
        assert_eq!(null.read(&mut buf).unwrap(), 0);
        // SAFETY: plain fcntl query on our descriptor.
        let flags = unsafe { libc::fcntl(n, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}
