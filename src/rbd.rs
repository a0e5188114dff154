//! A safe librbd for Ceph RBD backstores: [`Cluster`] (a connected
//! `rados_t`), [`Pool`] (an I/O context), [`Image`] (an open image), and
//! [`Queue`], through which a poller thread submits asynchronous
//! operations on images and reaps their completions in its own loop.
//!
//! librbd completes operations on its own threads by calling a function
//! with an argument. The queue gives each operation a slot; the argument
//! is the slot's [`Arg`] (boxed, so its address never moves), and the
//! callback only takes the result, releases the librbd completion and
//! appends `(slot, result)` to the queue's shared list, signalling the
//! queue's eventfd when the list was empty (the poller sleeps on it). The
//! slot keeps the operation's buffer (`Arc<DmaBuf>`), its image and the
//! caller's payload until the poller reaps it, and the queue's `Drop`
//! waits for every operation in flight, so no memory librbd may touch is
//! freed early, whatever the caller does.
//!
//! Nothing is allocated per operation once the slot table has grown to
//! the largest number in flight, apart from what librbd allocates itself
//! (its completion and request objects); the only system call is the
//! eventfd write on the librbd thread, once per batch the poller reaps.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use srptd_ffi::rbd as ffi;

use crate::mem::DmaBuf;

/// Why connecting or opening failed: each names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    #[error("cannot read the Ceph configuration {path}: {source}")]
    Conf {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("Ceph option {option}: {source}")]
    Option {
        option: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the Ceph cluster within {timeout:?}: {source}")]
    Connect {
        timeout: Duration,
        #[source]
        source: io::Error,
    },
    #[error("pool {pool:?} does not exist")]
    NoPool { pool: String },
    #[error("pool {pool:?}: {source}")]
    Pool {
        pool: String,
        #[source]
        source: io::Error,
    },
    #[error("image {image:?} does not exist in pool {pool:?}")]
    NoImage { pool: String, image: String },
    #[error("image {pool}/{image}: {source}")]
    Image {
        pool: String,
        image: String,
        #[source]
        source: io::Error,
    },
}

/// A librados/librbd return value as a result (`-errno` on failure).
fn check(r: i64) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::from_raw_os_error((-r) as i32))
    } else {
        Ok(r)
    }
}

fn cstring(s: &str, what: &'static str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Nul(what))
}

// ------------------------------------------------------------ cluster

/// Seconds an operation may wait for the cluster before it fails
/// (`rados_osd_op_timeout`, `rados_mon_op_timeout`; librados' default, 0,
/// waits forever, and a command that never completes cannot be aborted).
pub const OP_TIMEOUT: &str = "30";

/// A connection to a Ceph cluster (`rados_t`); shut down when the last
/// pool and image of it are gone.
pub struct Cluster {
    raw: ffi::rados_t,
}

