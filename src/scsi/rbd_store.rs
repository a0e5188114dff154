//! Ceph RBD backstores: a LUN is an RBD image, reached through librbd.
//!
//! A poller's [`RbdEngine`](super::lun::RbdEngine) submits the image's
//! READ, WRITE, SYNCHRONIZE CACHE, UNMAP and WRITE SAME asynchronously
//! and reaps their completions in its loop; the blocking methods here
//! (the worker pool's COMPARE AND WRITE, VERIFY, WRITE AND VERIFY) wait
//! for one operation each. See `docs/rbd.md`.
//!
//! - FUA: librbd has no FUA write; the engine writes, then flushes.
//! - UNMAP: `rbd_aio_write_zeroes` (whole objects are deallocated, the
//!   rest zeroed), so deallocated blocks read as zeros (LBPRZ = 1) even
//!   where `rbd_skip_partial_discard` would leave a plain discard's data.
//! - The size is the image's, followed live: a header change (`rbd
//!   resize` by anyone) calls the hook the target installs
//!   ([`Backstore::watch_size`]), which re-reads it and raises CAPACITY
//!   DATA HAS CHANGED.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::backstore::{Backstore, ConfigError, ResizeError};
use super::blockdev::Limits;
use super::capacity::Capacity;
use crate::mem::DmaBuf;
use crate::rbd::{self, Cluster, Image, Op};

/// How long connecting to a cluster may take before the LUN fails to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where an RBD LUN lives: `rbd:<pool>/<image>[,conf=PATH][,id=NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdSpec {
    pub pool: String,
    pub image: String,
    /// The Ceph configuration file (`None`: Ceph's default search).
    pub conf: Option<PathBuf>,
    /// The client name without `client.` (`None`: `admin`).
    pub id: Option<String>,
}

impl RbdSpec {
    /// Parses `<pool>/<image>`; `conf` and `id` come from the options.
    pub fn parse(main: &str, conf: Option<PathBuf>, id: Option<String>) -> Result<RbdSpec, &'static str> {
        let (pool, image) = main.split_once('/').ok_or("expected rbd:<pool>/<image>")?;
        if pool.is_empty() || image.is_empty() {
            return Err("expected rbd:<pool>/<image>: empty pool or image name");
        }
        if image.contains('/') {
            return Err("expected rbd:<pool>/<image>: RBD namespaces are not supported");
        }
        if [pool, image].iter().any(|s| s.contains('\0')) {
            return Err("NUL byte in the pool or image name");
        }
        if id
            .as_deref()
            .is_some_and(|i| i.is_empty() || i.starts_with("client."))
        {
            return Err("id= names the client without \"client.\" (id=admin)");
        }
        if conf.as_deref().is_some_and(|c| c.as_os_str().is_empty()) {
            return Err("empty conf= path");
        }
        Ok(RbdSpec {
            pool: pool.to_owned(),
            image: image.to_owned(),
            conf,
            id,
        })
    }
}

impl fmt::Display for RbdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rbd:{}/{}", self.pool, self.image)?;
        if let Some(c) = &self.conf {
            write!(f, ",conf={}", c.display())?;
        }
        if let Some(i) = &self.id {
            write!(f, ",id={i}")?;
        }
        Ok(())
    }
}

/// Connections by configuration file and client: LUNs on one cluster share
/// one (each has a few dozen librados threads).
type ClusterKey = (Option<PathBuf>, Option<String>);
static CLUSTERS: Mutex<Vec<(ClusterKey, Weak<Cluster>)>> = Mutex::new(Vec::new());

fn cluster(spec: &RbdSpec) -> Result<Arc<Cluster>, rbd::Error> {
    let key = (spec.conf.clone(), spec.id.clone());
    let mut all = CLUSTERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(c) = all.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
        return Ok(c);
    }
    let c = Cluster::connect(spec.conf.as_deref(), spec.id.as_deref(), CONNECT_TIMEOUT)?;
    all.push((key, Arc::downgrade(&c)));
    Ok(c)
}

