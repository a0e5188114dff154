//! Synchronous `O_DIRECT` transfers of a file backstore, with misaligned
//! data moved through an aligned bounce buffer rather than the page cache.
//!
//! A file LUN open `O_DIRECT` does all its reads and writes `O_DIRECT`
//! (the worker pool here, io_uring in `lun_aio.rs`). Linux keeps the page
//! cache coherent with direct I/O only between requests that do not run at
//! the same time on one page: a buffered write of part of a page first
//! reads the whole page in, and a direct write to the rest of that page
//! meanwhile is undone when the stale page is written back (the kernel's
//! "Page cache invalidation failure on direct I/O" case). Initiators
//! rightly run writes to neighbouring blocks of one page at once (512-byte
//! logical blocks, ext4 with 1 KiB blocks), so a LUN must not mix the two.
//! Immediate data is the usual misaligned case: it sits at the SRP_CMD's
//! data offset inside a receive slot.

use std::cell::RefCell;
use std::io;
use std::os::fd::BorrowedFd;

use super::file_aio::aligned;
use crate::mem::DmaBuf;

/// Bytes of a worker thread's bounce buffer: immediate data (one IU) fits
/// in one piece; longer misaligned transfers go in pieces of this size.
const BOUNCE_LEN: usize = 128 << 10;

thread_local! {
    /// This thread's bounce buffer, mapped at its first misaligned transfer
    /// (worker threads live as long as their poller).
    static BOUNCE: RefCell<Option<DmaBuf>> = const { RefCell::new(None) };
}

/// What an `O_DIRECT` transfer came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Direct {
    /// Moved this many bytes (a read stops short at the end of the file).
    Moved(usize),
    /// `O_DIRECT` refused the transfer (`EINVAL` although the memory, offset
    /// and length are aligned): the device needs an alignment srptd does
    /// not know. The caller goes buffered for good (see
    /// `AsyncFiles::refuse_direct`).
    Refused,
}

/// Runs `f` with this thread's bounce buffer.
fn with_bounce<R>(f: impl FnOnce(&DmaBuf) -> io::Result<R>) -> io::Result<R> {
    BOUNCE.with(|cell| {
        let mut b = cell.borrow_mut();
        if b.is_none() {
            *b = Some(DmaBuf::new(BOUNCE_LEN)?);
        }
        match b.as_ref() {
            Some(buf) => f(buf),
            None => Err(io::Error::other("no bounce buffer")),
        }
    })
}

/// `r` as a [`Direct`]: `EINVAL` is `O_DIRECT` refusing the transfer.
fn direct(r: io::Result<usize>) -> io::Result<Direct> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Direct::Refused),
        r => r.map(Direct::Moved),
    }
}

/// Moves `len` bytes through this thread's bounce buffer, a piece at a
/// time: `piece(bounce, done, n)` moves bytes `done..done + n` and says
/// how many it moved (fewer: the end of the file, stop there).
fn bounced(
    len: usize,
    mut piece: impl FnMut(&DmaBuf, usize, usize) -> io::Result<usize>,
) -> io::Result<Direct> {
    with_bounce(|bounce| {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(bounce.len());
            let moved = match direct(piece(bounce, done, n))? {
                Direct::Moved(m) => m,
                Direct::Refused => return Ok(Direct::Refused),
            };
            done += moved;
            if moved < n {
                break;
            }
        }
        Ok(Direct::Moved(done))
    })
}

/// Writes `buf[off..off+len]` at `file_off` through the `O_DIRECT`
/// descriptor `fd`, bounced when the memory is misaligned. `file_off` and
/// `len` are multiples of the LUN's block size (at least 512 bytes).
pub(super) fn write(
    fd: BorrowedFd<'_>,
    buf: &DmaBuf,
    off: usize,
    len: usize,
    file_off: u64,
) -> io::Result<Direct> {
    if aligned(buf, off, len as u64, file_off) {
        return direct(buf.write_to_fd(fd, off, len, file_off).map(|()| len));
    }
    bounced(len, |bounce, done, n| {
        buf.copy_to(off + done, bounce, 0, n);
        bounce.write_to_fd(fd, 0, n, file_off + done as u64).map(|()| n)
    })
}