// SAFETY: librados handles may be used from any thread, concurrently
// (librados.h: "thread-safe").
unsafe impl Send for Cluster {}
// SAFETY: as above.
unsafe impl Sync for Cluster {}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects as client `id` (`None`: `admin`) with the configuration in
    /// `conf` (`None`: Ceph's default search, `/etc/ceph/ceph.conf` and
    /// `CEPH_CONF`). Monitors that do not answer within `timeout` fail the
    /// connection (`client_mount_timeout` is set to it, whatever the file
    /// says). Operations fail with `ETIMEDOUT` after [`OP_TIMEOUT`]
    /// seconds unless the file sets `rados_osd_op_timeout`. Blocks.
    pub fn connect(conf: Option<&Path>, id: Option<&str>, timeout: Duration) -> Result<Arc<Cluster>, Error> {
        let id = id.map(|i| cstring(i, "the client id")).transpose()?;
        let mut raw: ffi::rados_t = std::ptr::null_mut();
        // SAFETY: `raw` is written by rados_create; `id` is NUL-terminated
        // or null.
        let r = unsafe { ffi::rados_create(&mut raw, id.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())) };
        check(i64::from(r)).map_err(|source| Error::Connect { timeout, source })?;
        let cluster = Cluster { raw };
        // Operations a cluster cannot serve fail after this rather than
        // wait forever (the file may say otherwise).
        for (option, value) in [
            ("rados_osd_op_timeout", OP_TIMEOUT),
            ("rados_mon_op_timeout", OP_TIMEOUT),
        ] {
            cluster.set(option, value)?;
        }
        let path = conf.map(|p| p.to_string_lossy().into_owned());
        let cpath = path
            .as_deref()
            .map(|p| cstring(p, "the configuration path"))
            .transpose()?;
        // SAFETY: the handle is live; the path is NUL-terminated or null.
        let r = unsafe {
            ffi::rados_conf_read_file(
                cluster.raw,
                cpath.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        };
        if let Err(source) = check(i64::from(r)) {
            // Without a file, the defaults (and CEPH_ARGS) may still do.
            if path.is_some() {
                return Err(Error::Conf {
                    path: path.unwrap_or_default(),
                    source,
                });
            }
        }
        let secs = timeout.as_secs().max(1).to_string();
        cluster.set("client_mount_timeout", &secs)?;
        // SAFETY: the handle is live and configured.
        let r = unsafe { ffi::rados_connect(cluster.raw) };
        check(i64::from(r)).map_err(|source| Error::Connect { timeout, source })?;
        Ok(Arc::new(cluster))
    }

    /// Sets a configuration option (before connecting).
    fn set(&self, option: &str, value: &str) -> Result<(), Error> {
        let o = cstring(option, "an option name")?;
        let v = cstring(value, "an option value")?;
        // SAFETY: both strings are NUL-terminated; the handle is live.
        let r = unsafe { ffi::rados_conf_set(self.raw, o.as_ptr(), v.as_ptr()) };
        check(i64::from(r)).map(drop).map_err(|source| Error::Option {
            option: option.to_owned(),
            source,
        })
    }

    /// A configuration value as the client sees it.
    pub fn get(&self, option: &str) -> Option<String> {
        let o = CString::new(option).ok()?;
        let mut buf = [0 as c_char; 256];
        // SAFETY: `buf` has `len` writable bytes; librados NUL-terminates.
        let r = unsafe { ffi::rados_conf_get(self.raw, o.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        if r < 0 {
            return None;
        }
        // SAFETY: NUL-terminated by rados_conf_get (within `buf`).
        Some(
            unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// The I/O context of pool `name`.
    pub fn pool(self: &Arc<Self>, name: &str) -> Result<Arc<Pool>, Error> {
        let c = cstring(name, "the pool name")?;
        let mut raw: ffi::rados_ioctx_t = std::ptr::null_mut();
        // SAFETY: the handle is connected; `raw` is written on success.
        let r = unsafe { ffi::rados_ioctx_create(self.raw, c.as_ptr(), &mut raw) };
        match check(i64::from(r)) {
            Ok(_) => Ok(Arc::new(Pool {
                raw,
                name: name.to_owned(),
                _cluster: Arc::clone(self),
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::NoPool {
                pool: name.to_owned(),
            }),
            Err(source) => Err(Error::Pool {
                pool: name.to_owned(),
                source,
            }),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: every pool and image holds an Arc of the cluster, so none
        // is left.
        unsafe { ffi::rados_shutdown(self.raw) }
    }
}

/// A pool's I/O context (`rados_ioctx_t`).
pub struct Pool {
    raw: ffi::rados_ioctx_t,
    name: String,
    _cluster: Arc<Cluster>,
}

// SAFETY: an I/O context may be used from several threads (librados.h:
// ioctx operations are thread-safe; the context is only read here).
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: images hold an Arc of their pool, so none is left.
        unsafe { ffi::rados_ioctx_destroy(self.raw) }
    }
}

// ------------------------------------------------------------ image

/// What `rbd_stat` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub size: u64,
    /// Object size in bytes (`1 << order`).
    pub object_size: u64,
}

/// An open image (`rbd_image_t`), closed on drop.
pub struct Image {
    raw: ffi::rbd_image_t,
    name: String,
    watch: Mutex<Option<Watch>>,
    pool: Arc<Pool>,
}

/// A header watch: its handle and the boxed callback librbd calls.
struct Watch {
    handle: u64,
    _cb: Box<WatchFn>,
}

type WatchFn = Box<dyn Fn() + Send + Sync>;

// SAFETY: librbd image handles take concurrent calls from several threads
// (the C API locks internally; QEMU and tcmu-runner submit from several).
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("pool", &self.pool.name)
            .field("name", &self.name)
            .finish()
    }
}

impl Image {
    /// Opens image `name` of `pool` (its head, no snapshot). Blocks.
    pub fn open(pool: &Arc<Pool>, name: &str, read_only: bool) -> Result<Image, Error> {
        let c = cstring(name, "the image name")?;
        let mut raw: ffi::rbd_image_t = std::ptr::null_mut();
        // SAFETY: the pool is live; `raw` is written on success.
        let r = unsafe {
            if read_only {
                ffi::rbd_open_read_only(pool.raw, c.as_ptr(), &mut raw, std::ptr::null())
            } else {
                ffi::rbd_open(pool.raw, c.as_ptr(), &mut raw, std::ptr::null())
            }
        };
        match check(i64::from(r)) {
            Ok(_) => Ok(Image {
                raw,
                name: name.to_owned(),
                watch: Mutex::new(None),
                pool: Arc::clone(pool),
            }),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::NoImage {
                pool: pool.name.clone(),
                image: name.to_owned(),
            }),
            Err(source) => Err(Error::Image {
                pool: pool.name.clone(),
                image: name.to_owned(),
                source,
            }),
        }
    }

    /// The image's size in bytes.
    pub fn size(&self) -> io::Result<u64> {
        let mut size = 0u64;
        // SAFETY: the image is open; `size` is written.
        check(i64::from(unsafe { ffi::rbd_get_size(self.raw, &mut size) }))?;
        Ok(size)
    }

    /// Size and object size.
    pub fn stat(&self) -> io::Result<ImageInfo> {
        let mut info = std::mem::MaybeUninit::<ffi::rbd_image_info_t>::zeroed();
        // SAFETY: `info` is a zeroed rbd_image_info_t of the given size.
        check(i64::from(unsafe {
            ffi::rbd_stat(
                self.raw,
                info.as_mut_ptr(),
                std::mem::size_of::<ffi::rbd_image_info_t>(),
            )
        }))?;
        // SAFETY: zero-initialised plain data, filled by rbd_stat.
        let info = unsafe { info.assume_init() };
        Ok(ImageInfo {
            size: info.size,
            object_size: info.obj_size,
        })
    }

    /// The image's feature bits (`RBD_FEATURE_*`).
    pub fn features(&self) -> io::Result<u64> {
        let mut f = 0u64;
        // SAFETY: the image is open; `f` is written.
        check(i64::from(unsafe { ffi::rbd_get_features(self.raw, &mut f) }))?;
        Ok(f)
    }

    /// Whether the image has the exclusive-lock feature.
    pub fn exclusive_lock(&self) -> bool {
        self.features()
            .is_ok_and(|f| f & ffi::RBD_FEATURE_EXCLUSIVE_LOCK != 0)
    }

    /// Grows or shrinks the image to `bytes`. Blocks.
    pub fn resize(&self, bytes: u64) -> io::Result<()> {
        // SAFETY: the image is open.
        check(i64::from(unsafe { ffi::rbd_resize(self.raw, bytes) })).map(drop)
    }

    /// Calls `f` on a librbd thread whenever the image header changes (a
    /// resize by another client among other things). One watch per image;
    /// a second call replaces nothing and fails with `EEXIST`.
    pub fn watch(&self, f: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
        let mut w = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let cb: Box<WatchFn> = Box::new(Box::new(f));
        let arg = (&*cb as *const WatchFn).cast_mut().cast::<c_void>();
        let mut handle = 0u64;
        // SAFETY: `arg` points at the boxed closure, which `self.watch`
        // keeps until `rbd_update_unwatch` returned (Drop), after which
        // librbd calls it no more.
        check(i64::from(unsafe {
            ffi::rbd_update_watch(self.raw, &mut handle, Some(on_update), arg)
        }))?;
        *w = Some(Watch { handle, _cb: cb });
        Ok(())
    }

    /// Runs one operation and waits for it (blocking callers: the worker
    /// pool, the control plane). `buf` as for [`Queue::submit`].
    pub fn run(&self, op: Op, buf: Option<&DmaBuf>) -> io::Result<u64> {
        let mut c: ffi::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: no callback; `c` is written on success.
        check(i64::from(unsafe {
            ffi::rbd_aio_create_completion(std::ptr::null_mut(), None, &mut c)
        }))?;
        // SAFETY: `start` checks `buf` against the operation; the buffer
        // outlives the operation because this waits for it below.
        if let Err(e) = unsafe { self.start(op, buf, c) } {
            // SAFETY: not submitted; released once.
            unsafe { ffi::rbd_aio_release(c) };
            return Err(e);
        }
        // SAFETY: `c` was submitted; waiting and then reading the result
        // and releasing it once is the documented sequence.
        let r = unsafe {
            ffi::rbd_aio_wait_for_complete(c);
            let r = ffi::rbd_aio_get_return_value(c);
            ffi::rbd_aio_release(c);
            r
        };
        check(r as i64).map(|n| n as u64)
    }

    /// Submits `op` with completion `c`.
    ///
    /// # Safety
    /// `c` is a fresh completion; whatever of `buf` the operation uses
    /// stays allocated until `c` completes.
    unsafe fn start(&self, op: Op, buf: Option<&DmaBuf>, c: ffi::rbd_completion_t) -> io::Result<()> {
        let data = |buf_off: usize, len: usize| -> io::Result<*mut c_char> {
            match buf {
                Some(b) if b.contains(buf_off as u64, len as u64) => {
                    // In bounds: checked just above.
                    Ok(b.as_mut_ptr().wrapping_add(buf_off).cast())
                }
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "operation outside its buffer",
                )),
            }
        };
        // SAFETY: (each call) the image is open, `c` fresh, pointers in
        // bounds of a buffer the caller keeps until completion.
        let r = unsafe {
            match op {
                Op::Read { off, buf_off, len } => {
                    ffi::rbd_aio_read(self.raw, off, len, data(buf_off, len)?, c)
                }
                Op::Write { off, buf_off, len } => {
                    ffi::rbd_aio_write(self.raw, off, len, data(buf_off, len)?, c)
                }
                Op::Flush => ffi::rbd_aio_flush(self.raw, c),
                Op::Discard { off, len } => ffi::rbd_aio_discard(self.raw, off, len, c),
                Op::WriteZeroes { off, len } => ffi::rbd_aio_write_zeroes(self.raw, off, len, c, 0, 0),
                Op::WriteSame {
                    off,
                    len,
                    buf_off,
                    pattern_len,
                } => {
                    ffi::rbd_aio_writesame(self.raw, off, len, data(buf_off, pattern_len)?, pattern_len, c, 0)
                }
            }
        };
        check(i64::from(r)).map(drop)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Some(w) = self.watch.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            // SAFETY: the handle came from rbd_update_watch on this image;
            // the callback box is dropped only after this returns.
            if let Err(e) = check(i64::from(unsafe { ffi::rbd_update_unwatch(self.raw, w.handle) })) {
                tracing::warn!(image = %self.name, error = %e, "rbd_update_unwatch failed");
                // librbd may still call it: keep the closure.
                std::mem::forget(w);
            }
        }
        // SAFETY: every operation holds an Arc of its image (a queue's
        // slot, or the caller of `run`), so none is in flight.
        if let Err(e) = check(i64::from(unsafe { ffi::rbd_close(self.raw) })) {
            tracing::warn!(image = %self.name, error = %e, "rbd_close failed");
        }
    }
}

