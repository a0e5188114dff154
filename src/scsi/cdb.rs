//! CDB decoding: operation codes, the table of supported commands with
//! their CDB usage maps (SPC-4 6.35.3, also used to reject reserved bits),
//! and typed commands.

use super::reservations::{PrInCdb, PrOutCdb};
use super::sense::Sense;

/// Operation codes (SPC-4 Annex E / SBC-3 table 12).
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    /// EXTENDED COPY (SPC-4 6.4: THIRD-PARTY COPY OUT, service action 00h
    /// EXTENDED COPY(LID1); SPC-3 6.3).
    pub const EXTENDED_COPY: u8 = 0x83;
    /// RECEIVE COPY RESULTS (SPC-4 6.18: THIRD-PARTY COPY IN; SPC-3 6.17).
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    /// SERVICE ACTION IN(16) service action: READ CAPACITY(16).
    pub const SAI_READ_CAPACITY_16: u16 = 0x10;
    /// MAINTENANCE IN service action: REPORT TARGET PORT GROUPS.
    pub const MI_REPORT_TARGET_PORT_GROUPS: u16 = 0x0a;
    /// MAINTENANCE IN service action: REPORT SUPPORTED OPERATION CODES.
    pub const MI_REPORT_SUPPORTED_OPCODES: u16 = 0x0c;
    /// THIRD-PARTY COPY OUT service action: EXTENDED COPY(LID1).
    pub const XCOPY_LID1: u16 = 0x00;
    /// RECEIVE COPY RESULTS service action: COPY STATUS(LID1).
    pub const RCR_COPY_STATUS: u16 = 0x00;
    /// RECEIVE COPY RESULTS service action: OPERATING PARAMETERS.
    pub const RCR_OPERATING_PARAMETERS: u16 = 0x03;
}

/// One supported command: operation code, service action, CDB usage map.
#[derive(Debug)]
pub struct CmdInfo {
    pub opcode: u8,
    /// Service action (in byte 1, bits 4:0) for commands that have one.
    pub sa: Option<u16>,
    /// CDB USAGE DATA (SPC-4 6.35.3): byte 0 is the opcode, the service
    /// action sits in its field, every other bit is set when the device
    /// server uses it. A bit set in a CDB but clear here is a reserved or
    /// unsupported field and the command is rejected with INVALID FIELD IN
    /// CDB (SPC-4 4.3.2: reserved bits shall be checked... and SAM-5 5.11.2
    /// for NACA in the CONTROL byte, since ACA is not supported).
    pub usage: &'static [u8],
    /// Only for LUNs with logical block provisioning (SBC-3 4.7.3).
    pub thin_only: bool,
}

