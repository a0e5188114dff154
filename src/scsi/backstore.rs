//! Backstores: where a LUN's blocks live.
//!
//! - [`RamBackstore`]: the whole LUN is one [`DmaBuf`], so the RDMA layer can
//!   register it once and move READ/WRITE data straight in and out of it.
//! - [`FileBackstore`]: a regular file or a block device, accessed with
//!   `O_DIRECT` where the file system allows it and buffered otherwise.
//! - [`RbdBackstore`](super::rbd_store::RbdBackstore): a Ceph RBD image
//!   (`rbd_store.rs`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::blockdev::{DeviceInfo, Discard, Limits};
use super::capacity::Capacity;
use super::direct_io::{self, Direct};
use super::file_aio::AsyncFiles;
use super::rbd_store::{RbdBackstore, RbdSpec};
use crate::mem::DmaBuf;

/// Logical block sizes a LUN may have.
pub const BLOCK_SIZES: [u32; 2] = [512, 4096];

/// A LUN's storage. Offsets are in logical blocks of [`block_size`](Self::block_size);
/// callers (the command layer) have range-checked every request.
pub trait Backstore: Send + Sync + fmt::Debug {
    /// Logical block length in bytes (512 or 4096).
    fn block_size(&self) -> u32;
    /// Capacity in logical blocks.
    fn num_blocks(&self) -> u64;
    /// Whether writes are refused (DATA PROTECT).
    fn read_only(&self) -> bool;
    /// Turns write protection on or off while the LUN is served; an error
    /// says why it cannot (a file opened read-only stays so).
    fn set_read_only(&self, read_only: bool) -> Result<(), ResizeError>;
    /// Changes the capacity while the LUN is served and returns the new
    /// number of blocks: a regular file is truncated or extended to
    /// `bytes`; a block device's size is read again (`bytes`, if given,
    /// must match it); RAM keeps the size it was created with.
    fn resize(&self, bytes: Option<u64>) -> Result<u64, ResizeError>;
    /// Reads `len` bytes (a multiple of the block size) at `lba` into
    /// `buf[off..off+len]`.
    fn read(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize) -> io::Result<()>;
    /// Writes `buf[off..off+len]` at `lba`; with `fua` the data is on stable
    /// storage before this returns (SBC-3 5.41, FUA bit).
    fn write(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize, fua: bool) -> io::Result<()>;
    /// Makes all completed writes durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> io::Result<()>;
    /// Deallocates `blocks` blocks at `lba`; they read back as zeros
    /// afterwards (LBPRZ = 1).
    fn unmap(&self, lba: u64, blocks: u64) -> io::Result<()>;
    /// Writes the one-block `pattern` into each of `blocks` blocks at `lba`.
    fn write_same(&self, lba: u64, blocks: u64, pattern: &[u8]) -> io::Result<()>;
    /// The storage as one buffer, for zero-copy transfers (RAM only).
    fn dma_buf(&self) -> Option<&Arc<DmaBuf>>;
    /// Whether I/O may block the calling thread (file I/O).
    fn is_blocking(&self) -> bool;
    /// Whether [`unmap`](Self::unmap) really deallocates, so the LUN reports
    /// logical block provisioning (LBPME, LBPU, LBPWS; SBC-3 4.7.3).
    fn thin_provisioned(&self) -> bool;
    /// Whether completed writes may sit in a volatile cache until
    /// [`flush`](Self::flush) (caching mode page WCE, SBC-3 6.4.5).
    fn write_cache(&self) -> bool;
    /// A string that identifies the storage stably across restarts (a file's
    /// canonical path), from which the serial number and NAA are derived;
    /// `None` when the storage has no identity of its own (RAM).
    fn identity(&self) -> Option<String>;
    /// The descriptors an asynchronous engine (io_uring, driven by the
    /// poller) may do this backstore's reads, writes and flushes on;
    /// `None`: blocking calls only.
    fn async_files(&self) -> Option<&AsyncFiles> {
        None
    }
    /// Geometry and provisioning limits reported to initiators.
    fn limits(&self) -> Limits {
        Limits::for_file(self.block_size())
    }
    /// The RBD image a poller's engine submits this backstore's I/O to.
    fn rbd(&self) -> Option<&RbdBackstore> {
        None
    }
    /// Calls `on_change` (on another thread) whenever the size may have
    /// changed outside srptd (an RBD image resized by another client);
    /// backstores that cannot change that way never call it.
    fn watch_size(&self, on_change: Box<dyn Fn() + Send + Sync>) {
        drop(on_change);
    }
}