/// librbd's header-update callback: runs the image's watch closure.
unsafe extern "C" fn on_update(arg: *mut c_void) {
    // SAFETY: `arg` is the `WatchFn` box the image keeps until unwatched.
    let f = unsafe { &*(arg as *const WatchFn) };
    f();
}

// ------------------------------------------------------------ operations

/// One operation on an image; offsets and lengths in bytes. `buf_off`
/// ranges lie in the buffer passed with the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read {
        off: u64,
        buf_off: usize,
        len: usize,
    },
    Write {
        off: u64,
        buf_off: usize,
        len: usize,
    },
    /// Makes every completed write durable.
    Flush,
    /// Deallocates; with `rbd_skip_partial_discard` (the default) ranges
    /// smaller than an object keep their data.
    Discard {
        off: u64,
        len: u64,
    },
    /// Zeros the range, deallocating whole objects (reads return zeros).
    WriteZeroes {
        off: u64,
        len: usize,
    },
    /// Writes the `pattern_len` bytes at `buf_off` over `len` bytes (a
    /// multiple of `pattern_len`).
    WriteSame {
        off: u64,
        len: usize,
        buf_off: usize,
        pattern_len: usize,
    },
}

/// The list completions are appended to, and the eventfd that tells the
/// poller.
struct Shared {
    eventfd: OwnedFd,
    done: Mutex<Vec<(u32, isize)>>,
}

