//! Management datagrams (MADs): the common MAD header and the InfiniBand
//! Device Management (DevMgt, class 0x06) attributes an SRP target answers:
//! ClassPortInfo, IOUnitInfo, IOControllerProfile and ServiceEntries.
//!
//! Sources, by field:
//! - Common MAD header, methods, common status bits: IBTA vol. 1 13.4.2 /
//!   13.4.7, as transcribed in `include/rdma/ib_mad.h` and rdma-core's
//!   `umad_types.h` (`struct umad_hdr`).
//! - ClassPortInfo: IBTA 13.4.8.1, rdma-core `struct umad_class_port_info`.
//! - DevMgt MAD format (24-byte header, 40 reserved bytes, 192 data bytes),
//!   IOUnitInfo, IOControllerProfile, ServiceEntries: IBTA 16.3.1 and
//!   16.3.3.3-16.3.3.5, as in the kernel's
//!   `drivers/infiniband/ulp/srpt/ib_dm_mad.h` and srptools'
//!   `srp_daemon.h`; SRP's values for them: SRP r16a annex B.7.
//!
//! All multi-byte fields are big-endian. Parsers are total (never panic) and
//! ignore reserved bits; emitters write reserved bits as zero.

use super::{
    check_len, check_out_len, get, get_be16, get_be24, get_be32, get_be64, get_u8, set, set_be16, set_be24,
    set_be32, set_be64, set_u8, Field, WireError,
};

/// Size of every MAD that does not use RMPP (IBTA 13.4.1).
pub const MAD_LEN: usize = 256;

// ---------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------

/// Management class (MgmtClass byte, ib_mad.h `IB_MGMT_CLASS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MgmtClass(pub u8);

impl MgmtClass {
    pub const SUBN_LID_ROUTED: MgmtClass = MgmtClass(0x01);
    pub const SUBN_ADM: MgmtClass = MgmtClass(0x03);
    pub const PERF_MGMT: MgmtClass = MgmtClass(0x04);
    pub const BM: MgmtClass = MgmtClass(0x05);
    /// Device Management (`IB_MGMT_CLASS_DEVICE_MGMT`).
    pub const DEVICE_MGMT: MgmtClass = MgmtClass(0x06);
    pub const CM: MgmtClass = MgmtClass(0x07);
    pub const SNMP: MgmtClass = MgmtClass(0x08);
}

/// Method byte (ib_mad.h `IB_MGMT_METHOD_*`). Bit 7 is the response bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u8);

impl Method {
    pub const GET: Method = Method(0x01);
    pub const SET: Method = Method(0x02);
    pub const SEND: Method = Method(0x03);
    pub const TRAP: Method = Method(0x05);
    pub const REPORT: Method = Method(0x06);
    pub const TRAP_REPRESS: Method = Method(0x07);
    pub const GET_RESP: Method = Method(0x81);
    pub const REPORT_RESP: Method = Method(0x86);
    /// `IB_MGMT_METHOD_RESP`.
    pub const RESP_BIT: u8 = 0x80;

    /// Whether the response bit (R) is set.
    pub fn is_response(self) -> bool {
        self.0 & Self::RESP_BIT != 0
    }

    /// The method a responder answers this request with: GetResp for Get
    /// and Set (IBTA 13.4.5: "the response to a Set() is GetResp()"), the
    /// request method with the R bit set otherwise.
    pub fn response(self) -> Method {
        match self {
            Self::GET | Self::SET => Self::GET_RESP,
            Method(m) => Method(m | Self::RESP_BIT),
        }
    }
}

/// MAD status field (IBTA 13.4.7 table 106 common bits; DevMgt class bits
/// 8-14 per 16.3.1.1). Values from ib_mad.h `IB_MGMT_MAD_STATUS_*` and
/// ib_dm_mad.h `DM_MAD_STATUS_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MadStatus(pub u16);

impl MadStatus {
    pub const SUCCESS: MadStatus = MadStatus(0x0000);
    pub const BUSY: MadStatus = MadStatus(0x0001);
    pub const REDIRECT_REQUIRED: MadStatus = MadStatus(0x0002);
    /// Bad base or class version (invalid-field code 1).
    pub const BAD_VERSION: MadStatus = MadStatus(0x0004);
    /// Method not supported (code 2; `DM_MAD_STATUS_UNSUP_METHOD`).
    pub const UNSUPPORTED_METHOD: MadStatus = MadStatus(0x0008);
    /// Method/attribute combination not supported (code 3;
    /// `DM_MAD_STATUS_UNSUP_METHOD_ATTR`).
    pub const UNSUPPORTED_METHOD_ATTR: MadStatus = MadStatus(0x000c);
    /// Invalid value in one or more fields of the attribute or the
    /// attribute modifier (code 7; `DM_MAD_STATUS_INVALID_FIELD`).
    pub const INVALID_FIELD: MadStatus = MadStatus(0x001c);
    /// DevMgt class-specific: no I/O controller in the addressed slot
    /// (`DM_MAD_STATUS_NO_IOC`).
    pub const NO_IOC: MadStatus = MadStatus(0x0100);

