//! Sense data (SPC-4 4.5) in fixed format, and the constructors the target
//! core and the transport use.
//!
//! Only fixed format (response code 70h, SPC-4 4.5.3) is produced: the
//! control mode page reports D_SENSE = 0 and REQUEST SENSE with DESC = 1 is
//! rejected, so descriptor format is never required.

use std::fmt;

/// Sense keys (SPC-4 4.5.6, table 27).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    RecoveredError = 0x1,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    BlankCheck = 0x8,
    VendorSpecific = 0x9,
    CopyAborted = 0xa,
    AbortedCommand = 0xb,
    VolumeOverflow = 0xd,
    Miscompare = 0xe,
}

impl SenseKey {
    /// The 4-bit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a 4-bit sense key (0xC and 0xF are reserved/completed).
    pub fn from_code(code: u8) -> Option<SenseKey> {
        use SenseKey::*;
        Some(match code {
            0x0 => NoSense,
            0x1 => RecoveredError,
            0x2 => NotReady,
            0x3 => MediumError,
            0x4 => HardwareError,
            0x5 => IllegalRequest,
            0x6 => UnitAttention,
            0x7 => DataProtect,
            0x8 => BlankCheck,
            0x9 => VendorSpecific,
            0xa => CopyAborted,
            0xb => AbortedCommand,
            0xd => VolumeOverflow,
            0xe => Miscompare,
            _ => return None,
        })
    }
}

/// Field pointer sense-key specific information for ILLEGAL REQUEST
/// (SPC-4 4.5.2.4.2, table 31), or the segment pointer of COPY ABORTED
/// (SPC-4 4.5.2.4.5, table 34).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPointer {
    /// C/D: true when the error is in the CDB, false for the parameter list.
    pub in_cdb: bool,
    /// SD (COPY ABORTED only): `byte` counts from the start of the segment
    /// descriptor whose number is in COMMAND-SPECIFIC INFORMATION, not from
    /// the start of the parameter list.
    pub segment: bool,
    /// Byte of the CDB or parameter list in error.
    pub byte: u16,
    /// Bit (0..=7) in that byte, when known (BPV = 1).
    pub bit: Option<u8>,
}

/// Sense data for one CHECK CONDITION (or for REQUEST SENSE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// INFORMATION field (SPC-4 4.5.2.2): the failing LBA or, for a
    /// miscompare, the offset of the first differing byte.
    pub info: Option<u64>,
    /// Sense-key specific field pointer (SKSV = 1), for ILLEGAL REQUEST
    /// (or segment pointer, for COPY ABORTED).
    pub field: Option<FieldPointer>,
    /// COMMAND-SPECIFIC INFORMATION (fixed format bytes 8-11): for
    /// EXTENDED COPY, the number of the segment descriptor being processed
    /// (SPC-4 6.4.4; in its low two bytes).
    pub csi: u32,
}

impl Sense {
    /// Length of fixed-format sense data produced by [`emit_fixed`](Self::emit_fixed).
    pub const FIXED_LEN: usize = 18;