impl Shared {
    fn push(&self, slot: u32, ret: isize) {
        let was_empty = {
            let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
            d.push((slot, ret));
            d.len() == 1
        };
        if was_empty {
            let one = 1u64.to_ne_bytes();
            // SAFETY: 8 readable bytes; the descriptor is owned by `self`.
            // A full counter (EAGAIN) already wakes the reader.
            let _ = unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// The callback argument of one slot: never moves, never changes.
struct Arg {
    shared: Arc<Shared>,
    slot: u32,
}

struct InFlight<P> {
    _image: Arc<Image>,
    buf: Option<Arc<DmaBuf>>,
    payload: P,
}

/// librbd's completion callback (a librbd thread).
unsafe extern "C" fn on_complete(c: ffi::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the slot's `Arg`, which the queue keeps until this
    // slot's completion was pushed (and reaped).
    let arg = unsafe { &*(arg as *const Arg) };
    let (shared, slot) = (Arc::clone(&arg.shared), arg.slot);
    // SAFETY: `c` is complete (we are its callback); released once, here
    // (librbd allows releasing from the callback).
    let ret = unsafe {
        let r = ffi::rbd_aio_get_return_value(c);
        ffi::rbd_aio_release(c);
        r
    };
    // After this the queue may reuse or free the slot: `arg` is not used.
    shared.push(slot, ret);
}

/// One poller's asynchronous operations on images, each with the
/// caller's payload `P`.
pub struct Queue<P> {
    shared: Arc<Shared>,
    slots: Vec<Option<InFlight<P>>>,
    /// Each slot's callback argument, allocated once (`Box::into_raw`)
    /// and freed in `Drop`: librbd threads read them while `args` grows,
    /// so they are raw pointers, never borrowed through the vector.
    args: Vec<NonNull<Arg>>,
    free: Vec<u32>,
    /// Taken from `shared` by `reap` (swapped, so neither allocates).
    reaped: Vec<(u32, isize)>,
    in_flight: usize,
    submitted: u64,
}

// SAFETY: the raw `Arg` pointers are owned by the queue (freed in its
// Drop) and only read, by librbd threads, through `Arc<Shared>` and a
// `u32`, both thread-safe; everything else in the queue is Send.
unsafe impl<P: Send> Send for Queue<P> {}

impl<P> fmt::Debug for Queue<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("in_flight", &self.in_flight)
            .field("submitted", &self.submitted)
            .finish()
    }
}

impl<P> Queue<P> {
    /// An empty queue with room for `capacity` operations before its
    /// tables grow.
    pub fn new(capacity: usize) -> io::Result<Queue<P>> {
        // SAFETY: eventfd(2) takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Queue {
            shared: Arc::new(Shared {
                eventfd,
                done: Mutex::new(Vec::with_capacity(capacity)),
            }),
            slots: Vec::with_capacity(capacity),
            args: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            reaped: Vec::with_capacity(capacity),
            in_flight: 0,
            submitted: 0,
        })
    }

    /// Readable when completions wait: sleep on it, then
    /// [`clear_event`](Self::clear_event) and [`reap`](Self::reap).
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.shared.eventfd.as_fd()
    }

    /// Resets the eventfd (before sleeping, or after it was found readable).
    pub fn clear_event(&self) {
        let mut b = [0u8; 8];
        // SAFETY: 8 writable bytes; nonblocking (EAGAIN when not signalled).
        let _ = unsafe { libc::read(self.shared.eventfd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    }

    /// Operations submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Operations submitted over the queue's life.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// Submits `op` on `image` (librbd sends it at once); a `Read`,
    /// `Write` or `WriteSame` needs `buf` and a range inside it. The
    /// queue holds `image`, `buf` and `payload` until the completion is
    /// reaped. On failure the payload comes back with the error.
    pub fn submit(
        &mut self,
        image: &Arc<Image>,
        op: Op,
        buf: Option<&Arc<DmaBuf>>,
        payload: P,
    ) -> Result<(), (P, io::Error)> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.slots.len() as u32;
                self.slots.push(None);
                let arg = Box::new(Arg {
                    shared: Arc::clone(&self.shared),
                    slot: s,
                });
                self.args.push(NonNull::from(Box::leak(arg)));
                // Completions never outnumber slots: pushes never grow.
                let n = self.slots.len();
                self.reaped.reserve(n.saturating_sub(self.reaped.len()));
                let mut d = self.shared.done.lock().unwrap_or_else(|p| p.into_inner());
                let len = d.len();
                d.reserve(n.saturating_sub(len));
                s
            }
        };
        let arg = self.args[slot as usize].as_ptr().cast::<c_void>();
        let mut c: ffi::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `arg` points at the slot's `Arg`, freed only in Drop
        // after every operation was reaped (or never); `c` is written on
        // success.
        let r = unsafe { ffi::rbd_aio_create_completion(arg, Some(on_complete), &mut c) };
        if let Err(e) = check(i64::from(r)) {
            self.free.push(slot);
            return Err((payload, e));
        }
        self.slots[slot as usize] = Some(InFlight {
            _image: Arc::clone(image),
            buf: buf.cloned(),
            payload,
        });
        // SAFETY: `c` is fresh; the slot holds `buf` (and the image) until
        // the completion is reaped, so the memory outlives the operation.
        if let Err(e) = unsafe { image.start(op, buf.map(|b| &**b), c) } {
            // SAFETY: not submitted: no callback will come; released once.
            unsafe { ffi::rbd_aio_release(c) };
            let f = self.slots[slot as usize].take();
            self.free.push(slot);
            return match f {
                Some(f) => Err((f.payload, e)),
                None => unreachable!("slot filled above"),
            };
        }
        self.in_flight += 1;
        self.submitted += 1;
        Ok(())
    }

    /// Calls `f(payload, buffer, result)` for each completed operation
    /// (result: bytes moved or 0, or `-errno`); no system call. Returns
    /// how many.
    pub fn reap(&mut self, mut f: impl FnMut(P, Option<Arc<DmaBuf>>, isize)) -> usize {
        {
            let mut d = self.shared.done.lock().unwrap_or_else(|p| p.into_inner());
            if d.is_empty() {
                return 0;
            }
            std::mem::swap(&mut *d, &mut self.reaped);
        }
        let mut reaped = std::mem::take(&mut self.reaped);
        let n = reaped.len();
        for (slot, ret) in reaped.drain(..) {
            let Some(done) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
                tracing::error!(slot, "rbd completion for an empty slot");
                continue;
            };
            self.free.push(slot);
            self.in_flight -= 1;
            f(done.payload, done.buf, ret);
        }
        self.reaped = reaped;
        n
    }

    /// Blocks until a completion is waiting or `timeout` passed (tests,
    /// shutdown).
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        crate::os::wait_any(&[self.eventfd()], Some(timeout)).map(drop)
    }
}