    /// Mask of the 3-bit invalid-field code (bits 2-4).
    pub const INVALID_FIELD_MASK: u16 = 0x001c;
    /// Mask of the class-specific bits (8-15).
    pub const CLASS_MASK: u16 = 0xff00;

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// A short description of a known status, `None` otherwise.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "success",
            Self::BUSY => "busy",
            Self::REDIRECT_REQUIRED => "redirect required",
            Self::BAD_VERSION => "bad version",
            Self::UNSUPPORTED_METHOD => "unsupported method",
            Self::UNSUPPORTED_METHOD_ATTR => "unsupported method/attribute",
            Self::INVALID_FIELD => "invalid attribute or modifier field",
            Self::NO_IOC => "no I/O controller in slot",
            _ => return None,
        })
    }
}

impl std::fmt::Display for MadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{:#06x} ({n})", self.0),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

/// Attribute ID (IBTA 13.4.8 common attributes, 16.3.3 table 279 DevMgt
/// attributes; ib_dm_mad.h `DM_ATTR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributeId(pub u16);

impl AttributeId {
    pub const CLASS_PORT_INFO: AttributeId = AttributeId(0x0001);
    pub const NOTICE: AttributeId = AttributeId(0x0002);
    pub const INFORM_INFO: AttributeId = AttributeId(0x0003);
    pub const IO_UNIT_INFO: AttributeId = AttributeId(0x0010);
    pub const IO_CONTROLLER_PROFILE: AttributeId = AttributeId(0x0011);
    pub const SERVICE_ENTRIES: AttributeId = AttributeId(0x0012);
    pub const DIAGNOSTIC_TIMEOUT: AttributeId = AttributeId(0x0020);
    pub const PREPARE_TO_TEST: AttributeId = AttributeId(0x0021);
    pub const TEST_DEVICE_ONCE: AttributeId = AttributeId(0x0022);
    pub const TEST_DEVICE_LOOP: AttributeId = AttributeId(0x0023);
    pub const DIAG_CODE: AttributeId = AttributeId(0x0024);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::CLASS_PORT_INFO => "ClassPortInfo",
            Self::NOTICE => "Notice",
            Self::INFORM_INFO => "InformInfo",
            Self::IO_UNIT_INFO => "IOUnitInfo",
            Self::IO_CONTROLLER_PROFILE => "IOControllerProfile",
            Self::SERVICE_ENTRIES => "ServiceEntries",
            Self::DIAGNOSTIC_TIMEOUT => "DiagnosticTimeout",
            Self::PREPARE_TO_TEST => "PrepareToTest",
            Self::TEST_DEVICE_ONCE => "TestDeviceOnce",
            Self::TEST_DEVICE_LOOP => "TestDeviceLoop",
            Self::DIAG_CODE => "DiagCode",
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Common MAD header
// ---------------------------------------------------------------------------

layout! {
    /// The common MAD header (IBTA vol 1 13.4.2; ib_mad.h
    /// `struct ib_mad_hdr`).
    mod mad_header, LEN = 24;
    BASE_VERSION: 0..1,
    MGMT_CLASS: 1..2,
    CLASS_VERSION: 2..3,
    /// R bit (7) and method (6:0).
    METHOD: 3..4,
    STATUS: 4..6,
    CLASS_SPECIFIC: 6..8,
    TRANSACTION_ID: 8..16,
    ATTRIBUTE_ID: 16..18,
    RESERVED_18: 18..20,
    ATTRIBUTE_MODIFIER: 20..24,
}

/// The 24-byte common MAD header (IBTA 13.4.2; `struct ib_mad_hdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadHeader {
    /// 1 for IBTA MADs (`IB_MGMT_BASE_VERSION`).
    pub base_version: u8,
    pub mgmt_class: MgmtClass,
    pub class_version: u8,
    pub method: Method,
    pub status: MadStatus,
    /// ClassSpecific (unused by DevMgt; 0).
    pub class_specific: u16,
    /// TransactionID. Note that the kernel's umad layer replaces the high
    /// 32 bits of a request's TID with the sending agent's `hi_tid`, so a
    /// requester can only rely on the low 32 bits.
    pub tid: u64,
    pub attr_id: AttributeId,
    pub attr_mod: u32,
}

impl MadHeader {
    pub const LEN: usize = mad_header::LEN;
    /// `IB_MGMT_BASE_VERSION`.
    pub const BASE_VERSION: u8 = 1;

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        Ok(Self::decode(check_len(buf, "MAD header")?))
    }

    fn decode(b: &[u8; mad_header::LEN]) -> Self {
        use mad_header as f;
        Self {
            base_version: get_u8(b, f::BASE_VERSION),
            mgmt_class: MgmtClass(get_u8(b, f::MGMT_CLASS)),
            class_version: get_u8(b, f::CLASS_VERSION),
            method: Method(get_u8(b, f::METHOD)),
            status: MadStatus(get_be16(b, f::STATUS)),
            class_specific: get_be16(b, f::CLASS_SPECIFIC),
            tid: get_be64(b, f::TRANSACTION_ID),
            attr_id: AttributeId(get_be16(b, f::ATTRIBUTE_ID)),
            attr_mod: get_be32(b, f::ATTRIBUTE_MODIFIER),
        }
    }