impl CmdInfo {
    /// The CDB length.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

const fn c(opcode: u8, usage: &'static [u8]) -> CmdInfo {
    CmdInfo {
        opcode,
        sa: None,
        usage,
        thin_only: false,
    }
}

const fn pr_in(sa: u16, usage: &'static [u8]) -> CmdInfo {
    CmdInfo {
        opcode: op::PERSISTENT_RESERVE_IN,
        sa: Some(sa),
        usage,
        thin_only: false,
    }
}

const fn pr_out(sa: u16, usage: &'static [u8]) -> CmdInfo {
    CmdInfo {
        opcode: op::PERSISTENT_RESERVE_OUT,
        sa: Some(sa),
        usage,
        thin_only: false,
    }
}

/// Bits of the CONTROL byte (last byte) that are not checked: the vendor
/// specific bits 7:6 (SAM-5 5.2, table 11).
const CONTROL_IGNORED: u8 = 0xc0;

/// Every command the device server implements, in opcode order.
pub static COMMANDS: &[CmdInfo] = &[
    c(op::TEST_UNIT_READY, &[0x00, 0, 0, 0, 0, 0]),
    // DESC (bit 0) is examined and rejected when set.
    c(op::REQUEST_SENSE, &[0x03, 0x01, 0, 0, 0xff, 0]),
    c(op::READ_6, &[0x08, 0x1f, 0xff, 0xff, 0xff, 0]),
    c(op::WRITE_6, &[0x0a, 0x1f, 0xff, 0xff, 0xff, 0]),
    // CMDDT (bit 1) is obsolete (SPC-4 6.6.1) and therefore rejected.
    c(op::INQUIRY, &[0x12, 0x01, 0xff, 0xff, 0xff, 0]),
    c(op::MODE_SELECT_6, &[0x15, 0x11, 0, 0, 0xff, 0]),
    // SPC-2 7.21 / 7.11: the obsolete 3RDPTY and extent fields are not
    // supported (every bit but the opcode and CONTROL must be zero).
    c(op::RESERVE_6, &[0x16, 0, 0, 0, 0, 0]),
    c(op::RELEASE_6, &[0x17, 0, 0, 0, 0, 0]),
    c(op::MODE_SENSE_6, &[0x1a, 0x08, 0xff, 0xff, 0xff, 0]),
    c(op::START_STOP_UNIT, &[0x1b, 0x01, 0, 0x0f, 0xf7, 0]),
    // LBA and PMI are obsolete in SBC-3 5.23 and ignored.
    c(
        op::READ_CAPACITY_10,
        &[0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0],
    ),
    // RDPROTECT/WRPROTECT (bits 7:5) must be zero without protection
    // information (SBC-3 5.16 table 48); DPO, FUA, FUA_NV accepted.
    c(
        op::READ_10,
        &[0x28, 0x1a, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    c(
        op::WRITE_10,
        &[0x2a, 0x1a, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    // WRITE AND VERIFY: WRPROTECT must be zero; DPO and BYTCHK (bits 2:1)
    // used (SBC-3 5.43-5.45).
    c(
        op::WRITE_AND_VERIFY_10,
        &[0x2e, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    c(
        op::VERIFY_10,
        &[0x2f, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    c(
        op::SYNCHRONIZE_CACHE_10,
        &[0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    // ANCHOR (bit 4) rejected: ANC_SUP = 0 (SBC-3 5.44); PBDATA/LBDATA
    // (bits 2:1) not supported.
    c(
        op::WRITE_SAME_10,
        &[0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0],
    ),
    CmdInfo {
        opcode: op::UNMAP,
        sa: None,
        usage: &[0x42, 0x00, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0],
        thin_only: true,
    },
    c(op::MODE_SELECT_10, &[0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
    // SPC-2 7.22 / 7.12: 3RDPTY, LONGID and the parameter list are not
    // supported.
    c(op::RESERVE_10, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    c(op::RELEASE_10, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    c(
        op::MODE_SENSE_10,
        &[0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
    ),
    // SPC-4 6.15.1, table 204: READ KEYS, READ RESERVATION, REPORT
    // CAPABILITIES, READ FULL STATUS.
    pr_in(0x00, &[0x5e, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
    pr_in(0x01, &[0x5e, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
    pr_in(0x02, &[0x5e, 0x02, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
    pr_in(0x03, &[0x5e, 0x03, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
    // SPC-4 6.16.1, table 213: every service action but REPLACE LOST
    // RESERVATION; SCOPE and TYPE in byte 2, PARAMETER LIST LENGTH 5-8.
    pr_out(0x00, &[0x5f, 0x00, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x01, &[0x5f, 0x01, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x02, &[0x5f, 0x02, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x03, &[0x5f, 0x03, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x04, &[0x5f, 0x04, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x05, &[0x5f, 0x05, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x06, &[0x5f, 0x06, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    pr_out(0x07, &[0x5f, 0x07, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]),
    // SPC-4 6.4.1 (table 129): EXTENDED COPY(LID1), PARAMETER LIST LENGTH
    // in bytes 10-13.
    CmdInfo {
        opcode: op::EXTENDED_COPY,
        sa: Some(op::XCOPY_LID1),
        usage: &[0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
        thin_only: false,
    },
    // SPC-4 6.18.2 / 6.18.4: COPY STATUS(LID1) names a LIST IDENTIFIER
    // (byte 2); OPERATING PARAMETERS none. ALLOCATION LENGTH in bytes 10-13.
    CmdInfo {
        opcode: op::RECEIVE_COPY_RESULTS,
        sa: Some(op::RCR_COPY_STATUS),
        usage: &[
            0x84, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
        thin_only: false,
    },
    CmdInfo {
        opcode: op::RECEIVE_COPY_RESULTS,
        sa: Some(op::RCR_OPERATING_PARAMETERS),
        usage: &[0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
        thin_only: false,
    },
    c(
        op::READ_16,
        &[
            0x88, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    // SBC-3 5.2 table 13: WRPROTECT must be zero (no protection
    // information); DPO, FUA, FUA_NV accepted; NUMBER OF LOGICAL BLOCKS in
    // byte 13, GROUP NUMBER in byte 14.
    c(
        op::COMPARE_AND_WRITE,
        &[
            0x89, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0,
        ],
    ),
    c(
        op::WRITE_16,
        &[
            0x8a, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    c(
        op::WRITE_AND_VERIFY_16,
        &[
            0x8e, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    c(
        op::VERIFY_16,
        &[
            0x8f, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    c(
        op::SYNCHRONIZE_CACHE_16,
        &[
            0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    // UNMAP (bit 3) and NDOB (bit 0); ANCHOR, PBDATA, LBDATA rejected.
    c(
        op::WRITE_SAME_16,
        &[
            0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    CmdInfo {
        opcode: op::SERVICE_ACTION_IN_16,
        sa: Some(op::SAI_READ_CAPACITY_16),
        // LBA and PMI obsolete (SBC-3 5.24), ignored.
        usage: &[
            0x9e, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0,
        ],
        thin_only: false,
    },
    c(
        op::REPORT_LUNS,
        &[0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
    ),
    // SPC-4 6.37: PARAMETER DATA FORMAT 000b or 001b (bit 5); the
    // reserved formats are rejected as reserved bits.
    CmdInfo {
        opcode: op::MAINTENANCE_IN,
        sa: Some(op::MI_REPORT_TARGET_PORT_GROUPS),
        usage: &[0xa3, 0x2a, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
        thin_only: false,
    },
    CmdInfo {
        opcode: op::MAINTENANCE_IN,
        sa: Some(op::MI_REPORT_SUPPORTED_OPCODES),
        usage: &[0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
        thin_only: false,
    },
    c(
        op::READ_12,
        &[
            0xa8, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    c(
        op::WRITE_12,
        &[
            0xaa, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
    c(
        op::WRITE_AND_VERIFY_12,
        &[
            0xae, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0,
        ],
    ),
];

/// Whether `opcode` has a service action field (byte 1, bits 4:0).
pub fn has_service_action(opcode: u8) -> bool {
    matches!(
        opcode,
        op::SERVICE_ACTION_IN_16
            | op::MAINTENANCE_IN
            | op::PERSISTENT_RESERVE_IN
            | op::PERSISTENT_RESERVE_OUT
            | op::EXTENDED_COPY
            | op::RECEIVE_COPY_RESULTS
    )
}

/// The table entry for `opcode` (and `sa` when it has service actions).
pub fn lookup(opcode: u8, sa: u16) -> Option<&'static CmdInfo> {
    COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && (c.sa.is_none() || c.sa == Some(sa)))
}

/// Looks up the CDB's command and checks its length and reserved bits.
pub fn check(cdb: &[u8]) -> Result<&'static CmdInfo, Sense> {
    let &opcode = cdb.first().ok_or_else(Sense::invalid_opcode)?;
    let sa = if has_service_action(opcode) {
        u16::from(*cdb.get(1).unwrap_or(&0) & 0x1f)
    } else {
        0
    };
    let info = match lookup(opcode, sa) {
        Some(i) => i,
        // An unsupported service action is an invalid field (SPC-4 4.3.4.2
        // points at the SERVICE ACTION field), an unknown opcode 20h/00h.
        None if has_service_action(opcode) => return Err(Sense::invalid_field_in_cdb_at(1, Some(4))),
        None => return Err(Sense::invalid_opcode()),
    };
    let n = info.cdb_len();
    if cdb.len() < n {
        // The CDB is cut short: its last fields are missing.
        return Err(Sense::invalid_field_in_cdb_at(cdb.len() as u16, None));
    }
    for (i, (&byte, &usage)) in cdb[..n].iter().zip(info.usage).enumerate().skip(1) {
        let allowed = if i == n - 1 {
            usage | CONTROL_IGNORED
        } else {
            usage
        };
        let bad = byte & !allowed;
        if bad != 0 {
            let bit = 7 - bad.leading_zeros() as u8;
            return Err(Sense::invalid_field_in_cdb_at(i as u16, Some(bit)));
        }
    }
    Ok(info)
}

pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
pub(crate) fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A decoded, field-checked command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc: u32,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: u32,
    },
    ModeSense {
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc: u32,
    },
    ModeSelect {
        ten: bool,
        pf: bool,
        sp: bool,
        len: u32,
    },
    StartStopUnit,
    ReadCapacity10,
    ReadCapacity16 {
        alloc: u32,
    },
    Read {
        lba: u64,
        blocks: u32,
        fua: bool,
    },
    Write {
        lba: u64,
        blocks: u32,
        fua: bool,
    },
    Verify {
        lba: u64,
        blocks: u32,
        bytchk: u8,
    },
    /// WRITE AND VERIFY (10/12/16): the write reaches the medium, then is
    /// verified (BYTCHK 0) or compared with the data sent (BYTCHK 1).
    WriteAndVerify {
        lba: u64,
        blocks: u32,
        bytchk: u8,
    },
    /// COMPARE AND WRITE (SBC-3 5.2): data-out is `blocks` blocks of
    /// verify data, then `blocks` blocks of write data.
    CompareAndWrite {
        lba: u64,
        blocks: u32,
        fua: bool,
    },
    SyncCache {
        lba: u64,
        blocks: u32,
    },
    WriteSame {
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
    },
    Unmap {
        len: u32,
    },
    ReportLuns {
        select: u8,
        alloc: u32,
    },
    ReportOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        alloc: u32,
    },
    /// REPORT TARGET PORT GROUPS (SPC-4 6.37).
    ReportTargetPortGroups {
        /// PARAMETER DATA FORMAT 001b: the extended header.
        extended: bool,
        alloc: u32,
    },
    PersistentReserveIn(PrInCdb),
    PersistentReserveOut(PrOutCdb),
    /// RESERVE(6) or RESERVE(10).
    Reserve,
    /// RELEASE(6) or RELEASE(10).
    Release,
    /// EXTENDED COPY(LID1) (SPC-4 6.4): `len` bytes of parameter list.
    ExtendedCopy {
        len: u32,
    },
    /// RECEIVE COPY RESULTS (SPC-4 6.18): COPY STATUS(LID1) of `list_id`
    /// (service action 00h) or OPERATING PARAMETERS (03h).
    ReceiveCopyResults {
        sa: u8,
        list_id: u8,
        alloc: u32,
    },
}

impl Cmd {
    /// Decodes a CDB (which may be longer than the command's CDB, as the
    /// 16-byte CDB field of an SRP_CMD is). Checks reserved bits; leaves
    /// checks that need the LUN's geometry to the device server.
    pub fn parse(cdb: &[u8]) -> Result<Cmd, Sense> {
        let info = check(cdb)?;
        let b = cdb;
        Ok(match (info.opcode, info.sa) {
            (op::TEST_UNIT_READY, _) => Cmd::TestUnitReady,
            (op::REQUEST_SENSE, _) => Cmd::RequestSense {
                desc: b[1] & 1 != 0,
                alloc: u32::from(b[4]),
            },
            (op::INQUIRY, _) => Cmd::Inquiry {
                evpd: b[1] & 1 != 0,
                page: b[2],
                alloc: u32::from(be16(&b[3..])),
            },
            (op::MODE_SENSE_6, _) => Cmd::ModeSense {
                ten: false,
                dbd: b[1] & 0x08 != 0,
                llbaa: false,
                pc: b[2] >> 6,
                page: b[2] & 0x3f,
                subpage: b[3],
                alloc: u32::from(b[4]),
            },
            (op::MODE_SENSE_10, _) => Cmd::ModeSense {
                ten: true,
                dbd: b[1] & 0x08 != 0,
                llbaa: b[1] & 0x10 != 0,
                pc: b[2] >> 6,
                page: b[2] & 0x3f,
                subpage: b[3],
                alloc: u32::from(be16(&b[7..])),
            },
            (op::MODE_SELECT_6, _) => Cmd::ModeSelect {
                ten: false,
                pf: b[1] & 0x10 != 0,
                sp: b[1] & 1 != 0,
                len: u32::from(b[4]),
            },
            (op::MODE_SELECT_10, _) => Cmd::ModeSelect {
                ten: true,
                pf: b[1] & 0x10 != 0,
                sp: b[1] & 1 != 0,
                len: u32::from(be16(&b[7..])),
            },
            (op::START_STOP_UNIT, _) => Cmd::StartStopUnit,
            (op::READ_CAPACITY_10, _) => Cmd::ReadCapacity10,
            (op::SERVICE_ACTION_IN_16, _) => Cmd::ReadCapacity16 {
                alloc: be32(&b[10..]),
            },
            // READ(6)/WRITE(6): 21-bit LBA; a TRANSFER LENGTH of 0 means 256
            // blocks (SBC-3 5.15 / 5.39).
            (op::READ_6 | op::WRITE_6, _) => {
                let lba = u64::from(be32(&b[0..]) & 0x1f_ffff);
                let blocks = if b[4] == 0 { 256 } else { u32::from(b[4]) };
                if info.opcode == op::READ_6 {
                    Cmd::Read {
                        lba,
                        blocks,
                        fua: false,
                    }
                } else {
                    Cmd::Write {
                        lba,
                        blocks,
                        fua: false,
                    }
                }
            }
            (op::READ_10 | op::WRITE_10 | op::READ_12 | op::WRITE_12 | op::READ_16 | op::WRITE_16, _) => {
                let (lba, blocks) = lba_len(info.opcode, b);
                let fua = b[1] & 0x08 != 0;
                if matches!(info.opcode, op::READ_10 | op::READ_12 | op::READ_16) {
                    Cmd::Read { lba, blocks, fua }
                } else {
                    Cmd::Write { lba, blocks, fua }
                }
            }
            (op::VERIFY_10 | op::VERIFY_16, _) => {
                let (lba, blocks) = lba_len(info.opcode, b);
                Cmd::Verify {
                    lba,
                    blocks,
                    bytchk: (b[1] >> 1) & 3,
                }
            }
            (op::WRITE_AND_VERIFY_10 | op::WRITE_AND_VERIFY_12 | op::WRITE_AND_VERIFY_16, _) => {
                let (lba, blocks) = lba_len(info.opcode, b);
                Cmd::WriteAndVerify {
                    lba,
                    blocks,
                    bytchk: (b[1] >> 1) & 3,
                }
            }
            (op::COMPARE_AND_WRITE, _) => Cmd::CompareAndWrite {
                lba: be64(&b[2..]),
                blocks: u32::from(b[13]),
                fua: b[1] & 0x08 != 0,
            },
            (op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16, _) => {
                let (lba, blocks) = lba_len(info.opcode, b);
                Cmd::SyncCache { lba, blocks }
            }
            (op::WRITE_SAME_10 | op::WRITE_SAME_16, _) => {
                let (lba, blocks) = lba_len(info.opcode, b);
                Cmd::WriteSame {
                    lba,
                    blocks,
                    unmap: b[1] & 0x08 != 0,
                    ndob: b[1] & 0x01 != 0,
                }
            }
            (op::UNMAP, _) => Cmd::Unmap {
                len: u32::from(be16(&b[7..])),
            },
            (op::REPORT_LUNS, _) => Cmd::ReportLuns {
                select: b[2],
                alloc: be32(&b[6..]),
            },
            (op::MAINTENANCE_IN, Some(op::MI_REPORT_TARGET_PORT_GROUPS)) => Cmd::ReportTargetPortGroups {
                extended: b[1] & 0x20 != 0,
                alloc: be32(&b[6..]),
            },
            (op::MAINTENANCE_IN, _) => Cmd::ReportOpcodes {
                rctd: b[2] & 0x80 != 0,
                options: b[2] & 0x07,
                opcode: b[3],
                sa: be16(&b[4..]),
                alloc: be32(&b[6..]),
            },
            (op::PERSISTENT_RESERVE_IN, _) => Cmd::PersistentReserveIn(PrInCdb::parse(b)?),
            (op::PERSISTENT_RESERVE_OUT, _) => Cmd::PersistentReserveOut(PrOutCdb::parse(b)?),
            (op::EXTENDED_COPY, _) => Cmd::ExtendedCopy { len: be32(&b[10..]) },
            (op::RECEIVE_COPY_RESULTS, _) => Cmd::ReceiveCopyResults {
                sa: b[1] & 0x1f,
                list_id: b[2],
                alloc: be32(&b[10..]),
            },
            (op::RESERVE_6 | op::RESERVE_10, _) => Cmd::Reserve,
            (op::RELEASE_6 | op::RELEASE_10, _) => Cmd::Release,
            _ => return Err(Sense::invalid_opcode()),
        })
    }
}

/// LBA and length fields of the 10/12/16-byte block commands.
fn lba_len(opcode: u8, b: &[u8]) -> (u64, u32) {
    match opcode >> 5 {
        1 | 2 => (u64::from(be32(&b[2..])), u32::from(be16(&b[7..]))),
        5 => (u64::from(be32(&b[2..])), be32(&b[6..])),
        _ => (be64(&b[2..]), be32(&b[10..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::SenseKey;

    #[test]
    fn table_is_sorted_and_sized() {
        for w in COMMANDS.windows(2) {
            assert!((w[0].opcode, w[0].sa) < (w[1].opcode, w[1].sa));
        }
        for c in COMMANDS {
            let expect = match c.opcode >> 5 {
                0 => 6,
                1 | 2 => 10,
                4 => 16,
                5 => 12,
                _ => unreachable!(),
            };
            assert_eq!(c.cdb_len(), expect, "{:#x}", c.opcode);
            assert_eq!(c.usage[0], c.opcode);
        }
    }

    #[test]
    fn decodes_rw() {
        let cdb = [0x28, 0x08, 0, 0, 0x12, 0x34, 0, 0, 8, 0];
        assert_eq!(
            Cmd::parse(&cdb).unwrap(),
            Cmd::Read {
                lba: 0x1234,
                blocks: 8,
                fua: true
            }
        );
        let cdb = [0x0a, 0x01, 0x02, 0x03, 0, 0];
        assert_eq!(
            Cmd::parse(&cdb).unwrap(),
            Cmd::Write {
                lba: 0x10203,
                blocks: 256,
                fua: false
            }
        );
        let mut cdb = [0u8; 16];
        cdb[0] = 0x8a;
        cdb[9] = 7;
        cdb[13] = 1;
        assert_eq!(
            Cmd::parse(&cdb).unwrap(),
            Cmd::Write {
                lba: 7,
                blocks: 1,
                fua: false
            }
        );
    }

    #[test]
    fn rejects_reserved_bits_with_pointer() {
        // RDPROTECT = 1 on READ(10).
        let e = Cmd::parse(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!((e.key, e.asc, e.ascq), (SenseKey::IllegalRequest, 0x24, 0));
        let f = e.field.unwrap();
        assert!(f.in_cdb);
        assert_eq!((f.byte, f.bit), (1, Some(5)));
        // NACA in the control byte.
        let e = Cmd::parse(&[0x00, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(e.field.unwrap().byte, 5);
        // Vendor bits in the control byte are ignored.
        assert!(Cmd::parse(&[0x00, 0, 0, 0, 0, 0xc0]).is_ok());
        assert_eq!(Cmd::parse(&[0xff]).unwrap_err().asc, 0x20);
        assert_eq!(Cmd::parse(&[]).unwrap_err().asc, 0x20);
        assert_eq!(Cmd::parse(&[0x28, 0]).unwrap_err().asc, 0x24);
        // EXTENDED COPY(LID4) and RECEIVE DATA are not supported: the
        // SERVICE ACTION field is invalid.
        let mut x = [0u8; 16];
        x[0] = 0x83;
        x[13] = 0x40;
        assert_eq!(Cmd::parse(&x).unwrap(), Cmd::ExtendedCopy { len: 0x40 });
        x[1] = 0x01;
        let e = Cmd::parse(&x).unwrap_err();
        assert_eq!(
            (e.asc, e.field.unwrap().byte, e.field.unwrap().bit),
            (0x24, 1, Some(4))
        );
        x[0] = 0x84;
        assert_eq!(Cmd::parse(&x).unwrap_err().asc, 0x24);
        x[1] = 0x00;
        x[2] = 7;
        assert_eq!(
            Cmd::parse(&x).unwrap(),
            Cmd::ReceiveCopyResults {
                sa: 0,
                list_id: 7,
                alloc: 0x40
            }
        );
        // OPERATING PARAMETERS has no LIST IDENTIFIER: byte 2 is reserved.
        x[1] = 0x03;
        assert_eq!(Cmd::parse(&x).unwrap_err().field.unwrap().byte, 2);
        // Unknown service action of SERVICE ACTION IN(16).
        assert_eq!(
            Cmd::parse(&[0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .asc,
            0x24
        );
    }
}