/// Reads into `buf[off..off+len]` from `file_off` through the `O_DIRECT`
/// descriptor `fd`, bounced when the memory is misaligned; stops short at
/// the end of the file.
pub(super) fn read(
    fd: BorrowedFd<'_>,
    buf: &DmaBuf,
    off: usize,
    len: usize,
    file_off: u64,
) -> io::Result<Direct> {
    if aligned(buf, off, len as u64, file_off) {
        return direct(buf.read_from_fd(fd, off, len, file_off));
    }
    bounced(len, |bounce, done, n| {
        let got = bounce.read_from_fd(fd, 0, n, file_off + done as u64)?;
        bounce.copy_to(0, buf, off + done, got);
        Ok(got)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::backstore::tests::TempFile;
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;

    /// The test file open `O_DIRECT`, or `None` where its file system
    /// does not support it (tmpfs).
    fn open_direct(t: &TempFile) -> Option<std::fs::File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&t.0)
            .ok()
    }

    #[test]
    fn misaligned_data_is_bounced_and_read_back() {
        let t = TempFile::new("direct-io", 1 << 20);
        let Some(f) = open_direct(&t) else {
            eprintln!("O_DIRECT unsupported on {}; skipping", t.0.display());
            return;
        };
        // Immediate data 68 bytes into a receive slot, longer than one
        // bounce piece so the piecewise loop runs.
        let len = BOUNCE_LEN + 4096;
        let src = DmaBuf::new(len + 4096).unwrap();
        let pattern: Vec<u8> = (0..len).map(|i| (i * 7 + i / 512) as u8).collect();
        src.write(68, &pattern);
        assert_eq!(write(f.as_fd(), &src, 68, len, 8192).unwrap(), Direct::Moved(len));
        // Read back both misaligned (bounced) and aligned (straight).
        let dst = DmaBuf::new(len + 4096).unwrap();
        assert_eq!(read(f.as_fd(), &dst, 132, len, 8192).unwrap(), Direct::Moved(len));
        let mut got = vec![0u8; len];
        dst.read(132, &mut got);
        assert!(got == pattern, "bounced read differs");
        assert_eq!(read(f.as_fd(), &dst, 0, len, 8192).unwrap(), Direct::Moved(len));
        dst.read(0, &mut got);
        assert!(got == pattern, "aligned read differs");
        // Nothing went through the page cache: a buffered read agrees too.
        let mut plain = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&t.0).unwrap(), &mut plain, 8192)
            .unwrap();
        assert!(plain == pattern, "file content differs");
    }

    #[test]
    fn a_read_past_the_end_stops_short() {
        let t = TempFile::new("direct-io-eof", 8192);
        let Some(f) = open_direct(&t) else {
            return;
        };
        let dst = DmaBuf::new(3 * 4096).unwrap();
        assert_eq!(
            read(f.as_fd(), &dst, 100, 3 * 4096 - 512, 4096).unwrap(),
            Direct::Moved(4096)
        );
    }

    /// A file LUN open `O_DIRECT` keeps its data out of the page cache
    /// whatever the alignment of the data it is handed: misaligned
    /// immediate data (68 bytes into a receive slot, as ib_srp sends it),
    /// FUA or not, and reads into misaligned memory.
    #[test]
    fn a_direct_file_lun_never_uses_the_page_cache() {
        use crate::scsi::backstore::{Backstore, FileBackstore, FileCache};
        let t = TempFile::new("direct-io-lun", 1 << 20);
        let lun = FileBackstore::open(&t.0, 512, false, FileCache::Direct, "lun").unwrap();
        if !lun.uses_direct_io() {
            eprintln!("O_DIRECT unsupported on {}; skipping", t.0.display());
            return;
        }
        let slot = DmaBuf::new(16 << 10).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        for (lba, fua) in [(1u64, false), (40, true), (7, false)] {
            slot.write(68, &data[..1024 * (lba as usize % 8 + 1)]);
            lun.write(lba, &slot, 68, 1024 * (lba as usize % 8 + 1), fua)
                .unwrap();
        }
        let back = DmaBuf::new(16 << 10).unwrap();
        lun.read(7, &back, 100, 8192).unwrap();
        let mut got = vec![0u8; 8192];
        back.read(100, &mut got);
        assert!(got == data, "read back differs");
        let f = std::fs::File::open(&t.0).unwrap();
        assert_eq!(
            crate::os::cached_pages(f.as_fd(), 1 << 20).unwrap(),
            0,
            "pages in the page cache"
        );
    }
}
