//! Asynchronous I/O on a file or block device backstore: which descriptor
//! and [`Op`] a read, write or flush uses, and what a completion's result
//! means (a short transfer continues, `EINVAL` from `O_DIRECT` retries
//! buffered, a read at the end of the file is zero-filled), as the
//! synchronous [`FileBackstore`](super::FileBackstore) methods do. Pure
//! bookkeeping: the ring ([`crate::uring`]) does the I/O.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::mem::DmaBuf;
use crate::uring::Op;

/// Alignment assumed for `O_DIRECT` (see `backstore.rs`).
pub(super) const DIRECT_ALIGN: u64 = 512;

/// The descriptors of a file backstore for an asynchronous engine. An
/// operation in flight holds its LUN (`Counted`), and so the backstore
/// that owns them.
pub struct AsyncFiles {
    direct: Option<RawFd>,
    buffered: RawFd,
    /// `O_DIRECT` refused an aligned transfer: every later one is buffered
    /// (never both at once, see `direct_io.rs`).
    refused: AtomicBool,
    /// The file, for the log.
    path: std::path::PathBuf,
}

impl fmt::Debug for AsyncFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFiles")
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

/// One backstore request, advanced as partial completions come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Req {
    Read {
        file_off: u64,
        buf_off: usize,
        len: u32,
    },
    Write {
        file_off: u64,
        buf_off: usize,
        len: u32,
        fua: bool,
    },
    Flush,
}

/// What to do after a completion.
#[derive(Debug)]
pub(super) enum Step {
    /// Finished, with the error if it failed.
    Done(io::Result<()>),
    /// Submit the (advanced) request again.
    Again,
}

/// Whether a transfer may use `O_DIRECT`.
pub(super) fn aligned(buf: &DmaBuf, buf_off: usize, len: u64, file_off: u64) -> bool {
    (buf.addr() + buf_off as u64) % DIRECT_ALIGN == 0
        && len % DIRECT_ALIGN == 0
        && file_off % DIRECT_ALIGN == 0
}

impl AsyncFiles {
    /// The descriptors of a backstore that owns `direct` and `buffered`
    /// for at least as long as this.
    pub(super) fn new(direct: Option<&File>, buffered: &File, path: &std::path::Path) -> AsyncFiles {
        AsyncFiles {
            direct: direct.map(File::as_raw_fd),
            buffered: buffered.as_raw_fd(),
            refused: AtomicBool::new(false),
            path: path.to_owned(),
        }
    }

    /// Data moves `O_DIRECT`: there is such a descriptor and it has not
    /// refused a transfer.
    pub(super) fn has_direct(&self) -> bool {
        self.direct.is_some() && !self.refused.load(Ordering::Relaxed)
    }

    /// `O_DIRECT` refused an aligned transfer (`EINVAL`): data goes
    /// through the page cache from now on.
    pub(super) fn refuse_direct(&self) {
        if self.direct.is_some() && !self.refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "{}: O_DIRECT refused an aligned transfer; I/O goes through the page cache from now on",
                self.path.display()
            );
        }
    }

    /// The ring operation for `req`: on the `O_DIRECT` descriptor when
    /// data moves `O_DIRECT` ([`has_direct`](Self::has_direct)) and the
    /// transfer is aligned (the caller bounces misaligned writes, or runs
    /// them on the worker pool, which bounces too).
    pub(super) fn op(&self, req: &Req, buf: Option<&DmaBuf>) -> (Op, bool) {
        let pick = |buf_off: usize, len: u32, file_off: u64| match (self.direct, buf) {
            (Some(fd), Some(buf)) if self.has_direct() && aligned(buf, buf_off, u64::from(len), file_off) => {
                (fd, true)
            }
            _ => (self.buffered, false),
        };
        match *req {
            Req::Read {
                file_off,
                buf_off,
                len,
            } => {
                let (fd, direct) = pick(buf_off, len, file_off);
                (
                    Op::Read {
                        fd,
                        file_off,
                        buf_off,
                        len,
                    },
                    direct,
                )
            }
            Req::Write {
                file_off,
                buf_off,
                len,
                fua,
            } => {
                let (fd, direct) = pick(buf_off, len, file_off);
                let op = Op::Write {
                    fd,
                    file_off,
                    buf_off,
                    len,
                    dsync: fua,
                };
                (op, direct)
            }
            Req::Flush => (Op::Fsync { fd: self.buffered }, false),
        }
    }
}

