//! What the channel keeps of an SRP_CMD IU: LUN, CDB, data direction and
//! where the data descriptors are. Parsed inside the receive-ring borrow,
//! so only plain values leave it.

use crate::scsi::DataDir;
use crate::wire::{self, DataDesc, DirectDesc};

/// Longest CDB kept: 16 bytes plus 16 of additional CDB (SRP r16a 6.8
/// allows up to [`wire::Cmd::MAX_ADD_CDB_LEN`]; no supported command is
/// longer). Longer CDBs are answered INVALID FIELD IN CDB.
pub const MAX_CDB: usize = 32;

/// Size of one descriptor in a table (SRP r16a 5.5.2.1).
pub(super) const DESC_LEN: u32 = DirectDesc::LEN as u32;

/// A CDB of at most [`MAX_CDB`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cdb {
    bytes: [u8; MAX_CDB],
    len: u8,
}

impl Cdb {
    /// An empty CDB (commands answered before their CDB is looked at).
    pub(super) const EMPTY: Cdb = Cdb {
        bytes: [0; MAX_CDB],
        len: 0,
    };

    /// Copies `cdb`; `None` when it is longer than [`MAX_CDB`].
    pub(super) fn new(cdb: &[u8]) -> Option<Cdb> {
        let mut bytes = [0; MAX_CDB];
        bytes.get_mut(..cdb.len())?.copy_from_slice(cdb);
        Some(Cdb {
            bytes,
            len: cdb.len() as u8,
        })
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Where a command's data descriptors are, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DataDescriptors {
    /// No data buffer, or an external table not fetched yet.
    None,
    /// One direct data buffer descriptor (SRP r16a 5.5.2.1).
    Direct(DirectDesc),
    /// `count` descriptors at byte `offset` of the receive ring: an
    /// indirect table complete inside the IU.
    InIu { offset: u32, count: u32 },
    /// `count` descriptors of an external table fetched into the table
    /// pool (held until the command ends).
    Fetched {
        table: crate::proto::pool::Extent,
        count: u32,
    },
    /// Immediate data: `len` bytes at byte `offset` of the receive ring.
    Immediate { offset: u32, len: u32 },
}

impl DataDescriptors {
    /// Whether the data sits in the IU (no RDMA transfer, no data buffer).
    pub(super) fn is_immediate(&self) -> bool {
        matches!(self, DataDescriptors::Immediate { .. })
    }
}

/// An indirect table that is not all in the IU: it is fetched with an
/// RDMA READ of `table.len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExternalTable {
    /// Where the whole table is in initiator memory.
    pub(super) table: DirectDesc,
    /// Descriptors it holds, per the indirect header.
    pub(super) count: u32,
}

/// The parts of an SRP_CMD the channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CmdIu {
    pub(super) lun: [u8; 8],
    pub(super) cdb: Cdb,
    /// The direction the descriptors point (`None`: no descriptors).
    pub(super) descriptor_dir: DataDir,
    pub(super) descriptors: DataDescriptors,
    /// Set instead of `descriptors` when the table must be fetched.
    pub(super) external: Option<ExternalTable>,
    /// Sum of the descriptor lengths known from the IU (0 before an
    /// external table is fetched).
    pub(super) descriptor_len: u64,
    /// TOTAL LENGTH of an indirect header, checked against the table.
    pub(super) indirect_len: Option<u32>,
    /// TASK ATTRIBUTE (SRP r16a 6.8, SAM-5 8.6), bits 2:0.
    pub(super) task_attr: u8,
}

/// Why an SRP_CMD is refused.
#[derive(Debug)]
pub(super) enum CmdError {
    #[allow(dead_code, reason = "read through Debug in the log line")]
    Wire(wire::WireError),
    CdbTooLong,
    Bidirectional,
    ImmediateNotNegotiated,
    ImmediateOutOfBounds,
}

/// The task tag of a request IU (bytes 8..16, SRP r16a 6.1), if it is long
/// enough to have one.
pub(super) fn tag(b: &[u8]) -> Option<wire::Tag> {
    let t = b.get(8..16)?;
    Some(wire::Tag(u64::from_be_bytes(t.try_into().ok()?)))
}

