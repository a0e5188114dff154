//! What a backstore tells initiators about its geometry and provisioning
//! ([`Limits`]: READ CAPACITY(16), the Block Limits and Logical Block
//! Provisioning VPD pages), and where a block device's come from: the
//! kernel's queue limits in sysfs (`/sys/dev/block/MAJ:MIN/queue`), read
//! once when the LUN is opened.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Geometry and provisioning limits of a backstore, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Physical block (READ CAPACITY(16) LOGICAL BLOCKS PER PHYSICAL
    /// BLOCK EXPONENT).
    pub physical_block: u32,
    /// Transfers should be multiples of this (OPTIMAL TRANSFER LENGTH
    /// GRANULARITY).
    pub granularity: u32,
    /// Preferred largest transfer (OPTIMAL TRANSFER LENGTH); 0: none said.
    pub optimal_transfer: u32,
    /// Largest range one deallocation covers (MAXIMUM UNMAP LBA COUNT).
    pub max_unmap: u64,
    /// Deallocation works in units of this (OPTIMAL UNMAP GRANULARITY).
    pub unmap_granularity: u32,
    /// Deallocated blocks read back as zeros (LBPRZ).
    pub unmap_zeroes: bool,
}

impl Limits {
    /// What a file (or RAM) backstore reports: 4 KiB pages, any unmap
    /// size, zeros after unmap.
    pub fn for_file(block_size: u32) -> Limits {
        Limits {
            physical_block: block_size,
            granularity: 4096,
            optimal_transfer: 0,
            max_unmap: u64::MAX,
            unmap_granularity: 4096,
            unmap_zeroes: true,
        }
    }
}

/// How UNMAP deallocates on a block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// Not at all: the LUN is fully provisioned (LBPME = 0).
    None,
    /// `fallocate(PUNCH_HOLE)`: the kernel's write-zeroes with unmap
    /// allowed, so the range reads as zeros (BLKZEROOUT semantics,
    /// LBPRZ = 1).
    ZeroOut,
    /// `BLKDISCARD`: deallocated, contents afterwards unspecified
    /// (LBPRZ = 0).
    Discard,
}

/// A block device's queue limits as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub logical_block: u32,
    pub physical_block: u32,
    pub io_min: u32,
    pub io_opt: u32,
    pub max_discard: u64,
    pub discard_granularity: u32,
    pub max_write_zeroes: u64,
    /// The device (or partition) is read-only (`blockdev --setro`, a
    /// write-protected medium).
    pub read_only: bool,
}

impl DeviceInfo {
    /// Reads the limits of the block device `path` from sysfs.
    pub fn probe(path: &Path) -> io::Result<DeviceInfo> {
        let rdev = std::fs::metadata(path)?.rdev();
        let dir = PathBuf::from(format!(
            "/sys/dev/block/{}:{}",
            libc::major(rdev),
            libc::minor(rdev)
        ));
        // A partition's queue is its disk's.
        let queue = if dir.join("queue").is_dir() {
            dir.join("queue")
        } else {
            dir.join("../queue")
        };
        let num = |name: &str| -> io::Result<u64> {
            let p = queue.join(name);
            let s = std::fs::read_to_string(&p)?;
            s.trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {s:?}", p.display())))
        };
        let opt = |name: &str| num(name).unwrap_or(0);
        let logical_block = num("logical_block_size")? as u32;
        Ok(DeviceInfo {
            logical_block,
            physical_block: (opt("physical_block_size") as u32).max(logical_block),
            io_min: opt("minimum_io_size") as u32,
            io_opt: opt("optimal_io_size") as u32,
            max_discard: opt("discard_max_bytes"),
            discard_granularity: opt("discard_granularity") as u32,
            max_write_zeroes: opt("write_zeroes_max_bytes"),
            read_only: std::fs::read_to_string(dir.join("ro")).is_ok_and(|s| s.trim() == "1"),
        })
    }

    /// How UNMAP deallocates: zeroing with unmap where the device can
    /// (write-zeroes and discard both supported), else discard, else not.
    pub fn discard(&self) -> Discard {
        match (self.max_discard > 0, self.max_write_zeroes > 0) {
            (true, true) => Discard::ZeroOut,
            (true, false) => Discard::Discard,
            (false, _) => Discard::None,
        }
    }

    /// What the LUN reports.
    pub fn limits(&self) -> Limits {
        let max_unmap = match self.discard() {
            Discard::ZeroOut => self.max_discard.min(self.max_write_zeroes),
            _ => self.max_discard,
        };
        Limits {
            physical_block: self.physical_block,
            granularity: self.io_min.max(self.physical_block),
            optimal_transfer: self.io_opt,
            max_unmap,
            unmap_granularity: self.discard_granularity.max(self.logical_block),
            unmap_zeroes: self.discard() != Discard::Discard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(max_discard: u64, max_write_zeroes: u64) -> DeviceInfo {
        DeviceInfo {
            logical_block: 512,
            physical_block: 4096,
            io_min: 4096,
            io_opt: 1 << 20,
            max_discard,
            discard_granularity: 4096,
            max_write_zeroes,
            read_only: false,
        }
    }

    #[test]
    fn provisioning_follows_what_the_device_can_do() {
        assert_eq!(info(0, 0).discard(), Discard::None);
        assert_eq!(info(0, 1 << 30).discard(), Discard::None);
        let d = info(1 << 30, 0);
        assert_eq!(d.discard(), Discard::Discard);
        assert!(!d.limits().unmap_zeroes, "a plain discard does not promise zeros");
        let z = info(1 << 30, 64 << 20);
        assert_eq!(z.discard(), Discard::ZeroOut);
        let l = z.limits();
        assert!(l.unmap_zeroes);
        assert_eq!(l.max_unmap, 64 << 20);
        assert_eq!(
            (l.physical_block, l.granularity, l.optimal_transfer),
            (4096, 4096, 1 << 20)
        );
    }

    #[test]
    fn probes_a_block_device_if_there_is_one() {
        // /dev/loop0 or another block device may not exist here.
        let Some(dev) = ["/dev/loop0", "/dev/sda", "/dev/vda", "/dev/nvme0n1"]
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok())
        else {
            return;
        };
        if let Ok(i) = DeviceInfo::probe(Path::new(dev)) {
            assert!(i.logical_block >= 512, "{dev}: {i:?}");
            assert!(i.physical_block >= i.logical_block);
        }
    }
}