    fn encode(&self) -> [u8; mad_header::LEN] {
        use mad_header as f;
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::BASE_VERSION, self.base_version);
        set_u8(&mut b, f::MGMT_CLASS, self.mgmt_class.0);
        set_u8(&mut b, f::CLASS_VERSION, self.class_version);
        set_u8(&mut b, f::METHOD, self.method.0);
        set_be16(&mut b, f::STATUS, self.status.0);
        set_be16(&mut b, f::CLASS_SPECIFIC, self.class_specific);
        set_be64(&mut b, f::TRANSACTION_ID, self.tid);
        set_be16(&mut b, f::ATTRIBUTE_ID, self.attr_id.0);
        set_be32(&mut b, f::ATTRIBUTE_MODIFIER, self.attr_mod);
        b
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        *check_out_len(buf)? = self.encode();
        Ok(Self::LEN)
    }
}

// ---------------------------------------------------------------------------
// Device Management MAD
// ---------------------------------------------------------------------------

layout! {
    /// A Device Management MAD (IBTA vol 1 16.3.1; ib_dm_mad.h
    /// `struct ib_dm_mad`).
    mod dm_mad, LEN = 256;
    /// The common MAD header ([`mad_header`]).
    HEADER: 0..24,
    /// Where the RMPP header would be; DevMgt uses no RMPP.
    RESERVED_24: 24..64,
    /// One attribute, zero-padded.
    DATA: 64..256,
}

/// A Device Management MAD (IBTA 16.3.1): common header, 40 reserved bytes
/// (where the RMPP header would be; DevMgt uses no RMPP), 192 data bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmMad {
    pub header: MadHeader,
    /// The DevMgt Data field: one attribute, zero-padded.
    pub data: [u8; DmMad::DATA_LEN],
}

impl DmMad {
    pub const LEN: usize = MAD_LEN;
    /// Offset of the data field (`IB_MGMT_DEVICE_HDR`).
    pub const DATA_OFFSET: usize = dm_mad::DATA.start;
    /// `IB_MGMT_DEVICE_DATA`.
    pub const DATA_LEN: usize = dm_mad::LEN - dm_mad::DATA.start;
    /// DevMgt class version (`IB_MGMT_BASE_VERSION`, as ib_srpt registers).
    pub const CLASS_VERSION: u8 = 1;

    /// A DevMgt request: base version 1, class 0x06 version 1, zero data.
    pub fn request(method: Method, tid: u64, attr_id: AttributeId, attr_mod: u32) -> Self {
        Self {
            header: MadHeader {
                base_version: MadHeader::BASE_VERSION,
                mgmt_class: MgmtClass::DEVICE_MGMT,
                class_version: Self::CLASS_VERSION,
                method,
                status: MadStatus::SUCCESS,
                class_specific: 0,
                tid,
                attr_id,
                attr_mod,
            },
            data: [0; Self::DATA_LEN],
        }
    }

    /// Parse a 256-byte MAD (bytes past 256 are ignored). The class is not
    /// checked here.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        use dm_mad as f;
        let b = check_len::<{ f::LEN }>(buf, "DevMgt MAD")?;
        Ok(Self {
            header: MadHeader::decode(&get(b, f::HEADER)),
            data: get(b, f::DATA),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use dm_mad as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set(b, f::HEADER, &self.header.encode());
        set(b, f::DATA, &self.data);
        Ok(f::LEN)
    }

    /// The emitted MAD as an array.
    pub fn to_bytes(&self) -> [u8; MAD_LEN] {
        let mut out = [0u8; MAD_LEN];
        // Cannot fail: the array is exactly LEN bytes.
        let _ = self.emit(&mut out);
        out
    }
}

// ---------------------------------------------------------------------------
// ClassPortInfo
// ---------------------------------------------------------------------------

layout! {
    /// ClassPortInfo (IBTA vol 1 13.4.8.1; rdma-core
    /// `struct umad_class_port_info`).
    mod class_port_info, LEN = 72;
    BASE_VERSION: 0..1,
    CLASS_VERSION: 1..2,
    CAPABILITY_MASK: 2..4,
    /// CapabilityMask2 (bits 31:5) and RespTimeValue (bits 4:0).
    CAP_MASK2_RESP_TIME: 4..8,
    /// The redirect address ([`class_port_address`]); its HopLimit byte
    /// is reserved.
    REDIRECT: 8..40,
    /// The trap address ([`class_port_address`]).
    TRAP: 40..72,
}

layout! {
    /// The redirect or trap address of a ClassPortInfo (IBTA vol 1
    /// 13.4.8.1: Redirect*/Trap* fields).
    mod class_port_address, LEN = 32;
    GID: 0..16,
    /// TrafficClass (bits 31:24), SL (23:20), FlowLabel (19:0).
    TC_SL_FL: 16..20,
    LID: 20..22,
    P_KEY: 22..24,
    /// HopLimit (bits 31:24; reserved for the redirect address), QP
    /// (23:0).
    HL_QP: 24..28,
    Q_KEY: 28..32,
}

/// ClassPortInfo (IBTA 13.4.8.1; rdma-core `struct umad_class_port_info`),
/// 72 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassPortInfo {
    pub base_version: u8,
    pub class_version: u8,
    pub cap_mask: u16,
    /// CapabilityMask2, 27 bits.
    pub cap_mask2: u32,
    /// RespTimeValue, 5 bits: responses within 4.096 us * 2^value.
    pub resp_time_value: u8,
    pub redirect: ClassPortAddress,
    pub trap: ClassPortAddress,
}