impl Req {
    /// Takes the result `res` (bytes moved or `-errno`) of this request's
    /// operation, which ran `direct` or not; advances a partial transfer.
    /// `*refused` becomes true when `O_DIRECT` refused it (`EINVAL`): the
    /// caller makes the file buffered ([`AsyncFiles::refuse_direct`])
    /// before it submits the request again.
    pub(super) fn advance(
        &mut self,
        res: i32,
        direct: bool,
        refused: &mut bool,
        buf: Option<&DmaBuf>,
    ) -> Step {
        if res < 0 {
            if res == -libc::EINVAL && direct {
                *refused = true;
                return Step::Again;
            }
            if res == -libc::EINTR || res == -libc::EAGAIN {
                return Step::Again;
            }
            return Step::Done(Err(io::Error::from_raw_os_error(-res)));
        }
        let n = res as u32;
        match self {
            Req::Flush => Step::Done(Ok(())),
            Req::Read {
                file_off,
                buf_off,
                len,
            } => {
                if n == 0 {
                    // Past the end of the file (it shrank): zeros.
                    return match buf {
                        Some(b) if b.contains(*buf_off as u64, u64::from(*len)) => {
                            b.fill(*buf_off, *len as usize, 0);
                            Step::Done(Ok(()))
                        }
                        _ => Step::Done(Err(io::Error::other("read past the end without its buffer"))),
                    };
                }
                Self::step(file_off, buf_off, len, n)
            }
            Req::Write {
                file_off,
                buf_off,
                len,
                ..
            } => {
                if n == 0 {
                    return Step::Done(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write wrote nothing",
                    )));
                }
                Self::step(file_off, buf_off, len, n)
            }
        }
    }

    fn step(file_off: &mut u64, buf_off: &mut usize, len: &mut u32, n: u32) -> Step {
        let n = n.min(*len);
        *file_off += u64::from(n);
        *buf_off += n as usize;
        *len -= n;
        if *len == 0 {
            Step::Done(Ok(()))
        } else {
            Step::Again
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_transfers_continue_and_einval_is_reported() {
        let buf = DmaBuf::new(8192).unwrap();
        let mut r = Req::Read {
            file_off: 0,
            buf_off: 0,
            len: 8192,
        };
        let mut refused = false;
        assert!(matches!(
            r.advance(4096, true, &mut refused, Some(&buf)),
            Step::Again
        ));
        assert_eq!(
            r,
            Req::Read {
                file_off: 4096,
                buf_off: 4096,
                len: 4096
            }
        );
        assert!(matches!(
            r.advance(-libc::EINVAL, true, &mut refused, Some(&buf)),
            Step::Again
        ));
        assert!(refused);
        buf.fill(4096, 4096, 9);
        assert!(matches!(
            r.advance(0, false, &mut refused, Some(&buf)),
            Step::Done(Ok(()))
        ));
        buf.with_bytes(4096, 4096, |b| assert!(b.iter().all(|&x| x == 0)));
        let mut w = Req::Write {
            file_off: 0,
            buf_off: 0,
            len: 512,
            fua: true,
        };
        assert!(matches!(
            w.advance(-libc::EIO, false, &mut refused, Some(&buf)),
            Step::Done(Err(e)) if e.raw_os_error() == Some(libc::EIO)
        ));
        assert!(matches!(
            w.advance(0, false, &mut refused, Some(&buf)),
            Step::Done(Err(_))
        ));
        assert!(matches!(
            w.advance(512, false, &mut refused, Some(&buf)),
            Step::Done(Ok(()))
        ));
        assert!(matches!(
            Req::Flush.advance(0, false, &mut refused, Some(&buf)),
            Step::Done(Ok(()))
        ));
    }
}
