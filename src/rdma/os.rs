//! Small safe wrappers over OS calls that std does not offer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Deallocates `len` bytes at `offset` of a file or block device
/// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`); later reads of
/// the range return zeros. Fails with `EOPNOTSUPP` where the filesystem or
/// device cannot do it.
pub fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range does not fit off_t",
        ));
    };
    loop {
        // SAFETY: plain syscall on a borrowed, open descriptor; no memory is
        // passed.
        let rc = unsafe {
            libc::fallocate(
                fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsFd;

    #[test]
    fn punched_range_reads_zeros() {
        let path = std::env::temp_dir().join(format!("srptd-punch-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all(&[0xab; 16384]).unwrap();
        match punch_hole(f.as_fd(), 4096, 8192) {
            Ok(()) => {
                let mut b = vec![0u8; 16384];
                f.seek(SeekFrom::Start(0)).unwrap();
                f.read_exact(&mut b).unwrap();
                assert!(b[..4096].iter().all(|&x| x == 0xab));
                assert!(b[4096..12288].iter().all(|&x| x == 0));
                assert!(b[12288..].iter().all(|&x| x == 0xab));
                assert_eq!(f.metadata().unwrap().len(), 16384, "size kept");
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
        }
    }
}