/// The redirect or trap address of a ClassPortInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassPortAddress {
    pub gid: [u8; 16],
    pub traffic_class: u8,
    /// 4 bits.
    pub sl: u8,
    /// 20 bits.
    pub flow_label: u32,
    pub lid: u16,
    pub pkey: u16,
    /// Trap: hop limit (8 bits). Redirect: reserved, always 0.
    pub hop_limit: u8,
    /// 24 bits.
    pub qp: u32,
    pub qkey: u32,
}

impl ClassPortAddress {
    fn decode(b: &[u8; class_port_address::LEN]) -> Self {
        use class_port_address as f;
        let tc_sl_fl = get_be32(b, f::TC_SL_FL);
        let hl_qp = get_be32(b, f::HL_QP);
        Self {
            gid: get(b, f::GID),
            traffic_class: (tc_sl_fl >> 24) as u8,
            sl: ((tc_sl_fl >> 20) & 0xf) as u8,
            flow_label: tc_sl_fl & 0xf_ffff,
            lid: get_be16(b, f::LID),
            pkey: get_be16(b, f::P_KEY),
            hop_limit: (hl_qp >> 24) as u8,
            qp: hl_qp & 0xff_ffff,
            qkey: get_be32(b, f::Q_KEY),
        }
    }

    fn encode(&self) -> [u8; class_port_address::LEN] {
        use class_port_address as f;
        let mut b = [0u8; f::LEN];
        set(&mut b, f::GID, &self.gid);
        set_be32(
            &mut b,
            f::TC_SL_FL,
            u32::from(self.traffic_class) << 24
                | u32::from(self.sl & 0xf) << 20
                | (self.flow_label & 0xf_ffff),
        );
        set_be16(&mut b, f::LID, self.lid);
        set_be16(&mut b, f::P_KEY, self.pkey);
        set_be32(
            &mut b,
            f::HL_QP,
            u32::from(self.hop_limit) << 24 | (self.qp & 0xff_ffff),
        );
        set_be32(&mut b, f::Q_KEY, self.qkey);
        b
    }
}

impl ClassPortInfo {
    pub const LEN: usize = class_port_info::LEN;

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        use class_port_info as f;
        let b = check_len::<{ f::LEN }>(buf, "ClassPortInfo")?;
        let cm2_rt = get_be32(b, f::CAP_MASK2_RESP_TIME);
        // The byte before RedirectQP is reserved.
        let redirect = ClassPortAddress {
            hop_limit: 0,
            ..ClassPortAddress::decode(&get(b, f::REDIRECT))
        };
        Ok(Self {
            base_version: get_u8(b, f::BASE_VERSION),
            class_version: get_u8(b, f::CLASS_VERSION),
            cap_mask: get_be16(b, f::CAPABILITY_MASK),
            cap_mask2: cm2_rt >> 5,
            resp_time_value: (cm2_rt & 0x1f) as u8,
            redirect,
            trap: ClassPortAddress::decode(&get(b, f::TRAP)),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use class_port_info as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::BASE_VERSION, self.base_version);
        set_u8(b, f::CLASS_VERSION, self.class_version);
        set_be16(b, f::CAPABILITY_MASK, self.cap_mask);
        set_be32(
            b,
            f::CAP_MASK2_RESP_TIME,
            (self.cap_mask2 & 0x7ff_ffff) << 5 | u32::from(self.resp_time_value & 0x1f),
        );
        let redirect = ClassPortAddress {
            hop_limit: 0,
            ..self.redirect
        };
        set(b, f::REDIRECT, &redirect.encode());
        set(b, f::TRAP, &self.trap.encode());
        Ok(f::LEN)
    }
}

// ---------------------------------------------------------------------------
// IOUnitInfo
// ---------------------------------------------------------------------------

/// One 4-bit entry of the IOUnitInfo controller list (IBTA 16.3.3.3;
/// srp_daemon.h `SRP_DM_NO_IOC`, `SRP_DM_IOC_PRESENT`, `SRP_DM_NO_SLOT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotState(pub u8);

impl SlotState {
    /// Slot exists, no I/O controller installed.
    pub const NOT_INSTALLED: SlotState = SlotState(0x0);
    pub const PRESENT: SlotState = SlotState(0x1);
    /// No such slot.
    pub const NO_SLOT: SlotState = SlotState(0xf);
}