impl<P> Drop for Queue<P> {
    /// Waits for every operation in flight (librbd writes into their
    /// buffers until then); after a minute it gives up and leaks them.
    fn drop(&mut self) {
        let start = Instant::now();
        while self.in_flight > 0 {
            if start.elapsed() > Duration::from_secs(60) {
                tracing::error!(
                    in_flight = self.in_flight,
                    "rbd operations still in flight at shutdown"
                );
                std::mem::forget(std::mem::take(&mut self.slots));
                // The arguments stay allocated: librbd may still call back.
                self.args.clear();
                return;
            }
            self.clear_event();
            if self.reap(|_, _, _| {}) == 0 {
                let _ = self.wait(Duration::from_millis(100));
            }
        }
        for a in self.args.drain(..) {
            // SAFETY: made by Box::leak in `submit`; no operation is in
            // flight, so no callback reads it any more.
            drop(unsafe { Box::from_raw(a.as_ptr()) });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn image_info_layout_matches_librbd() {
        let mut c = [0usize; 8];
        // SAFETY: `c` has room for 8 values.
        let n = unsafe { srptd_ffi::rbd::srptd_rbd_layout(c.as_mut_ptr(), c.len() as i32) } as usize;
        let rust = [
            std::mem::size_of::<ffi::rbd_image_info_t>(),
            std::mem::offset_of!(ffi::rbd_image_info_t, order),
            std::mem::offset_of!(ffi::rbd_image_info_t, block_name_prefix),
            std::mem::offset_of!(ffi::rbd_image_info_t, parent_pool),
            std::mem::offset_of!(ffi::rbd_image_info_t, parent_name),
        ];
        assert_eq!(&c[..n], &rust[..]);
    }

    #[test]
    fn unreachable_cluster_fails_within_the_timeout() {
        let dir = std::env::temp_dir().join(format!("srptd-rbd-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("ceph.conf");
        // A monitor address nobody listens on.
        std::fs::write(
            &conf,
            "[global]\nmon host = 127.0.0.1:1\nauth client required = none\n",
        )
        .unwrap();
        let t0 = Instant::now();
        let e = Cluster::connect(Some(&conf), None, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_conf_file_is_named() {
        let e = Cluster::connect(
            Some(Path::new("/nonexistent/srptd/ceph.conf")),
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/srptd/ceph.conf"), "{e}");
    }

    /// The test cluster's conf (`scripts/ceph-test-cluster.sh start`), or
    /// `None` with the reason printed.
    pub(crate) fn test_conf() -> Option<std::path::PathBuf> {
        match std::env::var_os("SRPTD_TEST_CEPH_CONF") {
            Some(p) => Some(p.into()),
            None => {
                eprintln!("SRPTD_TEST_CEPH_CONF not set (scripts/ceph-test-cluster.sh start); skipping");
                None
            }
        }
    }

    fn wait_one(q: &mut Queue<u32>) -> (u32, isize) {
        let mut got = None;
        let t0 = Instant::now();
        while got.is_none() {
            assert!(t0.elapsed() < Duration::from_secs(30), "no completion");
            q.wait(Duration::from_millis(100)).unwrap();
            q.clear_event();
            q.reap(|p, _, r| got = Some((p, r)));
        }
        got.unwrap()
    }

    #[test]
    fn queue_reads_writes_zeroes_and_write_sames_on_the_test_image() {
        let Some(conf) = test_conf() else { return };
        let cluster = Cluster::connect(Some(&conf), None, Duration::from_secs(10)).unwrap();
        let pool = cluster.pool("rbd").unwrap();
        assert!(matches!(
            Image::open(&pool, "srptd-no-such-image", false),
            Err(Error::NoImage { .. })
        ));
        assert!(matches!(
            cluster.pool("srptd-no-such-pool"),
            Err(Error::NoPool { .. })
        ));
        let image = Arc::new(Image::open(&pool, "test", false).unwrap());
        let size = image.size().unwrap();
        assert!(size >= 16 << 20, "{size}");
        assert_eq!(image.stat().unwrap().size, size);
        let mut q = Queue::<u32>::new(8).unwrap();
        let buf = Arc::new(DmaBuf::new(1 << 20).unwrap());
        for i in 0..(1 << 20) {
            buf.write(i, &[(i % 251) as u8 | 1]);
        }
        let base = 8u64 << 20;
        q.submit(
            &image,
            Op::Write {
                off: base,
                buf_off: 0,
                len: 1 << 20,
            },
            Some(&buf),
            1,
        )
        .unwrap();
        assert_eq!(wait_one(&mut q), (1, 0));
        q.submit(&image, Op::Flush, None, 2).unwrap();
        assert_eq!(wait_one(&mut q), (2, 0));
        // Zeroes 4 KiB inside an object: reads back as zeros.
        q.submit(
            &image,
            Op::WriteZeroes {
                off: base + 4096,
                len: 4096,
            },
            None,
            3,
        )
        .unwrap();
        assert_eq!(wait_one(&mut q), (3, 0));
        let out = Arc::new(DmaBuf::new(1 << 20).unwrap());
        q.submit(
            &image,
            Op::Read {
                off: base,
                buf_off: 0,
                len: 3 * 4096,
            },
            Some(&out),
            4,
        )
        .unwrap();
        assert_eq!(wait_one(&mut q).0, 4);
        out.with_bytes(4096, 4096, |b| assert!(b.iter().all(|&x| x == 0)));
        out.with_bytes(0, 4096, |b| buf.with_bytes(0, 4096, |a| assert_eq!(a, b)));
        out.with_bytes(8192, 4096, |b| buf.with_bytes(8192, 4096, |a| assert_eq!(a, b)));
        // WRITE SAME of one 512-byte pattern over 64 KiB.
        buf.fill(0, 512, 0xa5);
        let ws = Op::WriteSame {
            off: base,
            len: 65536,
            buf_off: 0,
            pattern_len: 512,
        };
        q.submit(&image, ws, Some(&buf), 5).unwrap();
        assert_eq!(wait_one(&mut q), (5, 0));
        image
            .run(
                Op::Read {
                    off: base,
                    buf_off: 0,
                    len: 65536 + 512,
                },
                Some(&out),
            )
            .unwrap();
        out.with_bytes(0, 65536, |b| assert!(b.iter().all(|&x| x == 0xa5)));
        out.with_bytes(65536, 512, |b| assert!(b.iter().any(|&x| x != 0xa5)));
        // A range outside the buffer is refused before librbd sees it.
        let bad = Op::Read {
            off: 0,
            buf_off: (1 << 20) - 512,
            len: 4096,
        };
        assert!(q.submit(&image, bad, Some(&out), 6).is_err());
        assert_eq!(q.in_flight(), 0);
        // Past the end of the image: an error completion, not a hang.
        q.submit(
            &image,
            Op::Read {
                off: size,
                buf_off: 0,
                len: 4096,
            },
            Some(&out),
            7,
        )
        .unwrap();
        let (p, r) = wait_one(&mut q);
        assert_eq!(p, 7);
        assert!(r < 0, "{r}");
    }
}