/// Why a live change of a backstore was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("{0}")]
    Refused(&'static str),
    #[error("size {size} is not a nonzero multiple of the block size {block_size}")]
    BadSize { size: u64, block_size: u32 },
    #[error("the block device has {actual} bytes, not {asked}")]
    DeviceSize { actual: u64, asked: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How a LUN's backstore is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackstoreConfig {
    pub kind: BackstoreKind,
    /// 512 or 4096.
    pub block_size: u32,
    pub read_only: bool,
}

/// The kind of storage and its location or size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackstoreKind {
    /// Anonymous memory of this many bytes.
    Ram { size: u64 },
    /// A regular file or block device.
    File { path: PathBuf, cache: FileCache },
    /// A Ceph RBD image.
    Rbd(RbdSpec),
}

/// How a file LUN's I/O meets the host's page cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileCache {
    /// `O_DIRECT` where the file system allows it: the host's memory holds
    /// none of the LUN, and a completed write is in the file or device
    /// (its volatile cache, until SYNCHRONIZE CACHE).
    #[default]
    Direct,
    /// Through the host's page cache (`,buffered`; as LIO fileio with
    /// `fd_buffered_io=1`, and tgt's and SCST's default): cached reads cost
    /// a copy, a write completes in the cache and reaches the file on
    /// SYNCHRONIZE CACHE or the kernel's write-back, a FUA write is written
    /// through (`O_DSYNC`). Data survives srptd being killed, not the host
    /// losing power before a flush (the caching mode page says WCE = 1).
    Buffered,
}

/// The spec form (`ram:256M`, `file:/srv/disk.img`) that
/// [`BackstoreConfig::parse`] reads.
impl fmt::Display for BackstoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackstoreKind::Ram { size } => {
                let (n, unit) = [(40, "T"), (30, "G"), (20, "M"), (10, "K")]
                    .into_iter()
                    .find(|&(sh, _)| size % (1u64 << sh) == 0)
                    .map_or((*size, ""), |(sh, u)| (size >> sh, u));
                write!(f, "ram:{n}{unit}")
            }
            BackstoreKind::File { path, cache } => {
                write!(f, "file:{}", path.display())?;
                match cache {
                    FileCache::Direct => Ok(()),
                    FileCache::Buffered => f.write_str(",buffered"),
                }
            }
            BackstoreKind::Rbd(spec) => spec.fmt(f),
        }
    }
}

/// A configuration error, naming the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: persistent reservation state {source}")]
    ReservationState {
        field: String,
        #[source]
        source: super::aptpl::LoadError,
    },
    #[error("{field}: cannot parse {value:?}: {reason}")]
    Parse {
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("{field}: size must not be zero")]
    ZeroSize { field: String },
    #[error("{field}: size {size} is not a multiple of the block size {block_size}")]
    SizeNotMultiple {
        field: String,
        size: u64,
        block_size: u32,
    },
    #[error("{field}: block size {block_size} is not 512 or 4096")]
    BadBlockSize { field: String, block_size: u32 },
    #[error("{field}: {path}: no such file or device")]
    FileMissing { field: String, path: PathBuf },
    #[error("{field}: {path}: not a regular file or block device")]
    NotFileOrDevice { field: String, path: PathBuf },
    #[error("{field}: {path}: cannot be opened for writing ({reason}): add ,ro to serve it read-only")]
    NotWritable {
        field: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{field}: {path}: block size {block_size} is smaller than the device's logical block size {device}"
    )]
    BlockSizeBelowDevice {
        field: String,
        path: PathBuf,
        block_size: u32,
        device: u32,
    },
    #[error("{field}: {path}: {size} bytes is less than one {block_size}-byte block")]
    FileTooSmall {
        field: String,
        path: PathBuf,
        size: u64,
        block_size: u32,
    },
    #[error("{field}: {path}: {source}")]
    Io {
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{field}: cannot allocate {size} bytes: {source}")]
    Alloc {
        field: String,
        size: u64,
        #[source]
        source: io::Error,
    },
    #[error("{field}: LUN {lun} is configured twice")]
    DuplicateLun { field: String, lun: u16 },
    #[error("{field}: LUN {lun} is above the maximum 16383")]
    LunTooLarge { field: String, lun: u16 },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: &'static str },
    #[error("{field}: {spec}: {source}")]
    Rbd {
        field: String,
        spec: String,
        #[source]
        source: crate::rbd::Error,
    },
}

