//! Small safe wrappers over system calls std does not offer: hole
//! punching, dropping a file's cached pages, `poll(2)` on several
//! descriptors, a tick counter that needs no system call, binding a thread
//! to a CPU, and giving the allocator's free memory back to the system.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

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

/// Drops the file's pages from the page cache
/// (`posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file): clean pages
/// go, dirty ones are written back first by the caller's `fdatasync` or
/// stay. Only a hint to the kernel; nothing about the data changes.
pub fn drop_cached_pages(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open descriptor; no memory is
    // passed.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Pages of the file's first `len` bytes that are in the page cache
/// (`mmap` + `mincore`): how a test tells that I/O bypassed the cache.
pub fn cached_pages(fd: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    let page = crate::mem::PAGE_SIZE;
    let pages = len.div_ceil(page);
    if pages == 0 {
        return Ok(0);
    }
    // SAFETY: a shared read-only mapping of an open descriptor, checked
    // against MAP_FAILED, unmapped below; never dereferenced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` holds one byte per page of the `len`-byte mapping.
    let rc = unsafe { libc::mincore(p, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(p, len) };
    if rc != 0 {
        return Err(err);
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count())
}

/// Discards `len` bytes at `offset` of a block device (`BLKDISCARD`):
/// deallocated; what reads return afterwards is the device's business.
pub fn blk_discard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    /// `_IO(0x12, 119)` from `<linux/fs.h>`.
    const BLKDISCARD: libc::c_ulong = 0x1277;
    if len == 0 {
        return Ok(());
    }
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD reads two u64s (start, length) from the pointer,
    // which points at `range` for the length of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), BLKDISCARD as _, range.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A cheap monotonic tick counter for short intervals on one thread (the
/// poller's spin window): the CPU's time-stamp counter on x86-64, read
/// without a system call. `clock_gettime` is a vDSO call only where the
/// kernel trusts the TSC; in VMs with an HPET or ACPI PM clocksource (QEMU
/// TCG, some clouds) every `Instant::now()` is a system call that costs more
/// than a whole SRP command. Ticks are converted with
/// [`ticks_per_ms`]; elsewhere the counter is nanoseconds from `Instant`.
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no memory operands and is available on every
        // x86-64 CPU; a counter that differs between CPUs only skews one
        // spin window (callers saturate negative intervals).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static ANCHOR: OnceLock<std::time::Instant> = OnceLock::new();
        ANCHOR.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// [`ticks`] per millisecond, measured once (about 2 ms against the
/// monotonic clock, the first time it is asked for).
pub fn ticks_per_ms() -> u64 {
    use std::sync::OnceLock;
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(|| {
        let t0 = std::time::Instant::now();
        let c0 = ticks();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let c1 = ticks();
        let ns = t0.elapsed().as_nanos().max(1) as u64;
        (c1.saturating_sub(c0).saturating_mul(1_000_000) / ns).max(1)
    })
}

/// Waits up to `timeout` for `fd` to become readable (for blocking-style
/// programs and tests; the daemon uses tokio's `AsyncFd` instead).
/// Returns whether it is readable.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    wait_any(&[fd], timeout).map(|m| m != 0)
}

/// The most descriptors [`wait_any`] takes.
pub const WAIT_ANY_MAX: usize = 16;
const _: () = assert!(WAIT_ANY_MAX <= 32, "wait_any reports readiness in a u32");

/// Waits until any of `fds` is readable or `timeout` passes (`None`: no
/// timeout, so no timer is set up); returns the readable ones as a bit mask
/// (bit i: `fds[i]`), 0 on timeout.
pub fn wait_any(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<u32> {
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_millis().min(i32::MAX as u128) as i32,
    };
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; WAIT_ANY_MAX];
    if fds.len() > pfds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors to wait on",
        ));
    }
    for (p, fd) in pfds.iter_mut().zip(fds) {
        *p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
    }
    loop {
        // SAFETY: `fds.len()` initialised pollfds on the stack.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Errors and hang-ups count as readable: the read says what it is.
        let mask = pfds[..fds.len()]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .fold(0u32, |m, (i, _)| m | (1 << i));
        return Ok(mask);
    }
}