layout! {
    /// IOUnitInfo (IBTA vol 1 16.3.3.3; ib_dm_mad.h
    /// `struct ib_dm_iou_info`).
    mod iou_info, LEN = 132;
    CHANGE_ID: 0..2,
    MAX_CONTROLLERS: 2..3,
    /// DiagDeviceID (bit 1), OptionROM (bit 0); bits 7:2 reserved.
    FLAGS: 3..4,
    /// ControllerList: 4 bits per slot, slot 1 in the high nibble.
    CONTROLLER_LIST: 4..132,
}

/// IOUnitInfo (IBTA 16.3.3.3; ib_dm_mad.h `struct ib_dm_iou_info`), 132
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoUnitInfo {
    /// Incremented whenever any IOControllerProfile or ServiceEntries of
    /// this unit changes, so that managers can cache them.
    pub change_id: u16,
    /// Number of controller slots (list entries) in use.
    pub max_controllers: u8,
    /// DiagDeviceID bit (bit 30 of the first dword).
    pub diag_device_id: bool,
    /// OptionROM bit (bit 31 of the first dword): the unit has an option
    /// ROM.
    pub option_rom: bool,
    /// ControllerList: 4 bits per slot, slot 1 in the high nibble of byte 0
    /// (ib_srpt `srpt_set_ioc`, srp_daemon's `>> (4 * (1 - i % 2))`).
    pub controller_list: [u8; 128],
}

impl Default for IoUnitInfo {
    fn default() -> Self {
        Self {
            change_id: 0,
            max_controllers: 0,
            diag_device_id: false,
            option_rom: false,
            controller_list: [0; 128],
        }
    }
}

impl IoUnitInfo {
    pub const LEN: usize = iou_info::LEN;
    const OPTION_ROM: u8 = 0x01;
    const DIAG_DEVICE_ID: u8 = 0x02;

    /// State of 1-based `slot` (1..=256); `None` for slot 0 or beyond.
    pub fn slot(&self, slot: u16) -> Option<SlotState> {
        let i = usize::from(slot.checked_sub(1)?);
        let byte = *self.controller_list.get(i / 2)?;
        Some(SlotState(if i % 2 == 0 { byte >> 4 } else { byte & 0xf }))
    }

    /// Set 1-based `slot` (1..=256); returns false (and changes nothing)
    /// for slot 0 or beyond.
    pub fn set_slot(&mut self, slot: u16, state: SlotState) -> bool {
        let Some(i) = slot.checked_sub(1).map(usize::from) else {
            return false;
        };
        let Some(byte) = self.controller_list.get_mut(i / 2) else {
            return false;
        };
        let v = state.0 & 0xf;
        *byte = if i % 2 == 0 {
            (*byte & 0x0f) | v << 4
        } else {
            (*byte & 0xf0) | v
        };
        true
    }

    /// Slots 1..=max_controllers whose state is [`SlotState::PRESENT`].
    pub fn present_slots(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=u16::from(self.max_controllers)).filter(|&s| self.slot(s) == Some(SlotState::PRESENT))
    }

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        use iou_info as f;
        let b = check_len::<{ f::LEN }>(buf, "IOUnitInfo")?;
        let flags = get_u8(b, f::FLAGS);
        Ok(Self {
            change_id: get_be16(b, f::CHANGE_ID),
            max_controllers: get_u8(b, f::MAX_CONTROLLERS),
            diag_device_id: flags & Self::DIAG_DEVICE_ID != 0,
            option_rom: flags & Self::OPTION_ROM != 0,
            controller_list: get(b, f::CONTROLLER_LIST),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use iou_info as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_be16(b, f::CHANGE_ID, self.change_id);
        set_u8(b, f::MAX_CONTROLLERS, self.max_controllers);
        let mut flags = 0;
        if self.diag_device_id {
            flags |= Self::DIAG_DEVICE_ID;
        }
        if self.option_rom {
            flags |= Self::OPTION_ROM;
        }
        set_u8(b, f::FLAGS, flags);
        set(b, f::CONTROLLER_LIST, &self.controller_list);
        Ok(f::LEN)
    }
}

// ---------------------------------------------------------------------------
// IOControllerProfile
// ---------------------------------------------------------------------------

layout! {
    /// IOControllerProfile (IBTA vol 1 16.3.3.4; ib_dm_mad.h
    /// `struct ib_dm_ioc_profile`).
    mod ioc_profile, LEN = 128;
    GUID: 0..8,
    /// VendorID, 24 bits.
    VENDOR_ID: 8..11,
    RESERVED_11: 11..12,
    DEVICE_ID: 12..16,
    DEVICE_VERSION: 16..18,
    RESERVED_18: 18..20,
    /// SubsystemVendorID, 24 bits.
    SUBSYSTEM_VENDOR_ID: 20..23,
    RESERVED_23: 23..24,
    SUBSYSTEM_ID: 24..28,
    IO_CLASS: 28..30,
    IO_SUBCLASS: 30..32,
    PROTOCOL: 32..34,
    PROTOCOL_VERSION: 34..36,
    RESERVED_36: 36..40,
    SEND_MESSAGE_QUEUE_DEPTH: 40..42,
    RESERVED_42: 42..43,
    RDMA_READ_QUEUE_DEPTH: 43..44,
    SEND_MESSAGE_SIZE: 44..48,
    RDMA_TRANSFER_SIZE: 48..52,
    /// ControllerOperationsCapabilityMask.
    OP_CAP_MASK: 52..53,
    /// Reserved in IBTA 1.2+; `svc_cap_mask` in ib_dm_mad.h.
    SVC_CAP_MASK: 53..54,
    SERVICE_ENTRIES: 54..55,
    RESERVED_55: 55..64,
    /// IDString, NUL-padded.
    ID_STRING: 64..128,
}