impl ConfigError {
    /// The field the error names (`luns[1].backstore.path`).
    pub fn field(&self) -> &str {
        match self {
            ConfigError::ReservationState { field, .. }
            | ConfigError::Parse { field, .. }
            | ConfigError::ZeroSize { field }
            | ConfigError::SizeNotMultiple { field, .. }
            | ConfigError::BadBlockSize { field, .. }
            | ConfigError::FileMissing { field, .. }
            | ConfigError::NotFileOrDevice { field, .. }
            | ConfigError::NotWritable { field, .. }
            | ConfigError::BlockSizeBelowDevice { field, .. }
            | ConfigError::FileTooSmall { field, .. }
            | ConfigError::Io { field, .. }
            | ConfigError::Alloc { field, .. }
            | ConfigError::DuplicateLun { field, .. }
            | ConfigError::LunTooLarge { field, .. }
            | ConfigError::Invalid { field, .. }
            | ConfigError::Rbd { field, .. } => field,
        }
    }

    /// What is wrong, without the field (each message starts with it).
    pub fn reason(&self) -> String {
        let text = self.to_string();
        match text.strip_prefix(self.field()).and_then(|r| r.strip_prefix(": ")) {
            Some(r) => r.to_owned(),
            None => text,
        }
    }
}

impl BackstoreConfig {
    /// Parses `ram:<size>`, `file:<path>` or `rbd:<pool>/<image>`,
    /// followed by options `,ro` and `,bs=512|4096` (default 512), for
    /// `file:` `,buffered` ([`FileCache::Buffered`]), and for `rbd:`
    /// `,conf=<ceph.conf>` and `,id=<client>`. Sizes take K/M/G/T
    /// suffixes (powers of 1024). `field` names the setting in errors.
    pub fn parse(spec: &str, field: &str) -> Result<BackstoreConfig, ConfigError> {
        let perr = |reason| ConfigError::Parse {
            field: field.to_owned(),
            value: spec.to_owned(),
            reason,
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| perr("expected ram:<size>, file:<path> or rbd:<pool>/<image>"))?;
        let mut parts: Vec<&str> = rest.split(',').collect();
        let mut read_only = false;
        let mut block_size = 512;
        let (mut conf, mut id) = (None, None);
        let mut cache = FileCache::Direct;
        // Options are taken from the end so that a path may contain commas.
        while parts.len() > 1 {
            let last = parts[parts.len() - 1];
            if last == "ro" {
                read_only = true;
            } else if last == "rw" {
                read_only = false;
            } else if last == "buffered" && kind == "file" {
                cache = FileCache::Buffered;
            } else if let Some(c) = last.strip_prefix("conf=").filter(|_| kind == "rbd") {
                conf = Some(PathBuf::from(c));
            } else if let Some(i) = last.strip_prefix("id=").filter(|_| kind == "rbd") {
                id = Some(i.to_owned());
            } else if let Some(bs) = last.strip_prefix("bs=") {
                block_size = parse_size(bs)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| perr("bad bs= value"))?;
            } else {
                break;
            }
            parts.pop();
        }
        let main = parts.join(",");
        let kind = match kind {
            "ram" => BackstoreKind::Ram {
                size: parse_size(&main).ok_or_else(|| perr("bad size"))?,
            },
            "file" if !main.is_empty() => BackstoreKind::File {
                path: PathBuf::from(main),
                cache,
            },
            "file" => return Err(perr("empty path")),
            "rbd" => BackstoreKind::Rbd(RbdSpec::parse(&main, conf, id).map_err(perr)?),
            _ => return Err(perr("unknown backstore type (expected ram, file or rbd)")),
        };
        Ok(BackstoreConfig {
            kind,
            block_size,
            read_only,
        })
    }

    /// Validates the configuration and opens or allocates the storage.
    pub fn open(&self, field: &str) -> Result<Arc<dyn Backstore>, ConfigError> {
        if !BLOCK_SIZES.contains(&self.block_size) {
            return Err(ConfigError::BadBlockSize {
                field: format!("{field}.block_size"),
                block_size: self.block_size,
            });
        }
        match &self.kind {
            BackstoreKind::Ram { size } => {
                let f = format!("{field}.size");
                if *size == 0 {
                    return Err(ConfigError::ZeroSize { field: f });
                }
                if size % u64::from(self.block_size) != 0 {
                    return Err(ConfigError::SizeNotMultiple {
                        field: f,
                        size: *size,
                        block_size: self.block_size,
                    });
                }
                let len = usize::try_from(*size).map_err(|_| ConfigError::Alloc {
                    field: f.clone(),
                    size: *size,
                    source: io::Error::new(io::ErrorKind::OutOfMemory, "larger than the address space"),
                })?;
                let buf = DmaBuf::new(len).map_err(|source| ConfigError::Alloc {
                    field: f,
                    size: *size,
                    source,
                })?;
                Ok(Arc::new(RamBackstore::from_buf(
                    Arc::new(buf),
                    self.block_size,
                    *size / u64::from(self.block_size),
                    self.read_only,
                )))
            }
            BackstoreKind::File { path, cache } => Ok(Arc::new(FileBackstore::open(
                path,
                self.block_size,
                self.read_only,
                *cache,
                &format!("{field}.path"),
            )?)),
            BackstoreKind::Rbd(spec) => Ok(Arc::new(RbdBackstore::open(
                spec,
                self.block_size,
                self.read_only,
                field,
            )?)),
        }
    }
}