/// CPUs a `cpu_set_t` can name (0 to this, exclusive): the most
/// [`pin_current_thread`] and [`allowed_cpus`] handle.
pub const CPU_SET_CAPACITY: usize = 8 * std::mem::size_of::<libc::cpu_set_t>();

/// Binds the calling thread to one CPU (`sched_setaffinity(2)`). Fails
/// with `EINVAL` for a CPU the process may not use (cpuset, offline) or
/// from [`CPU_SET_CAPACITY`] on.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= CPU_SET_CAPACITY {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is within the set, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set outlives the call.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's nice value (`setpriority(2)` on its thread
/// ID: on Linux a nice value is per thread). Lowering it below the
/// current value needs `CAP_SYS_NICE` or `RLIMIT_NICE`.
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain integer arguments; `tid` is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs the calling thread may run on (`sched_getaffinity(2)`), in
/// ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel fills `set`, which
    // outlives the call.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every index is within the set.
    Ok((0..CPU_SET_CAPACITY)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Returns the C allocator's free memory to the system. glibc keeps what a
/// thread frees in that thread's arena; after a burst of logins (each
/// channel's rings and tables allocated on the control thread, freed on a
/// poller) the free lists hold megabytes that RSS keeps counting.
/// `malloc_trim(0)` gives back every whole free page of every arena. A
/// no-op on other C libraries.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: takes no pointer; glibc locks each arena while it trims.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes the C allocator has handed out and not had back (glibc
/// `mallinfo2`: in-use chunks of every arena plus mmapped chunks); `None`
/// on other C libraries. Unlike RSS it does not move with freed pages the
/// allocator keeps or with data pages first touched, so a leak test can
/// compare it tightly.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: takes no pointer and returns a plain struct by value.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only() {
        let last = *allowed_cpus().unwrap().last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, [last]);
        let e = std::thread::spawn(|| pin_current_thread(CPU_SET_CAPACITY).unwrap_err())
            .join()
            .unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    /// The nice value is the thread's own: the test thread keeps its own.
    #[test]
    fn a_thread_nice_value_is_its_own() {
        // SAFETY: who=0 is the calling thread (Linux: nice is per thread).
        let own = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = own();
        // Raising it needs no privilege; 19 is the highest (the kernel
        // clamps above it).
        let target = (before + 3).min(19);
        let after = std::thread::spawn(move || {
            set_current_thread_nice(target).unwrap();
            own()
        })
        .join()
        .unwrap();
        assert_eq!(after, target);
        assert_eq!(own(), before);
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn heap_in_use_counts_a_live_allocation() {
        const BIG: u64 = 256 << 20;
        let before = heap_in_use().unwrap();
        let v = vec![0u8; BIG as usize];
        let during = heap_in_use().unwrap();
        drop(std::hint::black_box(v));
        // Other tests allocate and free meanwhile; far less than BIG.
        assert!(during >= before + BIG - (16 << 20), "{before} -> {during}");
        release_free_heap();
    }

    #[test]
    fn ticks_advance_at_the_measured_rate() {
        let rate = ticks_per_ms();
        assert!(rate >= 1);
        let t0 = std::time::Instant::now();
        let c0 = ticks();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let c1 = ticks();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let measured = c1.saturating_sub(c0) as f64 / rate as f64;
        // Loose: a loaded machine stretches either reading.
        assert!(
            measured > ms * 0.5 && measured < ms * 2.0,
            "{measured} ms of ticks in {ms} ms"
        );
    }

    #[test]
    fn punched_range_reads_zeros() {
        let mut f = crate::mem::tests::tempfile_in_tmp();
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