/// IOControllerProfile (IBTA 16.3.3.4; ib_dm_mad.h
/// `struct ib_dm_ioc_profile`; SRP r16a table B.7 for the SRP values),
/// 128 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoControllerProfile {
    /// I/O controller GUID: the `ioc_guid` of an SRP add_target string.
    pub guid: u64,
    /// VendorID, 24 bits: the first three bytes of the 32-bit field (the
    /// fourth is reserved). ib_srpt writes `cpu_to_be32(vendor_id)` over all
    /// four bytes, so its 24-bit VendorID reads as `vendor_id >> 8`
    /// (srp_daemon prints `be32toh(vendor_id) >> 8` too).
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_version: u16,
    /// Subsystem VendorID, 24 bits (same layout as `vendor_id`).
    pub subsystem_vendor_id: u32,
    pub subsystem_id: u32,
    /// SRP: 0x0100 (r16a; srp_daemon `SRP_REV16A_IB_IO_CLASS`) or 0xff00
    /// (r10).
    pub io_class: u16,
    /// SRP: 0x609e (ib_srpt `SRP_IO_SUBCLASS`).
    pub io_subclass: u16,
    /// SRP: 0x0108 (`SRP_PROTOCOL`).
    pub protocol: u16,
    /// SRP: 0x0001 (`SRP_PROTOCOL_VERSION`).
    pub protocol_version: u16,
    /// SendMessageQueueDepth: receive queue depth available to initiators.
    pub send_queue_depth: u16,
    /// RDMAReadQueueDepth: RDMA reads the IOC can have outstanding per
    /// channel.
    pub rdma_read_depth: u8,
    /// SendMessageSize: largest message the IOC accepts (SRP: max
    /// initiator-to-target IU length).
    pub send_size: u32,
    /// RDMATransferSize: largest single RDMA transfer.
    pub rdma_size: u32,
    /// ControllerOperationsCapabilityMask (see [`IoControllerProfile::OP_SEND_TO_IOC`] etc.).
    pub op_cap_mask: u8,
    /// The byte after the operations mask: reserved in IBTA 1.2+,
    /// `svc_cap_mask` ("controller services capability mask") in
    /// ib_dm_mad.h. ib_srpt leaves it 0.
    pub svc_cap_mask: u8,
    /// ServiceEntries: number of service entries of this controller.
    pub service_entries: u8,
    /// IDString, 64 bytes, NUL-padded.
    pub id_string: [u8; 64],
}

impl Default for IoControllerProfile {
    fn default() -> Self {
        Self {
            guid: 0,
            vendor_id: 0,
            device_id: 0,
            device_version: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            io_class: 0,
            io_subclass: 0,
            protocol: 0,
            protocol_version: 0,
            send_queue_depth: 0,
            rdma_read_depth: 0,
            send_size: 0,
            rdma_size: 0,
            op_cap_mask: 0,
            svc_cap_mask: 0,
            service_entries: 0,
            id_string: [0; 64],
        }
    }
}

impl IoControllerProfile {
    pub const LEN: usize = ioc_profile::LEN;

    /// SRP r16a I/O class (srp_daemon `SRP_REV16A_IB_IO_CLASS`).
    pub const SRP_IO_CLASS_R16A: u16 = 0x0100;
    /// SRP r10 I/O class (srp_daemon `SRP_REV10_IB_IO_CLASS`).
    pub const SRP_IO_CLASS_R10: u16 = 0xff00;
    pub const SRP_IO_SUBCLASS: u16 = 0x609e;
    pub const SRP_PROTOCOL: u16 = 0x0108;
    pub const SRP_PROTOCOL_VERSION: u16 = 0x0001;

    // ControllerOperationsCapabilityMask bits (IBTA 16.3.3.4; ib_srpt.h).
    /// ST: the IOC accepts Send messages.
    pub const OP_SEND_TO_IOC: u8 = 0x01;
    /// SF: the IOC sends Send messages.
    pub const OP_SEND_FROM_IOC: u8 = 0x02;
    /// RT: the IOC accepts RDMA Read requests.
    pub const OP_RDMA_READ_TO_IOC: u8 = 0x04;
    /// RF: the IOC issues RDMA Read requests.
    pub const OP_RDMA_READ_FROM_IOC: u8 = 0x08;
    /// WT: the IOC accepts RDMA Writes.
    pub const OP_RDMA_WRITE_TO_IOC: u8 = 0x10;
    /// WF: the IOC issues RDMA Writes.
    pub const OP_RDMA_WRITE_FROM_IOC: u8 = 0x20;
    /// AT: the IOC accepts atomics.
    pub const OP_ATOMIC_TO_IOC: u8 = 0x40;
    /// AF: the IOC issues atomics.
    pub const OP_ATOMIC_FROM_IOC: u8 = 0x80;
    /// What an SRP target does (ib_srpt): ST | SF | RF | WF = 0x2b.
    pub const OP_SRP_TARGET: u8 = Self::OP_SEND_TO_IOC
        | Self::OP_SEND_FROM_IOC
        | Self::OP_RDMA_READ_FROM_IOC
        | Self::OP_RDMA_WRITE_FROM_IOC;