/// Parses a byte count with an optional K/M/G/T (binary) suffix.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        (i, 't' | 'T') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

// ---------------------------------------------------------------- RAM

/// A LUN held in one page-aligned buffer. Never blocks.
pub struct RamBackstore {
    buf: Arc<DmaBuf>,
    block_size: u32,
    num_blocks: u64,
    read_only: AtomicBool,
}

impl fmt::Debug for RamBackstore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamBackstore")
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl RamBackstore {
    /// A zero-filled RAM LUN of `size` bytes.
    pub fn new(size: u64, block_size: u32, read_only: bool) -> Result<RamBackstore, ConfigError> {
        if !BLOCK_SIZES.contains(&block_size) {
            return Err(ConfigError::BadBlockSize {
                field: "block_size".into(),
                block_size,
            });
        }
        if size == 0 {
            return Err(ConfigError::ZeroSize { field: "size".into() });
        }
        if size % u64::from(block_size) != 0 {
            return Err(ConfigError::SizeNotMultiple {
                field: "size".into(),
                size,
                block_size,
            });
        }
        let len = usize::try_from(size).map_err(|_| ConfigError::Invalid {
            field: "size".into(),
            reason: "too large",
        })?;
        let buf = DmaBuf::new(len).map_err(|source| ConfigError::Alloc {
            field: "size".into(),
            size,
            source,
        })?;
        Ok(RamBackstore::from_buf(
            Arc::new(buf),
            block_size,
            size / u64::from(block_size),
            read_only,
        ))
    }

    fn from_buf(buf: Arc<DmaBuf>, block_size: u32, num_blocks: u64, read_only: bool) -> RamBackstore {
        RamBackstore {
            buf,
            block_size,
            num_blocks,
            read_only: AtomicBool::new(read_only),
        }
    }

    fn byte_range(&self, lba: u64, len: u64) -> io::Result<usize> {
        let off = lba
            .checked_mul(u64::from(self.block_size))
            .filter(|&o| self.buf.contains(o, len));
        off.map(|o| o as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range outside RAM LUN"))
    }
}

impl Backstore for RamBackstore {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }
    fn set_read_only(&self, read_only: bool) -> Result<(), ResizeError> {
        self.read_only.store(read_only, Ordering::Relaxed);
        Ok(())
    }
    fn resize(&self, _bytes: Option<u64>) -> Result<u64, ResizeError> {
        Err(ResizeError::Refused(
            "a RAM LUN keeps the size it was created with (remove it and add it again)",
        ))
    }
    fn read(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize) -> io::Result<()> {
        let src = self.byte_range(lba, len as u64)?;
        self.buf.copy_to(src, buf, off, len);
        Ok(())
    }
    fn write(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize, _fua: bool) -> io::Result<()> {
        let dst = self.byte_range(lba, len as u64)?;
        buf.copy_to(off, &self.buf, dst, len);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn unmap(&self, lba: u64, blocks: u64) -> io::Result<()> {
        let len = blocks * u64::from(self.block_size);
        let off = self.byte_range(lba, len)?;
        self.buf.fill(off, len as usize, 0);
        Ok(())
    }
    fn write_same(&self, lba: u64, blocks: u64, pattern: &[u8]) -> io::Result<()> {
        let bs = self.block_size as usize;
        if pattern.len() != bs {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pattern is not one block",
            ));
        }
        let total = blocks as usize * bs;
        let off = self.byte_range(lba, total as u64)?;
        if total == 0 {
            return Ok(());
        }
        self.buf.write(off, pattern);
        // Doubling copies inside the buffer: the source range is complete
        // before each copy and never overlaps the destination.
        let mut done = bs;
        while done < total {
            let n = done.min(total - done);
            self.buf.copy_to(off, &self.buf, off + done, n);
            done += n;
        }
        Ok(())
    }
    fn dma_buf(&self) -> Option<&Arc<DmaBuf>> {
        Some(&self.buf)
    }
    fn is_blocking(&self) -> bool {
        false
    }
    fn thin_provisioned(&self) -> bool {
        true
    }
    fn write_cache(&self) -> bool {
        false
    }
    fn identity(&self) -> Option<String> {
        None
    }
}