    /// Sense data with the given key and additional sense code.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
            field: None,
            csi: 0,
        }
    }

    /// Adds an INFORMATION value.
    pub const fn with_info(mut self, info: u64) -> Sense {
        self.info = Some(info);
        self
    }

    /// Adds a field pointer into the CDB (`in_cdb`) or parameter list.
    pub const fn with_field(mut self, in_cdb: bool, byte: u16, bit: Option<u8>) -> Sense {
        self.field = Some(FieldPointer {
            in_cdb,
            segment: false,
            byte,
            bit,
        });
        self
    }

    /// COPY ABORTED while processing segment descriptor `segment` (SPC-4
    /// 6.4.4): its number in COMMAND-SPECIFIC INFORMATION and, if
    /// `byte` is given, a segment pointer at that byte of the descriptor.
    pub const fn in_segment(mut self, segment: u16, byte: Option<u16>) -> Sense {
        self.csi = segment as u32;
        if let Some(byte) = byte {
            self.field = Some(FieldPointer {
                in_cdb: false,
                segment: true,
                byte,
                bit: None,
            });
        }
        self
    }

    /// Writes fixed-format sense data (SPC-4 4.5.3, table 39) into `out`,
    /// truncated to `out.len()`, and returns the number of bytes written
    /// (at most [`FIXED_LEN`](Self::FIXED_LEN)).
    pub fn emit_fixed(&self, out: &mut [u8]) -> usize {
        let mut b = [0u8; Self::FIXED_LEN];
        // VALID = 1 only when the INFORMATION value fits the 4-byte field
        // (SPC-4 4.5.3: otherwise VALID is zero).
        let info32 = self.info.and_then(|i| u32::try_from(i).ok());
        b[0] = 0x70 | if info32.is_some() { 0x80 } else { 0 };
        b[2] = self.key.code();
        if let Some(i) = info32 {
            b[3..7].copy_from_slice(&i.to_be_bytes());
        }
        b[7] = (Self::FIXED_LEN - 8) as u8; // ADDITIONAL SENSE LENGTH
        b[8..12].copy_from_slice(&self.csi.to_be_bytes());
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(f) = self.field {
            // SKSV | C/D | BPV | BIT POINTER, FIELD POINTER (SPC-4
            // 4.5.2.4.2); COPY ABORTED has SD where C/D is (4.5.2.4.5).
            let cd_sd = match self.key {
                SenseKey::CopyAborted if f.segment => 0x20,
                SenseKey::CopyAborted => 0,
                _ if f.in_cdb => 0x40,
                _ => 0,
            };
            b[15] = 0x80 | cd_sd | f.bit.map_or(0, |bit| 0x08 | (bit & 7));
            b[16..18].copy_from_slice(&f.byte.to_be_bytes());
        }
        let n = out.len().min(Self::FIXED_LEN);
        out[..n].copy_from_slice(&b[..n]);
        n
    }

    /// The fixed-format bytes as an array.
    pub fn to_fixed(&self) -> [u8; Self::FIXED_LEN] {
        let mut b = [0u8; Self::FIXED_LEN];
        self.emit_fixed(&mut b);
        b
    }

    /// Parses fixed-format sense data (response code 70h or 71h).
    pub fn parse_fixed(b: &[u8]) -> Option<Sense> {
        if b.len() < 14 || (b[0] & 0x7e) != 0x70 {
            return None;
        }
        let key = SenseKey::from_code(b[2] & 0x0f)?;
        let info = (b[0] & 0x80 != 0).then(|| u64::from(u32::from_be_bytes([b[3], b[4], b[5], b[6]])));
        let copy = key == SenseKey::CopyAborted;
        let field = (b.len() >= 18 && b[15] & 0x80 != 0).then(|| FieldPointer {
            in_cdb: !copy && b[15] & 0x40 != 0,
            segment: copy && b[15] & 0x20 != 0,
            byte: u16::from_be_bytes([b[16], b[17]]),
            bit: (b[15] & 0x08 != 0).then_some(b[15] & 7),
        });
        Some(Sense {
            key,
            asc: b[12],
            ascq: b[13],
            info,
            field,
            csi: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }

    // ---- constructors (ASC/ASCQ from SPC-4 Annex D, table D.1) ----

    /// NO SENSE, NO ADDITIONAL SENSE INFORMATION (00h/00h).
    pub const fn no_sense() -> Sense {
        Sense::new(SenseKey::NoSense, 0x00, 0x00)
    }
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20h/00h).
    pub const fn invalid_opcode() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x20, 0x00).with_field(true, 0, None)
    }
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h).
    pub const fn lba_out_of_range() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x21, 0x00)
    }
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h) without a field pointer.
    pub const fn invalid_field_in_cdb() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x24, 0x00)
    }
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h) pointing at `byte`/`bit`.
    pub const fn invalid_field_in_cdb_at(byte: u16, bit: Option<u8>) -> Sense {
        Sense::invalid_field_in_cdb().with_field(true, byte, bit)
    }
    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (25h/00h).
    pub const fn lun_not_supported() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x25, 0x00)
    }
    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26h/00h).
    pub const fn invalid_field_in_parameter_list() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x26, 0x00)
    }
    /// INVALID FIELD IN PARAMETER LIST pointing at `byte`/`bit` of the list.
    pub const fn invalid_field_in_parameter_list_at(byte: u16, bit: Option<u8>) -> Sense {
        Sense::invalid_field_in_parameter_list().with_field(false, byte, bit)
    }
    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (1Ah/00h).
    pub const fn parameter_list_length_error() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x1a, 0x00)
    }
    /// ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED (39h/00h).
    pub const fn saving_parameters_not_supported() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x39, 0x00)
    }
    /// DATA PROTECT, WRITE PROTECTED (27h/00h).
    pub const fn write_protected() -> Sense {
        Sense::new(SenseKey::DataProtect, 0x27, 0x00)
    }
    /// DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h): the
    /// backing file system is full (SBC-3 4.7.3.6).
    pub const fn space_allocation_failed() -> Sense {
        Sense::new(SenseKey::DataProtect, 0x27, 0x07)
    }
    /// UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h).
    pub const fn power_on_reset() -> Sense {
        Sense::new(SenseKey::UnitAttention, 0x29, 0x00)
    }
    /// UNIT ATTENTION, BUS DEVICE RESET FUNCTION OCCURRED (29h/03h), the
    /// code SAM-5 7.7 (LOGICAL UNIT RESET) requires after a LUN reset.
    pub const fn bus_device_reset() -> Sense {
        Sense::new(SenseKey::UnitAttention, 0x29, 0x03)
    }
    /// UNIT ATTENTION, REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh).
    pub const fn reported_luns_changed() -> Sense {
        Sense::new(SenseKey::UnitAttention, 0x3f, 0x0e)
    }
    /// UNIT ATTENTION, CAPACITY DATA HAS CHANGED (2Ah/09h).
    pub const fn capacity_changed() -> Sense {
        Sense::new(SenseKey::UnitAttention, 0x2a, 0x09)
    }
    /// UNIT ATTENTION, ASYMMETRIC ACCESS STATE CHANGED (2Ah/06h, SPC-4 5.16.2.2).
    pub const fn asymmetric_access_state_changed() -> Sense {
        Sense::new(SenseKey::UnitAttention, 0x2a, 0x06)
    }
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE
    /// TRANSITION (04h/0Ah, SPC-4 5.16.2.5).
    pub const fn access_state_transition() -> Sense {
        Sense::new(SenseKey::NotReady, 0x04, 0x0a)
    }
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY
    /// STATE (04h/0Bh, SPC-4 5.16.2.4.4).
    pub const fn port_in_standby() -> Sense {
        Sense::new(SenseKey::NotReady, 0x04, 0x0b)
    }
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE
    /// STATE (04h/0Ch, SPC-4 5.16.2.4.5).
    pub const fn port_unavailable() -> Sense {
        Sense::new(SenseKey::NotReady, 0x04, 0x0c)
    }
    /// NOT READY, LOGICAL UNIT COMMUNICATION FAILURE (08h/00h): the
    /// storage behind the LUN could not be reached.
    pub const fn communication_failure() -> Sense {
        Sense::new(SenseKey::NotReady, 0x08, 0x00)
    }
    /// NOT READY, LOGICAL UNIT COMMUNICATION TIME-OUT (08h/01h).
    pub const fn communication_timeout() -> Sense {
        Sense::new(SenseKey::NotReady, 0x08, 0x01)
    }
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (11h/00h).
    pub const fn medium_error_read() -> Sense {
        Sense::new(SenseKey::MediumError, 0x11, 0x00)
    }
    /// MEDIUM ERROR, WRITE ERROR (0Ch/00h).
    pub const fn medium_error_write() -> Sense {
        Sense::new(SenseKey::MediumError, 0x0c, 0x00)
    }
    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1Dh/00h) with the
    /// offset of the first differing byte (SBC-3 5.33).
    pub const fn miscompare(offset: u64) -> Sense {
        Sense::new(SenseKey::Miscompare, 0x1d, 0x00).with_info(offset)
    }
    /// ILLEGAL REQUEST (as LIO), INVALID FIELD IN COMMAND INFORMATION UNIT (0Eh/03h),
    /// used by the transport when the SRP data descriptors and the CDB
    /// disagree (SAM-5 5.8; SRP r16a 6.9).
    pub const fn invalid_field_in_command_iu() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x0e, 0x03)
    }
    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (44h/00h).
    pub const fn internal_target_failure() -> Sense {
        Sense::new(SenseKey::HardwareError, 0x44, 0x00)
    }
    /// ABORTED COMMAND, NO ADDITIONAL SENSE INFORMATION: e.g. the worker
    /// pool was shut down.
    pub const fn aborted_command() -> Sense {
        Sense::new(SenseKey::AbortedCommand, 0x00, 0x00)
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:02x}h/{:02x}h", self.key, self.asc, self.ascq)?;
        if let Some(i) = self.info {
            write!(f, " info={i:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layout() {
        let s = Sense::invalid_field_in_cdb_at(2, Some(5));
        let b = s.to_fixed();
        assert_eq!(b[0], 0x70);
        assert_eq!(b[2], 0x05);
        assert_eq!(b[7], 10);
        assert_eq!((b[12], b[13]), (0x24, 0x00));
        assert_eq!(b[15], 0x80 | 0x40 | 0x08 | 5);
        assert_eq!(&b[16..18], &[0, 2]);
        assert_eq!(Sense::parse_fixed(&b), Some(s));
    }

    #[test]
    fn info_valid_bit() {
        let b = Sense::miscompare(0x1234).to_fixed();
        assert_eq!(b[0], 0xf0);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!(b[2], 0x0e);
        let b = Sense::medium_error_read().with_info(1 << 40).to_fixed();
        assert_eq!(b[0], 0x70, "64-bit info does not fit: VALID = 0");
    }

    #[test]
    fn segment_pointer_and_csi() {
        let s = Sense::new(SenseKey::CopyAborted, 0x21, 0).in_segment(3, Some(12));
        let b = s.to_fixed();
        assert_eq!(b[2], 0x0a);
        assert_eq!(&b[8..12], &[0, 0, 0, 3]);
        assert_eq!(b[15], 0x80 | 0x20, "SKSV, SD");
        assert_eq!(&b[16..18], &[0, 12]);
        assert_eq!(Sense::parse_fixed(&b), Some(s));
        // A parameter list pointer of COPY ABORTED: SD = 0, no C/D.
        let s = Sense::new(SenseKey::CopyAborted, 0x0d, 2).with_field(false, 16, None);
        assert_eq!(s.to_fixed()[15], 0x80);
        assert_eq!(Sense::parse_fixed(&s.to_fixed()), Some(s));
    }

    #[test]
    fn truncates() {
        let mut out = [0u8; 8];
        assert_eq!(Sense::power_on_reset().emit_fixed(&mut out), 8);
        assert_eq!(out[2], 6);
    }
}