    /// The ID string up to its first NUL, if it is UTF-8.
    pub fn id_str(&self) -> Option<&str> {
        c_str(&self.id_string)
    }

    /// Set the ID string, truncated to 63 bytes (at a character boundary)
    /// so that a NUL always follows: C readers such as srp_daemon print
    /// it with `%s`.
    pub fn set_id_str(&mut self, s: &str) {
        self.id_string = [0; 64];
        let n = floor_char_boundary(s, 63);
        self.id_string[..n].copy_from_slice(&s.as_bytes()[..n]);
    }

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        use ioc_profile as f;
        let b = check_len::<{ f::LEN }>(buf, "IOControllerProfile")?;
        Ok(Self {
            guid: get_be64(b, f::GUID),
            vendor_id: get_be24(b, f::VENDOR_ID),
            device_id: get_be32(b, f::DEVICE_ID),
            device_version: get_be16(b, f::DEVICE_VERSION),
            subsystem_vendor_id: get_be24(b, f::SUBSYSTEM_VENDOR_ID),
            subsystem_id: get_be32(b, f::SUBSYSTEM_ID),
            io_class: get_be16(b, f::IO_CLASS),
            io_subclass: get_be16(b, f::IO_SUBCLASS),
            protocol: get_be16(b, f::PROTOCOL),
            protocol_version: get_be16(b, f::PROTOCOL_VERSION),
            send_queue_depth: get_be16(b, f::SEND_MESSAGE_QUEUE_DEPTH),
            rdma_read_depth: get_u8(b, f::RDMA_READ_QUEUE_DEPTH),
            send_size: get_be32(b, f::SEND_MESSAGE_SIZE),
            rdma_size: get_be32(b, f::RDMA_TRANSFER_SIZE),
            op_cap_mask: get_u8(b, f::OP_CAP_MASK),
            svc_cap_mask: get_u8(b, f::SVC_CAP_MASK),
            service_entries: get_u8(b, f::SERVICE_ENTRIES),
            id_string: get(b, f::ID_STRING),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use ioc_profile as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_be64(b, f::GUID, self.guid);
        set_be24(b, f::VENDOR_ID, self.vendor_id);
        set_be32(b, f::DEVICE_ID, self.device_id);
        set_be16(b, f::DEVICE_VERSION, self.device_version);
        set_be24(b, f::SUBSYSTEM_VENDOR_ID, self.subsystem_vendor_id);
        set_be32(b, f::SUBSYSTEM_ID, self.subsystem_id);
        set_be16(b, f::IO_CLASS, self.io_class);
        set_be16(b, f::IO_SUBCLASS, self.io_subclass);
        set_be16(b, f::PROTOCOL, self.protocol);
        set_be16(b, f::PROTOCOL_VERSION, self.protocol_version);
        set_be16(b, f::SEND_MESSAGE_QUEUE_DEPTH, self.send_queue_depth);
        set_u8(b, f::RDMA_READ_QUEUE_DEPTH, self.rdma_read_depth);
        set_be32(b, f::SEND_MESSAGE_SIZE, self.send_size);
        set_be32(b, f::RDMA_TRANSFER_SIZE, self.rdma_size);
        set_u8(b, f::OP_CAP_MASK, self.op_cap_mask);
        set_u8(b, f::SVC_CAP_MASK, self.svc_cap_mask);
        set_u8(b, f::SERVICE_ENTRIES, self.service_entries);
        set(b, f::ID_STRING, &self.id_string);
        Ok(f::LEN)
    }
}

// ---------------------------------------------------------------------------
// ServiceEntries
// ---------------------------------------------------------------------------

layout! {
    /// One service entry (IBTA vol 1 16.3.3.5; ib_dm_mad.h
    /// `struct ib_dm_svc_entry`).
    mod svc_entry, LEN = 48;
    /// ServiceName, NUL-padded.
    NAME: 0..40,
    /// ServiceID.
    ID: 40..48,
}

layout! {
    /// ServiceEntries (IBTA vol 1 16.3.3.5; ib_dm_mad.h
    /// `struct ib_dm_svc_entries`): four consecutive [`svc_entry`]s.
    mod svc_entries, LEN = 192;
    ENTRY_0: 0..48,
    ENTRY_1: 48..96,
    ENTRY_2: 96..144,
    ENTRY_3: 144..192,
}

/// One service entry (IBTA 16.3.3.5; ib_dm_mad.h `struct ib_dm_svc_entry`),
/// 48 bytes: a 40-byte NUL-padded name and a 64-bit service ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: [u8; 40],
    pub id: u64,
}