// ---------------------------------------------------------------- file

/// A regular file or block device.
///
/// Four descriptors: `O_DIRECT` and buffered, each plain and with
/// `O_DSYNC` (for FUA writes, SBC-3 5.41: the write completes only once on
/// stable storage). Data moves `O_DIRECT` when that open succeeded,
/// misaligned data through a bounce buffer (`direct_io.rs`: never the page
/// cache beside direct I/O); only after `O_DIRECT` refused an aligned
/// transfer does the file go buffered, for good.
pub struct FileBackstore {
    path: PathBuf,
    direct: Option<File>,
    direct_sync: Option<File>,
    buffered: File,
    buffered_sync: Option<File>,
    cap: Capacity,
    is_device: bool,
    /// A block device's queue limits (read at open).
    device: Option<DeviceInfo>,
    aio: AsyncFiles,
}

impl fmt::Debug for FileBackstore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackstore")
            .field("path", &self.path)
            .field("direct", &self.direct.is_some())
            .field("cap", &self.cap)
            .finish()
    }
}

/// Bytes per write when filling ranges (WRITE SAME, unmap fallback).
const FILL_CHUNK: usize = 1 << 20;

impl FileBackstore {
    /// Opens `path` (`field` names the setting in errors).
    pub fn open(
        path: &Path,
        block_size: u32,
        read_only: bool,
        cache: FileCache,
        field: &str,
    ) -> Result<FileBackstore, ConfigError> {
        if !BLOCK_SIZES.contains(&block_size) {
            return Err(ConfigError::BadBlockSize {
                field: field.replace(".path", ".block_size"),
                block_size,
            });
        }
        let ioerr = |source: io::Error| ConfigError::Io {
            field: field.to_owned(),
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError::FileMissing {
                    field: field.to_owned(),
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(ioerr(e)),
        };
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(ConfigError::NotFileOrDevice {
                field: field.to_owned(),
                path: path.to_owned(),
            });
        }
        let open = |flags: i32| {
            let mut o = OpenOptions::new();
            o.read(true)
                .write(!read_only)
                .custom_flags(flags | libc::O_CLOEXEC);
            o.open(path)
        };
        let device = if ft.is_block_device() {
            Some(DeviceInfo::probe(path).map_err(ioerr)?)
        } else {
            None
        };
        let not_writable = |reason: String| ConfigError::NotWritable {
            field: field.to_owned(),
            path: path.to_owned(),
            reason,
        };
        if let Some(d) = device {
            if d.read_only && !read_only {
                return Err(not_writable("the device is read-only".into()));
            }
            if block_size < d.logical_block {
                return Err(ConfigError::BlockSizeBelowDevice {
                    field: field.replace(".path", ".block_size"),
                    path: path.to_owned(),
                    block_size,
                    device: d.logical_block,
                });
            }
        }
        let buffered = open(0).map_err(|e| match e.raw_os_error() {
            Some(libc::EROFS | libc::EACCES | libc::EPERM) if !read_only => not_writable(e.to_string()),
            _ => ioerr(e),
        })?;
        let direct = match cache {
            FileCache::Direct => open(libc::O_DIRECT).ok(),
            FileCache::Buffered => None,
        };
        let (direct_sync, buffered_sync) = if read_only {
            (None, None)
        } else {
            let ds = if direct.is_some() {
                open(libc::O_DIRECT | libc::O_DSYNC).ok()
            } else {
                None
            };
            (ds, Some(open(libc::O_DSYNC).map_err(ioerr)?))
        };
        // Size: the file length, or for a block device the end offset
        // (`metadata` reports 0 there; seeking to the end avoids the
        // BLKGETSIZE64 ioctl, which would need unsafe code).
        let size = if ft.is_block_device() {
            (&buffered).seek(SeekFrom::End(0)).map_err(ioerr)?
        } else {
            meta.len()
        };
        if size < u64::from(block_size) {
            return Err(ConfigError::FileTooSmall {
                field: field.to_owned(),
                path: path.to_owned(),
                size,
                block_size,
            });
        }
        match &direct {
            None if cache == FileCache::Buffered => {
                tracing::info!("{}: I/O through the page cache (buffered)", path.display())
            }
            None => tracing::info!("{}: O_DIRECT not supported, using buffered I/O", path.display()),
            // Pages of the file in the page cache (left by whoever wrote
            // it, or another reader) make Linux refuse a non-blocking
            // O_DIRECT write over them, and a read over dirty ones, so
            // every such io_uring operation would go to a kernel worker
            // thread. Write back and drop them once; srptd's own I/O
            // bypasses the cache.
            Some(f) => {
                if let Err(e) = f
                    .sync_data()
                    .and_then(|()| crate::os::drop_cached_pages(f.as_fd()))
                {
                    tracing::debug!("{}: page cache not dropped: {e}", path.display());
                }
            }
        }
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        Ok(FileBackstore {
            aio: AsyncFiles::new(direct.as_ref(), &buffered, &path),
            path,
            direct,
            direct_sync,
            buffered,
            buffered_sync,
            cap: Capacity::new(
                block_size,
                size,
                read_only,
                "the file was opened read-only (read_only at start): remove the LUN and add it writable",
            ),
            is_device: ft.is_block_device(),
            device,
        })
    }