/// Parses the SRP_CMD in `b`, which sits at byte `base` of the receive
/// ring. `imm_data_offset` is the negotiated immediate data offset.
pub(super) fn parse_cmd(b: &[u8], base: u32, imm_data_offset: Option<u16>) -> Result<CmdIu, CmdError> {
    let cmd = wire::Cmd::parse(b).map_err(CmdError::Wire)?;
    let cdb = Cdb::new(cmd.cdb).ok_or(CmdError::CdbTooLong)?;
    let (descriptor_dir, d) = match (&cmd.data_out, &cmd.data_in) {
        (DataDesc::None, DataDesc::None) => (DataDir::None, &cmd.data_in),
        (d, DataDesc::None) => (DataDir::Out, d),
        (DataDesc::None, d) => (DataDir::In, d),
        // Bidirectional commands are not supported (SBC has none the Linux
        // initiator sends to a disk).
        _ => return Err(CmdError::Bidirectional),
    };
    let mut iu = CmdIu {
        lun: cmd.lun,
        cdb,
        descriptor_dir,
        descriptors: DataDescriptors::None,
        external: None,
        descriptor_len: 0,
        indirect_len: None,
        task_attr: cmd.task_attr & wire::Cmd::TASK_ATTR_MASK,
    };
    match d {
        DataDesc::None => {}
        DataDesc::Direct(dd) => {
            iu.descriptors = DataDescriptors::Direct(*dd);
            iu.descriptor_len = dd.len as u64;
        }
        DataDesc::Indirect(ind) => {
            let count = ind.total_count() as u32;
            iu.indirect_len = Some(ind.total_len);
            if ind.is_complete_in_iu() {
                // Where the header fields put the table (SRP r16a 6.8), not
                // where the received bytes end: bytes may follow it.
                let first = cmd.in_iu_table_offset(descriptor_dir == DataDir::In);
                iu.descriptors = DataDescriptors::InIu {
                    offset: base + first as u32,
                    count,
                };
                iu.descriptor_len = (0..ind.in_iu_count())
                    .filter_map(|i| ind.in_iu(i))
                    .map(|d| d.len as u64)
                    .sum();
            } else {
                iu.external = Some(ExternalTable {
                    table: ind.table,
                    count,
                });
            }
        }
        DataDesc::Immediate(im) => {
            // Immediate data (SRP-2 as used by Linux): only when negotiated,
            // after the descriptor, inside the IU.
            let io = imm_data_offset.ok_or(CmdError::ImmediateNotNegotiated)? as usize;
            if im.desc_end > io || io + im.len as usize > b.len() {
                return Err(CmdError::ImmediateOutOfBounds);
            }
            iu.descriptors = DataDescriptors::Immediate {
                offset: base + io as u32,
                len: im.len,
            };
            iu.descriptor_len = im.len as u64;
        }
    }
    Ok(iu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Cmd, IndirectDesc, Tag};

    fn emit(c: Cmd<'_>) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        let n = c.emit(&mut b).unwrap();
        b.truncate(n);
        b
    }

    #[test]
    fn cdb_longer_than_kept_is_refused() {
        assert_eq!(Cdb::new(&[1; MAX_CDB]).unwrap().as_bytes(), &[1; MAX_CDB]);
        assert!(Cdb::new(&[1; MAX_CDB + 1]).is_none());
        let long = [0u8; MAX_CDB + 4];
        let b = emit(Cmd::new(Tag(1), [0; 8], &long));
        assert!(matches!(parse_cmd(&b, 0, None), Err(CmdError::CdbTooLong)));
        assert_eq!(tag(&b), Some(Tag(1)));
        assert_eq!(tag(&b[..15]), None);
    }

    #[test]
    fn descriptors_by_kind() {
        let d = DirectDesc {
            va: 0x1000,
            rkey: 7,
            len: 4096,
        };
        let b = emit(Cmd::new(Tag(2), [0; 8], &[0x28; 10]).with_data_in(DataDesc::Direct(d)));
        let iu = parse_cmd(&b, 64, None).unwrap();
        assert_eq!(iu.descriptor_dir, DataDir::In);
        assert_eq!(iu.descriptors, DataDescriptors::Direct(d));
        assert_eq!(
            (iu.descriptor_len, iu.external, iu.indirect_len),
            (4096, None, None)
        );

        // A table that is not in the IU is external: nothing known yet.
        let ext = DataDesc::Indirect(IndirectDesc {
            table: DirectDesc {
                va: 0x2000,
                rkey: 7,
                len: 32,
            },
            total_len: 8192,
            partial: &[],
        });
        let b = emit(Cmd::new(Tag(3), [0; 8], &[0x2a; 10]).with_data_out(ext));
        let iu = parse_cmd(&b, 0, None).unwrap();
        assert_eq!(iu.descriptor_dir, DataDir::Out);
        assert_eq!(iu.descriptors, DataDescriptors::None);
        assert_eq!(iu.external.map(|e| e.count), Some(2));
        assert_eq!((iu.descriptor_len, iu.indirect_len), (0, Some(8192)));
    }
}