impl Default for ServiceEntry {
    fn default() -> Self {
        Self { name: [0; 40], id: 0 }
    }
}

/// Prefix of SRP service names (SRP r16a B.7; ib_srpt
/// `SRP_SERVICE_NAME_PREFIX`): "SRP.T10:" followed by the target port
/// identifier extension as 16 hex digits.
pub const SRP_SERVICE_NAME_PREFIX: &str = "SRP.T10:";

impl ServiceEntry {
    pub const LEN: usize = svc_entry::LEN;

    /// An entry named `name` (truncated to 40 bytes).
    pub fn new(name: &str, id: u64) -> Self {
        let mut e = Self { name: [0; 40], id };
        let n = floor_char_boundary(name, 40);
        e.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        e
    }

    /// The SRP entry for identifier extension `id_ext`:
    /// `SRP.T10:<16 lowercase hex digits>` (ib_srpt's `"%s%016llx"`).
    pub fn srp(id_ext: u64, service_id: u64) -> Self {
        Self::new(&format!("{SRP_SERVICE_NAME_PREFIX}{id_ext:016x}"), service_id)
    }

    /// The name up to its first NUL, if it is UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        c_str(&self.name)
    }

    /// For an SRP entry, the 16 hex digits after "SRP.T10:" as srp_daemon
    /// reads them (`sscanf(name, "SRP.T10:%16s", id_ext)`); `None` if the
    /// name does not start with the prefix.
    pub fn srp_id_ext(&self) -> Option<&str> {
        let rest = self.name_str()?.strip_prefix(SRP_SERVICE_NAME_PREFIX)?;
        let n = floor_char_boundary(rest, 16);
        let s = &rest[..n];
        (!s.is_empty()).then_some(s)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        Ok(Self::decode(check_len(buf, "ServiceEntry")?))
    }

    fn decode(b: &[u8; svc_entry::LEN]) -> Self {
        Self {
            name: get(b, svc_entry::NAME),
            id: get_be64(b, svc_entry::ID),
        }
    }

    fn encode(&self) -> [u8; svc_entry::LEN] {
        let mut b = [0u8; svc_entry::LEN];
        set(&mut b, svc_entry::NAME, &self.name);
        set_be64(&mut b, svc_entry::ID, self.id);
        b
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        *check_out_len(buf)? = self.encode();
        Ok(Self::LEN)
    }
}

/// ServiceEntries (IBTA 16.3.3.5; `struct ib_dm_svc_entries`): up to four
/// consecutive entries, 192 bytes. How many are meaningful follows from the
/// attribute modifier of the request ([`ServiceEntriesModifier::count`]),
/// not from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceEntries {
    pub entries: [ServiceEntry; 4],
}

impl ServiceEntries {
    pub const LEN: usize = svc_entries::LEN;
    pub const MAX_PER_MAD: usize = 4;
    /// The entries' fields, in order.
    const ENTRIES: [Field; Self::MAX_PER_MAD] = [
        svc_entries::ENTRY_0,
        svc_entries::ENTRY_1,
        svc_entries::ENTRY_2,
        svc_entries::ENTRY_3,
    ];

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let b = check_len::<{ svc_entries::LEN }>(buf, "ServiceEntries")?;
        Ok(Self {
            entries: Self::ENTRIES.map(|f| ServiceEntry::decode(&get(b, f))),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let b = check_out_len::<{ svc_entries::LEN }>(buf)?;
        for (f, e) in Self::ENTRIES.into_iter().zip(&self.entries) {
            set(b, f, &e.encode());
        }
        Ok(Self::LEN)
    }
}

/// The attribute modifier of a ServiceEntries request (IBTA 16.3.3.5;
/// ib_srpt `srpt_mgmt_method_get`, srp_daemon `get_svc_entries`): the slot
/// in bits 31-16, the last entry in bits 15-8, the first in bits 7-0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceEntriesModifier {
    /// 1-based controller slot.
    pub slot: u16,
    /// Index of the last entry requested (inclusive).
    pub last: u8,
    /// Index of the first entry requested.
    pub first: u8,
}

impl ServiceEntriesModifier {
    pub fn from_u32(m: u32) -> Self {
        Self {
            slot: (m >> 16) as u16,
            last: (m >> 8) as u8,
            first: m as u8,
        }
    }

    pub fn to_u32(self) -> u32 {
        u32::from(self.slot) << 16 | u32::from(self.last) << 8 | u32::from(self.first)
    }

    /// Entries requested: `last - first + 1`, `None` if `first > last`.
    pub fn count(self) -> Option<usize> {
        (self.first <= self.last).then(|| usize::from(self.last - self.first) + 1)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The bytes of a NUL-padded C string field up to the first NUL, as UTF-8.
fn c_str(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok()
}

/// The largest `n <= max` that is a char boundary of `s` (and `<= s.len()`).
fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut n = max.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

#[cfg(test)]
#[path = "mad_tests.rs"]
mod tests;