    /// Whether the direct (`O_DIRECT`) descriptor is open.
    pub fn uses_direct_io(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes `len` bytes of `buf` (starting at 0, repeating from 0 when
    /// `len` exceeds the buffer) at `file_off`, in chunks.
    fn fill(&self, file_off: u64, len: u64, chunk: &DmaBuf, chunk_len: usize) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(chunk_len as u64) as usize;
            self.write_at(chunk, 0, n, file_off + done, false)?;
            done += n as u64;
        }
        Ok(())
    }

    fn write_at(&self, buf: &DmaBuf, off: usize, len: usize, file_off: u64, fua: bool) -> io::Result<()> {
        if let Some(f) = self.direct.as_ref().filter(|_| self.aio.has_direct()) {
            // FUA: the O_DSYNC descriptor, or a data sync after the write.
            let f = if fua {
                self.direct_sync.as_ref().unwrap_or(f)
            } else {
                f
            };
            match direct_io::write(f.as_fd(), buf, off, len, file_off)? {
                Direct::Moved(_) if fua && self.direct_sync.is_none() => return f.sync_data(),
                Direct::Moved(_) => return Ok(()),
                Direct::Refused => self.aio.refuse_direct(),
            }
        }
        match (fua, &self.buffered_sync) {
            (true, Some(f)) => buf.write_to_fd(f.as_fd(), off, len, file_off),
            (true, None) => {
                buf.write_to_fd(self.buffered.as_fd(), off, len, file_off)?;
                self.buffered.sync_data()
            }
            (false, _) => buf.write_to_fd(self.buffered.as_fd(), off, len, file_off),
        }
    }
}