/// A LUN on an RBD image.
pub struct RbdBackstore {
    spec: RbdSpec,
    image: Arc<Image>,
    cap: Capacity,
    object_size: u64,
}

impl fmt::Debug for RbdBackstore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdBackstore")
            .field("spec", &self.spec.to_string())
            .field("cap", &self.cap)
            .finish()
    }
}

impl RbdBackstore {
    /// Connects (at most [`CONNECT_TIMEOUT`]), opens the image and reads
    /// its size. `field` names the setting in errors.
    pub fn open(spec: &RbdSpec, block_size: u32, read_only: bool, field: &str) -> Result<Self, ConfigError> {
        let err = |source| ConfigError::Rbd {
            field: field.to_owned(),
            spec: spec.to_string(),
            source,
        };
        if let Some(c) = spec.conf.as_deref().filter(|c| !c.exists()) {
            return Err(ConfigError::FileMissing {
                field: format!("{field} (conf=)"),
                path: c.to_owned(),
            });
        }
        let cluster = cluster(spec).map_err(err)?;
        let pool = cluster.pool(&spec.pool).map_err(err)?;
        let image = Image::open(&pool, &spec.image, read_only).map_err(err)?;
        let ioerr = |source| ConfigError::Io {
            field: field.to_owned(),
            path: PathBuf::from(spec.to_string()),
            source,
        };
        let info = image.stat().map_err(ioerr)?;
        if info.size < u64::from(block_size) {
            return Err(ConfigError::FileTooSmall {
                field: field.to_owned(),
                path: PathBuf::from(spec.to_string()),
                size: info.size,
                block_size,
            });
        }
        if image.exclusive_lock() && !read_only {
            tracing::info!(
                image = %spec,
                "exclusive-lock: one client writes at a time; another gateway's writes take the lock over"
            );
        }
        Ok(RbdBackstore {
            spec: spec.clone(),
            image: Arc::new(image),
            cap: Capacity::new(
                block_size,
                info.size,
                read_only,
                "the image was opened read-only: remove the LUN and add it writable",
            ),
            object_size: info.object_size,
        })
    }

    /// The image, for a poller's engine.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Byte offset and length of `blocks` blocks from `lba`, the length as
    /// librbd takes it.
    fn range(&self, lba: u64, blocks: u64) -> io::Result<(u64, usize)> {
        let (off, len) = self.cap.range(lba, blocks)?;
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
        Ok((off, len))
    }
}

