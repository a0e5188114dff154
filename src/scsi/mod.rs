//! SCSI target core: direct-access block device emulation (SBC-3 / SPC-4),
//! sense data, LUN tables with per-initiator access lists and unit
//! attentions, backstores (RAM, file, block device), and a worker pool for
//! blocking backstore I/O.
//!
//! The transport drives each command in two steps:
//! 1. [`Nexus::plan_command`](lun::Nexus::plan_command) decodes the CDB
//!    into a [`ScsiCommand`] and says how many bytes move in which
//!    direction (and, for RAM LUNs, where they live so RDMA can move them
//!    with no copy);
//! 2. after fetching data-out, [`Nexus::run`](lun::Nexus::run) executes
//!    that decoded command (on the [`pool`] when
//!    [`Nexus::runs_blocking`](lun::Nexus::runs_blocking)), then the
//!    transport sends data-in and the response. The CDB is decoded once.
//!
//! [`Nexus::execute`](lun::Nexus::execute) decodes and runs a CDB in one
//! call (for callers that did not plan it).

pub mod alua;
pub mod aptpl;
pub mod backstore;
pub mod blockdev;
mod capacity;
pub mod caw;
pub mod cdb;
mod direct_io;
pub mod disk;
mod drain;
pub mod file_aio;
pub mod live;
pub mod lun;
pub mod pool;
pub mod rbd_store;
pub mod reservations;
pub mod sense;
mod table;
pub mod task_set;
pub mod xcopy;

use std::sync::Arc;

use crate::mem::DmaBuf;

pub use alua::{AccessState, AluaError, PortGroupConfig, StateChange, TargetPort};
pub use backstore::{
    Backstore, BackstoreConfig, BackstoreKind, ConfigError, FileBackstore, FileCache, RamBackstore,
    ResizeError,
};
pub use live::{Applied, ChangeError};
pub use lun::{
    Access, AsyncEngine, InitiatorPortId, LunConfig, LunInfo, Nexus, RbdEngine, ScsiCommand, Started, Target,
    TargetConfig, MAX_LUN,
};
pub use pool::WorkerPool;
pub use sense::{Sense, SenseKey};

/// SCSI status codes (SAM-5 5.3.1, table 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScsiStatus(pub u8);

impl ScsiStatus {
    pub const GOOD: ScsiStatus = ScsiStatus(0x00);
    pub const CHECK_CONDITION: ScsiStatus = ScsiStatus(0x02);
    pub const CONDITION_MET: ScsiStatus = ScsiStatus(0x04);
    pub const BUSY: ScsiStatus = ScsiStatus(0x08);
    pub const RESERVATION_CONFLICT: ScsiStatus = ScsiStatus(0x18);
    pub const TASK_SET_FULL: ScsiStatus = ScsiStatus(0x28);
    pub const ACA_ACTIVE: ScsiStatus = ScsiStatus(0x30);
    pub const TASK_ABORTED: ScsiStatus = ScsiStatus(0x40);
}

/// Direction of a command's data transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// No data moves.
    None,
    /// Data-out: initiator to target.
    Out,
    /// Data-in: target to initiator.
    In,
}

/// What the transport must do before executing: how many bytes move,
/// which way. `dir` is [`DataDir::None`] exactly when `len` is 0.
#[derive(Clone, Debug)]
pub struct Plan {
    pub dir: DataDir,
    /// Bytes per the CDB: transfer length x block size, parameter list
    /// length, or allocation length. For data-in this is an upper bound: the
    /// command may return less ([`Completion::data_in_len`]).
    pub len: u32,
    /// Set for READ/WRITE on a RAM LUN (see [`DirectIo`]).
    pub direct: Option<DirectIo>,
}

impl Plan {
    /// A plan moving no data.
    pub const fn none() -> Plan {
        Plan {
            dir: DataDir::None,
            len: 0,
            direct: None,
        }
    }

    /// A plan moving `len` bytes in `dir` (normalised to no transfer when 0).
    pub fn new(dir: DataDir, len: u32) -> Plan {
        Plan {
            dir: if len == 0 { DataDir::None } else { dir },
            len,
            direct: None,
        }
    }
}

/// For READ/WRITE on a backstore whose storage is one [`DmaBuf`] (RAM): the
/// byte range of that buffer the command reads or writes, so the RDMA layer
/// can move data with zero copies.
///
/// When the transport uses it, it passes that same buffer and `offset` to
/// `execute`, which then recognises the range and copies nothing. (Passing
/// any other buffer also works: `execute` then copies, as for a file LUN.)
#[derive(Clone, Debug)]
pub struct DirectIo {
    pub buf: Arc<DmaBuf>,
    pub offset: u64,
    pub len: u32,
}

/// The outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub status: ScsiStatus,
    /// Sense data for CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Bytes placed in the data-in buffer (for a residual count).
    pub data_in_len: u32,
}

impl Completion {
    /// GOOD status with `data_in_len` bytes of data-in.
    pub const fn good(data_in_len: u32) -> Completion {
        Completion {
            status: ScsiStatus::GOOD,
            sense: None,
            data_in_len,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub const fn check(sense: Sense) -> Completion {
        Completion {
            status: ScsiStatus::CHECK_CONDITION,
            sense: Some(sense),
            data_in_len: 0,
        }
    }

    /// Whether the status is GOOD.
    pub fn is_good(&self) -> bool {
        self.status == ScsiStatus::GOOD
    }
}

/// Runs `f` on the `list_len`-byte parameter list at `data[off..]`, of
/// which the command's data-out descriptors carried `len` bytes: fewer
/// than the CDB's PARAMETER LIST LENGTH is INVALID FIELD IN COMMAND IU
/// (the descriptors and the CDB disagree).
pub(crate) fn with_parameter_list<R>(
    data: &DmaBuf,
    off: usize,
    len: u32,
    list_len: u32,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, Sense> {
    if len < list_len {
        return Err(Sense::invalid_field_in_command_iu());
    }
    if !data.contains(off as u64, u64::from(list_len)) {
        return Err(Sense::internal_target_failure());
    }
    Ok(data.with_bytes(off, list_len as usize, f))
}

impl From<Result<u32, Sense>> for Completion {
    fn from(r: Result<u32, Sense>) -> Completion {
        match r {
            Ok(n) => Completion::good(n),
            Err(s) => Completion::check(s),
        }
    }
}

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod lun_table_tests;
#[cfg(test)]
mod mapped_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod caw_tests;

#[cfg(test)]
mod alua_tests;