impl Backstore for FileBackstore {
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
        let size = if self.is_device {
            let actual = (&self.buffered).seek(SeekFrom::End(0))?;
            if let Some(asked) = bytes.filter(|&b| b != actual) {
                return Err(ResizeError::DeviceSize { actual, asked });
            }
            actual
        } else {
            let Some(size) = bytes else {
                return Err(ResizeError::Refused("a regular file needs the new size"));
            };
            self.cap.check_resize(size)?;
            self.buffered.set_len(size)?;
            size
        };
        self.cap.set_size(size)
    }
    fn read(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize) -> io::Result<()> {
        let file_off = self.cap.offset(lba)?;
        let mut got = None;
        if let Some(f) = self.direct.as_ref().filter(|_| self.aio.has_direct()) {
            match direct_io::read(f.as_fd(), buf, off, len, file_off)? {
                Direct::Moved(n) => got = Some(n),
                Direct::Refused => self.aio.refuse_direct(),
            }
        }
        let n = match got {
            Some(n) => n,
            None => buf.read_from_fd(self.buffered.as_fd(), off, len, file_off)?,
        };
        if n < len {
            // Past the end of the file (it shrank, or a partial last block):
            // the missing bytes read as zeros.
            buf.fill(off + n, len - n, 0);
        }
        Ok(())
    }
    fn write(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize, fua: bool) -> io::Result<()> {
        self.cap.check_writable()?;
        self.write_at(buf, off, len, self.cap.offset(lba)?, fua)
    }
    fn flush(&self) -> io::Result<()> {
        if self.cap.opened_read_only() {
            return Ok(());
        }
        self.buffered.sync_data()
    }
    fn unmap(&self, lba: u64, blocks: u64) -> io::Result<()> {
        // Deallocate with fallocate(PUNCH_HOLE); where the filesystem or
        // device cannot, write zeros instead (reads return zeros either way,
        // as LBPRZ promises; only the space is not freed).
        self.cap.check_writable()?;
        let (start, len) = self.cap.range(lba, blocks)?;
        // A block device that cannot zero with unmap discards (and reports
        // LBPRZ = 0), one that cannot discard is not thin (`blockdev.rs`).
        match self.device.map(|d| d.discard()) {
            Some(Discard::Discard) => return crate::os::blk_discard(self.buffered.as_fd(), start, len),
            Some(Discard::None) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the device cannot deallocate",
                ))
            }
            Some(Discard::ZeroOut) | None => {}
        }
        match crate::os::punch_hole(self.buffered.as_fd(), start, len) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                let chunk = DmaBuf::new(FILL_CHUNK.min(len as usize).max(1))?;
                self.fill(start, len, &chunk, chunk.len())
            }
            Err(e) => Err(e),
        }
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
        let (start, len) = self.cap.range(lba, blocks)?;
        let chunk_len = (FILL_CHUNK as u64).min(len) as usize;
        let chunk = DmaBuf::new(chunk_len.max(1))?;
        if pattern.iter().any(|&b| b != 0) {
            for i in 0..chunk_len / bs {
                chunk.write(i * bs, pattern);
            }
        }
        self.fill(start, len, &chunk, chunk_len)
    }
    fn dma_buf(&self) -> Option<&Arc<DmaBuf>> {
        None
    }
    fn is_blocking(&self) -> bool {
        true
    }
    fn thin_provisioned(&self) -> bool {
        // UNMAP punches holes in a file; a block device must be able to
        // discard (see `unmap`).
        self.device.map_or(true, |d| d.discard() != Discard::None)
    }
    fn write_cache(&self) -> bool {
        // The page cache or the device's cache: SYNCHRONIZE CACHE and FUA
        // are needed for durability.
        true
    }
    fn identity(&self) -> Option<String> {
        Some(self.path.to_string_lossy().into_owned())
    }
    fn async_files(&self) -> Option<&AsyncFiles> {
        Some(&self.aio)
    }
    fn limits(&self) -> Limits {
        self.device
            .map_or_else(|| Limits::for_file(self.cap.block_size()), |d| d.limits())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary file of `size` bytes, removed on drop.
    pub(crate) struct TempFile(pub PathBuf);
    impl TempFile {
        pub(crate) fn new(tag: &str, size: u64) -> TempFile {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "srptd-scsi-{}-{}-{}",
                std::process::id(),
                tag,
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let f = File::create(&p).unwrap();
            f.set_len(size).unwrap();
            TempFile(p)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn parse_specs() {
        let c = BackstoreConfig::parse("ram:64M,bs=4096,ro", "x").unwrap();
        assert_eq!(
            c,
            BackstoreConfig {
                kind: BackstoreKind::Ram { size: 64 << 20 },
                block_size: 4096,
                read_only: true
            }
        );
        let c = BackstoreConfig::parse("file:/tmp/a,b,ro", "x").unwrap();
        assert_eq!(
            c.kind,
            BackstoreKind::File {
                path: "/tmp/a,b".into(),
                cache: FileCache::Direct,
            }
        );
        assert!(c.read_only);
        let c = BackstoreConfig::parse("file:/tmp/a,buffered,bs=4096", "x").unwrap();
        assert_eq!(
            c.kind,
            BackstoreKind::File {
                path: "/tmp/a".into(),
                cache: FileCache::Buffered,
            }
        );
        assert_eq!(
            (c.block_size, c.kind.to_string()),
            (4096, "file:/tmp/a,buffered".into())
        );
        // Only files are buffered: a RAM size or an RBD image name ends there.
        assert!(BackstoreConfig::parse("ram:1M,buffered", "x").is_err());
        assert!(BackstoreConfig::parse("ram:12Q", "x").is_err());
        assert!(BackstoreConfig::parse("nvme:1", "x").is_err());
        assert!(BackstoreConfig::parse("file:", "x").is_err());
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = BackstoreConfig::parse("ram:0", "luns[0].backstore")
            .unwrap()
            .open("luns[0].backstore")
            .unwrap_err();
        assert!(matches!(e, ConfigError::ZeroSize { .. }));
        assert!(e.to_string().starts_with("luns[0].backstore.size"), "{e}");
        let e = BackstoreConfig::parse("ram:1000", "b")
            .unwrap()
            .open("b")
            .unwrap_err();
        assert!(matches!(e, ConfigError::SizeNotMultiple { .. }), "{e}");
        let e = BackstoreConfig::parse("ram:1M,bs=1024", "b")
            .unwrap()
            .open("b")
            .unwrap_err();
        assert!(matches!(e, ConfigError::BadBlockSize { .. }), "{e}");
        assert!(e.to_string().contains("b.block_size"));
        let e = BackstoreConfig::parse("file:/nonexistent/srptd", "b")
            .unwrap()
            .open("b")
            .unwrap_err();
        assert!(matches!(e, ConfigError::FileMissing { .. }), "{e}");
        let t = TempFile::new("small", 100);
        let e = FileBackstore::open(&t.0, 512, false, FileCache::Direct, "b.path").unwrap_err();
        assert!(matches!(e, ConfigError::FileTooSmall { .. }), "{e}");
        let e = FileBackstore::open(Path::new("/tmp"), 512, false, FileCache::Direct, "b.path").unwrap_err();
        assert!(matches!(e, ConfigError::NotFileOrDevice { .. }), "{e}");
    }

    fn exercise(b: &dyn Backstore) {
        let bs = b.block_size() as usize;
        let buf = DmaBuf::new(8 * bs).unwrap();
        for i in 0..4 * bs {
            buf.write(i, &[(i % 251) as u8]);
        }
        b.write(2, &buf, 0, 4 * bs, false).unwrap();
        b.write(6, &buf, 0, bs, true).unwrap();
        let out = DmaBuf::new(8 * bs).unwrap();
        b.read(2, &out, bs, 4 * bs).unwrap();
        buf.with_bytes(0, 4 * bs, |a| out.with_bytes(bs, 4 * bs, |o| assert_eq!(a, o)));
        b.flush().unwrap();
        b.write_same(0, 2, &vec![0xab; bs]).unwrap();
        b.read(0, &out, 0, 3 * bs).unwrap();
        out.with_bytes(0, 2 * bs, |o| assert!(o.iter().all(|&x| x == 0xab)));
        out.with_bytes(2 * bs, bs, |o| assert_eq!(o[1], 1));
        b.unmap(1, 2).unwrap();
        b.read(0, &out, 0, 4 * bs).unwrap();
        out.with_bytes(bs, 2 * bs, |o| assert!(o.iter().all(|&x| x == 0)));
        out.with_bytes(0, bs, |o| assert!(o.iter().all(|&x| x == 0xab)));
        out.with_bytes(3 * bs, bs, |o| assert_eq!(o[5], ((bs + 5) % 251) as u8));
    }

    #[test]
    fn ram_and_file_round_trip() {
        for bs in BLOCK_SIZES {
            let r = RamBackstore::new(64 * 4096, bs, false).unwrap();
            exercise(&r);
            let t = TempFile::new("rt", 64 * 4096);
            for cache in [FileCache::Direct, FileCache::Buffered] {
                let f = FileBackstore::open(&t.0, bs, false, cache, "p").unwrap();
                assert_eq!(f.num_blocks(), 64 * 4096 / u64::from(bs));
                if cache == FileCache::Buffered {
                    assert!(!f.uses_direct_io());
                }
                exercise(&f);
            }
        }
    }

    #[test]
    fn file_short_read_zero_fills_and_ro() {
        let t = TempFile::new("short", 4096 + 100);
        let f = FileBackstore::open(&t.0, 4096, false, FileCache::Direct, "p").unwrap();
        assert_eq!(f.num_blocks(), 1);
        let buf = DmaBuf::new(8192).unwrap();
        buf.fill(0, 8192, 0xee);
        // Read one block past a truncation: zero filled.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&t.0)
            .unwrap()
            .set_len(1000)
            .unwrap();
        f.read(0, &buf, 0, 4096).unwrap();
        buf.with_bytes(0, 4096, |o| assert!(o.iter().all(|&x| x == 0)));
        let ro = FileBackstore::open(&t.0, 512, true, FileCache::Direct, "p").unwrap();
        assert!(ro.read_only());
        assert!(ro.write(0, &buf, 0, 512, false).is_err());
        assert!(ro.flush().is_ok());
    }
}