impl Backstore for RbdBackstore {
    fn block_size(&self) -> u32 {
        self.cap.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.cap.num_blocks()
    }
    fn read_only(&self) -> bool {
        self.cap.read_only()
    }
    fn set_read_only(&self, read_only: bool) -> Result<(), ResizeError> {
        self.cap.set_read_only(read_only)
    }
    fn resize(&self, bytes: Option<u64>) -> Result<u64, ResizeError> {
        if let Some(size) = bytes {
            self.cap.check_resize(size)?;
            self.image.resize(size)?;
        }
        self.cap.set_size(self.image.size()?)
    }
    fn read(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize) -> io::Result<()> {
        let op = Op::Read {
            off: self.cap.offset(lba)?,
            buf_off: off,
            len,
        };
        self.image.run(op, Some(buf)).map(drop)
    }
    fn write(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize, fua: bool) -> io::Result<()> {
        self.cap.check_writable()?;
        let op = Op::Write {
            off: self.cap.offset(lba)?,
            buf_off: off,
            len,
        };
        self.image.run(op, Some(buf))?;
        if fua {
            self.image.run(Op::Flush, None)?;
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        if self.cap.opened_read_only() {
            return Ok(());
        }
        self.image.run(Op::Flush, None).map(drop)
    }
    fn unmap(&self, lba: u64, blocks: u64) -> io::Result<()> {
        self.cap.check_writable()?;
        let (off, len) = self.range(lba, blocks)?;
        self.image.run(Op::WriteZeroes { off, len }, None).map(drop)
    }
    fn write_same(&self, lba: u64, blocks: u64, pattern: &[u8]) -> io::Result<()> {
        self.cap.check_writable()?;
        let bs = self.cap.block_size() as usize;
        if pattern.len() != bs {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pattern is not one block",
            ));
        }
        let (off, len) = self.range(lba, blocks)?;
        let block = DmaBuf::new(bs)?;
        block.write(0, pattern);
        let op = Op::WriteSame {
            off,
            len,
            buf_off: 0,
            pattern_len: bs,
        };
        self.image.run(op, Some(&block)).map(drop)
    }
    fn dma_buf(&self) -> Option<&Arc<DmaBuf>> {
        None
    }
    fn is_blocking(&self) -> bool {
        true
    }
    fn thin_provisioned(&self) -> bool {
        // RBD images are thin; write-zeroes deallocates whole objects.
        true
    }
    fn write_cache(&self) -> bool {
        // librbd's cache (rbd_cache, on by default) acknowledges writes
        // before the OSDs have them: SYNCHRONIZE CACHE and FUA flush it.
        true
    }
    fn identity(&self) -> Option<String> {
        // The same on every gateway that serves the image, so initiators
        // see one device through both (multipath).
        Some(format!("rbd:{}/{}", self.spec.pool, self.spec.image))
    }
    fn rbd(&self) -> Option<&RbdBackstore> {
        Some(self)
    }
    fn watch_size(&self, on_change: Box<dyn Fn() + Send + Sync>) {
        // librbd's callback only wakes a thread of ours, which reads the
        // size: librbd calls made from its own callback thread may wait
        // for that thread. The thread ends with the image (the sender).
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("srptd-rbd-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    on_change();
                }
            });
        if let Err(e) = thread {
            tracing::warn!(image = %self.spec, error = %e, "no thread to follow the image's size");
            return;
        }
        // A full channel already has a change pending.
        let notify = move || {
            let _ = tx.try_send(());
        };
        if let Err(e) = self.image.watch(notify) {
            tracing::warn!(image = %self.spec, error = %e, "cannot watch the image for size changes");
        }
    }
    fn limits(&self) -> Limits {
        let object = u32::try_from(self.object_size).unwrap_or(u32::MAX);
        Limits {
            physical_block: self.cap.block_size(),
            granularity: 4096,
            // Transfers within one object touch one OSD.
            optimal_transfer: object,
            max_unmap: u64::MAX,
            // Whole objects are deallocated; the rest is zeroed.
            unmap_granularity: object,
            unmap_zeroes: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        let s = RbdSpec::parse("rbd/disk1", Some("/etc/ceph/x.conf".into()), Some("srptd".into())).unwrap();
        assert_eq!((s.pool.as_str(), s.image.as_str()), ("rbd", "disk1"));
        assert_eq!(s.to_string(), "rbd:rbd/disk1,conf=/etc/ceph/x.conf,id=srptd");
        assert_eq!(RbdSpec::parse("p/i", None, None).unwrap().to_string(), "rbd:p/i");
        for bad in ["rbd", "/img", "pool/", "pool/ns/img", ""] {
            assert!(RbdSpec::parse(bad, None, None).is_err(), "{bad}");
        }
        assert!(RbdSpec::parse("p/i", None, Some("client.admin".into())).is_err());
        assert!(RbdSpec::parse("p/i", None, Some(String::new())).is_err());
        assert!(RbdSpec::parse("p/i", Some(PathBuf::new()), None).is_err());
    }

    #[test]
    fn a_missing_conf_file_is_a_config_error_naming_it() {
        let spec = RbdSpec::parse("rbd/x", Some("/nonexistent/srptd.conf".into()), None).unwrap();
        let e = RbdBackstore::open(&spec, 512, false, "luns[0].backstore").unwrap_err();
        assert!(matches!(e, ConfigError::FileMissing { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/srptd.conf"), "{e}");
    }

    #[test]
    fn librbd_errors_map_to_fitting_sense() {
        use crate::scsi::disk::io_sense;
        let sense = |errno, write| {
            let s = io_sense(&io::Error::from_raw_os_error(errno), write, 77);
            (s.key.code(), s.asc, s.ascq)
        };
        // Unreachable cluster or fenced client: NOT READY, LOGICAL UNIT
        // COMMUNICATION TIME-OUT / FAILURE.
        assert_eq!(sense(libc::ETIMEDOUT, false), (0x2, 0x08, 0x01));
        for e in [libc::ENOTCONN, libc::ESHUTDOWN, libc::ECONNREFUSED] {
            assert_eq!(sense(e, true), (0x2, 0x08, 0x00), "{e}");
        }
        // A full pool: SPACE ALLOCATION FAILED WRITE PROTECT.
        assert_eq!(sense(libc::ENOSPC, true), (0x7, 0x27, 0x07));
        assert_eq!(sense(libc::EDQUOT, true), (0x7, 0x27, 0x07));
        // A read-only image: WRITE PROTECTED.
        assert_eq!(sense(libc::EROFS, true), (0x7, 0x27, 0x00));
        // Beyond the end (shrunk meanwhile): LBA OUT OF RANGE.
        assert_eq!(sense(libc::ERANGE, false), (0x5, 0x21, 0x00));
        // Anything else: MEDIUM ERROR with the LBA.
        assert_eq!(sense(libc::EIO, false), (0x3, 0x11, 0x00));
        let s = io_sense(&io::Error::from_raw_os_error(libc::EIO), true, 77);
        assert_eq!((s.key.code(), s.asc, s.info), (0x3, 0x0c, Some(77)));
    }

    fn test_spec(image: &str) -> Option<RbdSpec> {
        let conf = crate::rbd::tests::test_conf()?;
        Some(RbdSpec::parse(&format!("rbd/{image}"), Some(conf), None).unwrap())
    }

    #[test]
    fn missing_pool_and_image_are_named() {
        let Some(spec) = test_spec("srptd-no-such-image") else {
            return;
        };
        let e = RbdBackstore::open(&spec, 512, false, "luns[1].backstore").unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("luns[1].backstore: rbd:rbd/srptd-no-such-image"),
            "{m}"
        );
        assert!(m.contains("does not exist"), "{m}");
        let mut spec = spec;
        spec.pool = "srptd-no-such-pool".into();
        let m = RbdBackstore::open(&spec, 512, false, "b")
            .unwrap_err()
            .to_string();
        assert!(m.contains("pool \"srptd-no-such-pool\" does not exist"), "{m}");
    }

    #[test]
    fn blocking_methods_round_trip_on_the_test_image() {
        let Some(spec) = test_spec("test") else { return };
        let b = RbdBackstore::open(&spec, 4096, false, "b").unwrap();
        assert!(b.num_blocks() > 64);
        let buf = DmaBuf::new(4 * 4096).unwrap();
        for i in 0..4 * 4096 {
            buf.write(i, &[(i % 253) as u8 | 1]);
        }
        b.write(40, &buf, 0, 4 * 4096, true).unwrap();
        let out = DmaBuf::new(4 * 4096).unwrap();
        b.read(40, &out, 0, 4 * 4096).unwrap();
        buf.with_bytes(0, 4 * 4096, |a| out.with_bytes(0, 4 * 4096, |o| assert_eq!(a, o)));
        b.unmap(41, 2).unwrap();
        b.write_same(43, 1, &[0x5a; 4096]).unwrap();
        b.flush().unwrap();
        b.read(40, &out, 0, 4 * 4096).unwrap();
        out.with_bytes(4096, 8192, |o| assert!(o.iter().all(|&x| x == 0)));
        out.with_bytes(3 * 4096, 4096, |o| assert!(o.iter().all(|&x| x == 0x5a)));
        assert_eq!(b.identity().as_deref(), Some("rbd:rbd/test"));
        assert_eq!(b.resize(None).unwrap(), b.num_blocks());
    }
}
