//! SRP information units (IUs) and data buffer descriptors.
//!
//! Layouts and constants follow SRP r16a (T10/1415-D) as transcribed in the
//! Linux kernel's `include/scsi/srp.h`, plus the SRP-2 additions the kernel
//! implements (immediate data, the RDMA/CM login request form). Where the
//! Linux initiator (`ib_srp.c`) or target (`ib_srpt.c`) behaviour shapes a
//! check, the comment says so.

use super::{
    check_len, check_len_at, check_out_len, check_out_split, get, get_be16, get_be32, get_be64, get_u8,
    put_at, set, set_be16, set_be32, set_be64, set_u8, take_at, WireError,
};

// ---------------------------------------------------------------------------
// Common fields
// ---------------------------------------------------------------------------

/// The IU type code, always the first byte of an IU (srp.h `SRP_*` enum).
///
/// A newtype rather than an enum so that any byte can be carried; use
/// [`Opcode::is_known`] or [`peek_opcode`] to classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    // Initiator to target requests.
    pub const LOGIN_REQ: Opcode = Opcode(0x00);
    pub const TSK_MGMT: Opcode = Opcode(0x01);
    pub const CMD: Opcode = Opcode(0x02);
    pub const I_LOGOUT: Opcode = Opcode(0x03);
    // Target to initiator responses.
    pub const LOGIN_RSP: Opcode = Opcode(0xc0);
    pub const RSP: Opcode = Opcode(0xc1);
    pub const LOGIN_REJ: Opcode = Opcode(0xc2);
    // Target to initiator requests.
    pub const T_LOGOUT: Opcode = Opcode(0x80);
    pub const CRED_REQ: Opcode = Opcode(0x81);
    pub const AER_REQ: Opcode = Opcode(0x82);
    // Initiator to target responses.
    pub const CRED_RSP: Opcode = Opcode(0x41);
    pub const AER_RSP: Opcode = Opcode(0x42);

    /// The srp.h name of a defined opcode, `None` for any other byte.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::LOGIN_REQ => "SRP_LOGIN_REQ",
            Self::TSK_MGMT => "SRP_TSK_MGMT",
            Self::CMD => "SRP_CMD",
            Self::I_LOGOUT => "SRP_I_LOGOUT",
            Self::LOGIN_RSP => "SRP_LOGIN_RSP",
            Self::RSP => "SRP_RSP",
            Self::LOGIN_REJ => "SRP_LOGIN_REJ",
            Self::T_LOGOUT => "SRP_T_LOGOUT",
            Self::CRED_REQ => "SRP_CRED_REQ",
            Self::AER_REQ => "SRP_AER_REQ",
            Self::CRED_RSP => "SRP_CRED_RSP",
            Self::AER_RSP => "SRP_AER_RSP",
            _ => return None,
        })
    }

    /// Whether this is one of the twelve opcodes SRP r16a defines.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

/// Read the opcode of an IU: its first byte, which must be a defined SRP
/// opcode.
pub fn peek_opcode(iu: &[u8]) -> Result<Opcode, WireError> {
    let [op] = *check_len::<1>(iu, "SRP IU")?;
    let op = Opcode(op);
    if !op.is_known() {
        return Err(WireError::UnknownOpcode(op.0));
    }
    Ok(op)
}

/// The 8-byte tag of an IU.
///
/// Opaque to the target: SRP r16a only requires the target to echo it in
/// the response. The Linux initiator stores it in host byte order
/// (`cmd->tag = tag`, and `rsp->tag & SRP_TAG_TSK_MGMT` when matching), so
/// never interpret the value; it is read and written big-endian so the
/// bytes go back exactly as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tag(pub u64);

/// Logical unit number: the 8 bytes of the SAM LUN field, uninterpreted.
pub type Lun = [u8; 8];

/// REQUIRED/SUPPORTED BUFFER FORMATS (login IUs): direct descriptors
/// (srp.h `SRP_BUF_FORMAT_DIRECT`).
pub const BUF_FMT_DIRECT: u16 = 1 << 1;
/// REQUIRED/SUPPORTED BUFFER FORMATS (login IUs): indirect descriptors
/// (srp.h `SRP_BUF_FORMAT_INDIRECT`).
pub const BUF_FMT_INDIRECT: u16 = 1 << 2;

/// SOL_NOT bit of SRP_RSP and SRP_T_LOGOUT, SOLNT (ib_srpt.h, r16a tables
/// 16 and 22): the target asks the initiator to notify on receipt.
pub const SOLNT: u8 = 0x01;
/// SOL_NOT bit of SRP_CMD and SRP_TSK_MGMT: SCSOLNT (solicited
/// notification on successful completion).
pub const SCSOLNT: u8 = 0x02;
/// SOL_NOT bit of SRP_CMD and SRP_TSK_MGMT: UCSOLNT (solicited
/// notification on unsuccessful completion).
pub const UCSOLNT: u8 = 0x04;

/// Data buffer descriptor format, one nibble of the SRP_CMD BUFFER FORMAT
/// byte: DATA-OUT in the high nibble, DATA-IN in the low nibble (ib_srpt:
/// "The lower four bits of the buffer format field contain the DATA-IN
/// buffer descriptor format, and the highest four bits contain the
/// DATA-OUT buffer descriptor format").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DescFormat {
    /// `SRP_NO_DATA_DESC`: no descriptor, no data in this direction.
    None = 0,
    /// `SRP_DATA_DESC_DIRECT`: one 16-byte direct descriptor.
    Direct = 1,
    /// `SRP_DATA_DESC_INDIRECT`: an indirect descriptor (table descriptor,
    /// total length, then some or all of the table).
    Indirect = 2,
    /// `SRP_DATA_DESC_IMM` (SRP-2): a 4-byte length; the data itself is in
    /// the IU at the login-negotiated immediate data offset. DATA-OUT only.
    Immediate = 3,
}

impl DescFormat {
    /// Decode a nibble; `None` for the reserved values 4..=15.
    pub fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::None,
            1 => Self::Direct,
            2 => Self::Indirect,
            3 => Self::Immediate,
            _ => return None,
        })
    }
}

/// The one check of a fixed-size IU (or IU header) parser: the first byte
/// is `op` and `N` bytes are present. Returns the first `N` bytes, which
/// the IU's layout table indexes.
#[inline]
fn fixed<'a, const N: usize>(iu: &'a [u8], what: &'static str, op: Opcode) -> Result<&'a [u8; N], WireError> {
    // r16a: every IU starts with its type code; a parser for one IU type
    // must not accept another.
    if let Some(&got) = iu.first() {
        if got != op.0 {
            return Err(WireError::BadOpcode { expected: op.0, got });
        }
    }
    // srp.h sizes are the minimum IU sizes; trailing bytes (e.g. the rest
    // of a 92-byte IB CM private data area) are ignored.
    check_len(iu, what)
}

/// Parse a u32 length field into `usize` (lossless on all supported targets;
/// saturates elsewhere so bounds checks fail instead of wrapping).
fn len32(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn u32_len(what: &'static str, n: usize) -> Result<u32, WireError> {
    u32::try_from(n).map_err(|_| WireError::InvalidField(what))
}

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

layout! {
    /// SRP_LOGIN_REQ, IU form (r16a 6.2; srp.h `struct srp_login_req`).
    mod login_req, LEN = 64;
    OPCODE: 0..1,
    RESERVED_1: 1..8,
    TAG: 8..16,
    /// REQUESTED MAXIMUM INITIATOR TO TARGET IU LENGTH.
    REQ_IT_IU_LEN: 16..20,
    RESERVED_20: 20..24,
    /// REQUIRED BUFFER FORMATS.
    REQ_BUF_FMT: 24..26,
    /// MULTI-CHANNEL ACTION (bits 1:0), IMMED_REQUESTED (bit 7, SRP-2).
    REQ_FLAGS: 26..27,
    RESERVED_27: 27..28,
    /// SRP-2 immediate data offset (reserved in r16a).
    IMM_DATA_OFFSET: 28..30,
    RESERVED_30: 30..32,
    INITIATOR_PORT_ID: 32..48,
    TARGET_PORT_ID: 48..64,
}

layout! {
    /// SRP_LOGIN_REQ, RDMA/CM private-data form (srp.h
    /// `struct srp_login_req_rdma`): the fields reordered so that the
    /// login fits in 56 bytes; the opcode is byte 11, not 0.
    mod login_req_rdma, LEN = 56;
    TAG: 0..8,
    REQ_BUF_FMT: 8..10,
    REQ_FLAGS: 10..11,
    OPCODE: 11..12,
    REQ_IT_IU_LEN: 12..16,
    INITIATOR_PORT_ID: 16..32,
    TARGET_PORT_ID: 32..48,
    IMM_DATA_OFFSET: 48..50,
    RESERVED_50: 50..56,
}

/// SRP_LOGIN_REQ (64 bytes; r16a 6.2, srp.h `struct srp_login_req`), or the
/// 56-byte RDMA/CM private-data form `struct srp_login_req_rdma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    pub tag: Tag,
    /// REQUESTED MAXIMUM INITIATOR TO TARGET IU LENGTH.
    pub req_it_iu_len: u32,
    /// REQUIRED BUFFER FORMATS: [`BUF_FMT_DIRECT`] | [`BUF_FMT_INDIRECT`].
    pub req_buf_fmt: u16,
    /// MULTI-CHANNEL ACTION in bits 1:0, [`Self::IMMED_REQUESTED`] in bit 7.
    pub req_flags: u8,
    /// Offset in SRP_CMD IUs at which immediate data starts (SRP-2;
    /// meaningful only with [`Self::IMMED_REQUESTED`]). The Linux initiator
    /// sends `SRP_IMM_DATA_OFFSET` = 48 + 16 + 4 = 68.
    pub imm_data_offset: u16,
    /// INITIATOR PORT IDENTIFIER (r16a: 8 bytes identifier extension, then
    /// 8 bytes GUID; pre-r16a drafts used the opposite order).
    pub initiator_port_id: [u8; 16],
    /// TARGET PORT IDENTIFIER (same layout).
    pub target_port_id: [u8; 16],
}

impl LoginRequest {
    /// Size of the IU form (IB CM private data, SRP over other transports).
    pub const LEN: usize = login_req::LEN;
    /// Size of `struct srp_login_req_rdma` (srp.h: "RDMA/CM over
    /// InfiniBand can only carry 92 - 36 = 56 bytes of private data").
    pub const RDMA_CM_LEN: usize = login_req_rdma::LEN;

    /// MULTI-CHANNEL ACTION field mask in `req_flags`.
    pub const MULTICHAN_MASK: u8 = 0x03;
    /// MULTI-CHANNEL ACTION 0: terminate the I_T nexus's other channels.
    pub const SINGLE: u8 = 0x00;
    /// MULTI-CHANNEL ACTION 1: independent operation (keep them).
    pub const MULTI: u8 = 0x01;
    /// SRP-2 immediate data requested (srp.h `SRP_IMMED_REQUESTED`).
    pub const IMMED_REQUESTED: u8 = 0x80;

    /// The MULTI-CHANNEL ACTION field: [`Self::SINGLE`], [`Self::MULTI`] or
    /// a reserved value (2, 3) the protocol layer must reject.
    pub fn multichannel_action(&self) -> u8 {
        self.req_flags & Self::MULTICHAN_MASK
    }

    /// Whether the initiator asks for immediate data.
    pub fn immed_requested(&self) -> bool {
        self.req_flags & Self::IMMED_REQUESTED != 0
    }

    /// Parse the 64-byte IU form.
    pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
        use login_req as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_LOGIN_REQ", Opcode::LOGIN_REQ)?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            req_it_iu_len: get_be32(b, f::REQ_IT_IU_LEN),
            req_buf_fmt: get_be16(b, f::REQ_BUF_FMT),
            req_flags: get_u8(b, f::REQ_FLAGS),
            imm_data_offset: get_be16(b, f::IMM_DATA_OFFSET),
            initiator_port_id: get(b, f::INITIATOR_PORT_ID),
            target_port_id: get(b, f::TARGET_PORT_ID),
        })
    }

    /// Parse the RDMA/CM private-data form (srp.h `srp_login_req_rdma`:
    /// tag, req_buf_fmt, req_flags, opcode, req_it_iu_len, port ids,
    /// imm_data_offset, 6 reserved; note the opcode is byte 11, not 0).
    pub fn parse_rdma_cm(pd: &[u8]) -> Result<Self, WireError> {
        use login_req_rdma as f;
        // ib_srpt: "if (event->param.conn.private_data_len <
        // sizeof(*req_rdma)) return -EINVAL".
        let b = check_len::<{ f::LEN }>(pd, "SRP_LOGIN_REQ (RDMA/CM)")?;
        let opcode = get_u8(b, f::OPCODE);
        if opcode != Opcode::LOGIN_REQ.0 {
            return Err(WireError::BadOpcode {
                expected: Opcode::LOGIN_REQ.0,
                got: opcode,
            });
        }
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            req_it_iu_len: get_be32(b, f::REQ_IT_IU_LEN),
            req_buf_fmt: get_be16(b, f::REQ_BUF_FMT),
            req_flags: get_u8(b, f::REQ_FLAGS),
            imm_data_offset: get_be16(b, f::IMM_DATA_OFFSET),
            initiator_port_id: get(b, f::INITIATOR_PORT_ID),
            target_port_id: get(b, f::TARGET_PORT_ID),
        })
    }

    /// Build the 64-byte IU form; returns 64.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use login_req as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::OPCODE, Opcode::LOGIN_REQ.0);
        set_be64(b, f::TAG, self.tag.0);
        set_be32(b, f::REQ_IT_IU_LEN, self.req_it_iu_len);
        set_be16(b, f::REQ_BUF_FMT, self.req_buf_fmt);
        set_u8(b, f::REQ_FLAGS, self.req_flags);
        set_be16(b, f::IMM_DATA_OFFSET, self.imm_data_offset);
        set(b, f::INITIATOR_PORT_ID, &self.initiator_port_id);
        set(b, f::TARGET_PORT_ID, &self.target_port_id);
        Ok(f::LEN)
    }

    /// Build the 56-byte RDMA/CM private-data form; returns 56.
    pub fn emit_rdma_cm(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use login_req_rdma as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_be64(b, f::TAG, self.tag.0);
        set_be16(b, f::REQ_BUF_FMT, self.req_buf_fmt);
        set_u8(b, f::REQ_FLAGS, self.req_flags);
        set_u8(b, f::OPCODE, Opcode::LOGIN_REQ.0);
        set_be32(b, f::REQ_IT_IU_LEN, self.req_it_iu_len);
        set(b, f::INITIATOR_PORT_ID, &self.initiator_port_id);
        set(b, f::TARGET_PORT_ID, &self.target_port_id);
        set_be16(b, f::IMM_DATA_OFFSET, self.imm_data_offset);
        Ok(f::LEN)
    }
}

layout! {
    /// SRP_LOGIN_RSP (r16a 6.3; srp.h `struct srp_login_rsp`).
    mod login_rsp, LEN = 52;
    OPCODE: 0..1,
    RESERVED_1: 1..4,
    /// REQUEST LIMIT DELTA: the initial credits.
    REQ_LIM_DELTA: 4..8,
    TAG: 8..16,
    /// MAXIMUM INITIATOR TO TARGET IU LENGTH.
    MAX_IT_IU_LEN: 16..20,
    /// MAXIMUM TARGET TO INITIATOR IU LENGTH.
    MAX_TI_IU_LEN: 20..24,
    /// SUPPORTED BUFFER FORMATS.
    BUF_FMT: 24..26,
    /// MULTI-CHANNEL RESULT (bits 1:0), IMMED_SUPPORTED (bit 7, SRP-2).
    RSP_FLAGS: 26..27,
    RESERVED_27: 27..52,
}

/// SRP_LOGIN_RSP (52 bytes; r16a 6.3, srp.h `struct srp_login_rsp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    pub tag: Tag,
    /// Initial credits granted to the initiator.
    pub req_lim_delta: u32,
    /// MAXIMUM INITIATOR TO TARGET IU LENGTH the target accepts.
    pub max_it_iu_len: u32,
    /// MAXIMUM TARGET TO INITIATOR IU LENGTH the target will send.
    pub max_ti_iu_len: u32,
    /// SUPPORTED BUFFER FORMATS.
    pub buf_fmt: u16,
    /// MULTI-CHANNEL RESULT in bits 1:0, [`Self::IMMED_SUPPORTED`] in bit 7.
    pub rsp_flags: u8,
}

impl LoginResponse {
    pub const LEN: usize = login_rsp::LEN;
    /// MULTI-CHANNEL RESULT field mask in `rsp_flags`.
    pub const MULTICHAN_MASK: u8 = 0x03;
    /// MULTI-CHANNEL RESULT 0: no existing channels were terminated
    /// (srp.h `SRP_LOGIN_RSP_MULTICHAN_NO_CHAN`).
    pub const NO_CHANNELS_TERMINATED: u8 = 0x0;
    /// MULTI-CHANNEL RESULT 1: existing channels were terminated
    /// (srp.h `SRP_LOGIN_RSP_MULTICHAN_TERMINATED` = 0x1).
    pub const TERMINATED: u8 = 0x1;
    /// MULTI-CHANNEL RESULT 2: existing channels are maintained
    /// (srp.h `SRP_LOGIN_RSP_MULTICHAN_MAINTAINED` = 0x2).
    pub const MAINTAINED: u8 = 0x2;
    /// SRP-2: immediate data supported (srp.h `SRP_LOGIN_RSP_IMMED_SUPP`).
    /// ib_srp uses immediate data only if this bit is set.
    pub const IMMED_SUPPORTED: u8 = 0x80;

    /// The MULTI-CHANNEL RESULT field.
    pub fn multichannel_result(&self) -> u8 {
        self.rsp_flags & Self::MULTICHAN_MASK
    }

    pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
        use login_rsp as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_LOGIN_RSP", Opcode::LOGIN_RSP)?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            req_lim_delta: get_be32(b, f::REQ_LIM_DELTA),
            max_it_iu_len: get_be32(b, f::MAX_IT_IU_LEN),
            max_ti_iu_len: get_be32(b, f::MAX_TI_IU_LEN),
            buf_fmt: get_be16(b, f::BUF_FMT),
            rsp_flags: get_u8(b, f::RSP_FLAGS),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use login_rsp as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::OPCODE, Opcode::LOGIN_RSP.0);
        set_be32(b, f::REQ_LIM_DELTA, self.req_lim_delta);
        set_be64(b, f::TAG, self.tag.0);
        set_be32(b, f::MAX_IT_IU_LEN, self.max_it_iu_len);
        set_be32(b, f::MAX_TI_IU_LEN, self.max_ti_iu_len);
        set_be16(b, f::BUF_FMT, self.buf_fmt);
        set_u8(b, f::RSP_FLAGS, self.rsp_flags);
        Ok(f::LEN)
    }
}

/// REASON field of SRP_LOGIN_REJ (srp.h `enum srp_login_rej_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RejectReason(pub u32);

impl RejectReason {
    pub const UNABLE_ESTABLISH_CHANNEL: RejectReason = RejectReason(0x0001_0000);
    pub const INSUFFICIENT_RESOURCES: RejectReason = RejectReason(0x0001_0001);
    /// Also used by ib_srpt when req_it_iu_len < 64.
    pub const IT_IU_LENGTH_TOO_LARGE: RejectReason = RejectReason(0x0001_0002);
    pub const UNABLE_ASSOCIATE_CHANNEL: RejectReason = RejectReason(0x0001_0003);
    pub const UNSUPPORTED_DESCRIPTOR_FORMAT: RejectReason = RejectReason(0x0001_0004);
    pub const MULTICHANNEL_UNSUPPORTED: RejectReason = RejectReason(0x0001_0005);
    pub const CHANNEL_LIMIT_REACHED: RejectReason = RejectReason(0x0001_0006);
}

layout! {
    /// SRP_LOGIN_REJ (r16a 6.4; srp.h `struct srp_login_rej`).
    mod login_rej, LEN = 32;
    OPCODE: 0..1,
    RESERVED_1: 1..4,
    REASON: 4..8,
    TAG: 8..16,
    RESERVED_16: 16..24,
    /// SUPPORTED BUFFER FORMATS.
    BUF_FMT: 24..26,
    RESERVED_26: 26..32,
}

/// SRP_LOGIN_REJ (32 bytes; r16a 6.4, srp.h `struct srp_login_rej`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginReject {
    pub tag: Tag,
    pub reason: RejectReason,
    /// SUPPORTED BUFFER FORMATS (ib_srpt sends DIRECT | INDIRECT).
    pub buf_fmt: u16,
}

impl LoginReject {
    pub const LEN: usize = login_rej::LEN;

    pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
        use login_rej as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_LOGIN_REJ", Opcode::LOGIN_REJ)?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            reason: RejectReason(get_be32(b, f::REASON)),
            buf_fmt: get_be16(b, f::BUF_FMT),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use login_rej as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::OPCODE, Opcode::LOGIN_REJ.0);
        set_be32(b, f::REASON, self.reason.0);
        set_be64(b, f::TAG, self.tag.0);
        set_be16(b, f::BUF_FMT, self.buf_fmt);
        Ok(f::LEN)
    }
}

// ---------------------------------------------------------------------------
// Small fixed-size IUs
// ---------------------------------------------------------------------------

layout! {
    /// The 16-byte IUs that carry only a tag: SRP_I_LOGOUT (r16a 6.5),
    /// SRP_CRED_RSP (6.11), SRP_AER_RSP (6.13); srp.h `struct srp_i_logout`,
    /// `struct srp_cred_rsp`, `struct srp_aer_rsp`.
    mod tag_only, LEN = 16;
    OPCODE: 0..1,
    RESERVED_1: 1..8,
    TAG: 8..16,
}

/// Parse/emit for the IUs of the [`tag_only`] layout: SRP_I_LOGOUT,
/// SRP_CRED_RSP, SRP_AER_RSP.
macro_rules! tag_only_iu {
    ($(#[$m:meta])* $name:ident, $op:expr, $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            pub tag: Tag,
        }

        impl $name {
            pub const LEN: usize = tag_only::LEN;

            pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
                let b = fixed::<{ tag_only::LEN }>(iu, $what, $op)?;
                Ok(Self {
                    tag: Tag(get_be64(b, tag_only::TAG)),
                })
            }

            pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
                let b = check_out_len::<{ tag_only::LEN }>(buf)?;
                set_u8(b, tag_only::OPCODE, $op.0);
                set_be64(b, tag_only::TAG, self.tag.0);
                Ok(tag_only::LEN)
            }
        }
    };
}

tag_only_iu!(
    /// SRP_I_LOGOUT (16 bytes; r16a 6.5, srp.h `struct srp_i_logout`).
    ILogout,
    Opcode::I_LOGOUT,
    "SRP_I_LOGOUT"
);
tag_only_iu!(
    /// SRP_CRED_RSP (16 bytes; srp.h `struct srp_cred_rsp`): the initiator's
    /// answer to SRP_CRED_REQ, echoing its tag.
    CredRsp,
    Opcode::CRED_RSP,
    "SRP_CRED_RSP"
);
tag_only_iu!(
    /// SRP_AER_RSP (16 bytes; srp.h `struct srp_aer_rsp`): the initiator's
    /// answer to SRP_AER_REQ, echoing its tag.
    AerRsp,
    Opcode::AER_RSP,
    "SRP_AER_RSP"
);

layout! {
    /// SRP_T_LOGOUT (r16a 6.6; srp.h `struct srp_t_logout`).
    mod t_logout, LEN = 16;
    OPCODE: 0..1,
    /// SOLNT (bit 0).
    SOL_NOT: 1..2,
    RESERVED_2: 2..4,
    REASON: 4..8,
    TAG: 8..16,
}

/// SRP_T_LOGOUT (16 bytes; r16a 6.6, srp.h `struct srp_t_logout`).
///
/// Note: the Linux initiator only logs "Got target logout request" and does
/// not tear the channel down; a disconnect must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TLogout {
    pub tag: Tag,
    /// [`SOLNT`] or 0.
    pub sol_not: u8,
    /// One of the reason constants below.
    pub reason: u32,
}

impl TLogout {
    pub const LEN: usize = t_logout::LEN;
    // SRP r16a target logout reason codes (also in OFED's srp.h
    // `TARGET_LOGOUT_REASON_CODE`); 5 is reserved.
    /// No reason specified.
    pub const NO_REASON: u32 = 0;
    /// Inactive RDMA channel (reclaiming resources).
    pub const INACTIVE_RDMA_CHANNEL: u32 = 1;
    /// Invalid information unit type code received by the target.
    pub const INVALID_IU_TYPE: u32 = 2;
    /// Response received with no outstanding target port request.
    pub const UNEXPECTED_RESPONSE: u32 = 3;
    /// Disconnected due to a multi-channel action on a new login.
    pub const MULTICHANNEL_ACTION: u32 = 4;
    /// Unsupported format code in the DATA-OUT BUFFER DESCRIPTOR FORMAT.
    pub const UNSUPPORTED_DATA_OUT_FORMAT: u32 = 6;
    /// Unsupported format code in the DATA-IN BUFFER DESCRIPTOR FORMAT.
    pub const UNSUPPORTED_DATA_IN_FORMAT: u32 = 7;
    /// Invalid DATA-OUT BUFFER DESCRIPTOR COUNT.
    pub const INVALID_DATA_OUT_DESC_COUNT: u32 = 8;
    /// Invalid DATA-IN BUFFER DESCRIPTOR COUNT.
    pub const INVALID_DATA_IN_DESC_COUNT: u32 = 9;

    pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
        use t_logout as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_T_LOGOUT", Opcode::T_LOGOUT)?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            sol_not: get_u8(b, f::SOL_NOT),
            reason: get_be32(b, f::REASON),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use t_logout as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::OPCODE, Opcode::T_LOGOUT.0);
        set_u8(b, f::SOL_NOT, self.sol_not);
        set_be32(b, f::REASON, self.reason);
        set_be64(b, f::TAG, self.tag.0);
        Ok(f::LEN)
    }
}

layout! {
    /// SRP_CRED_REQ (r16a 6.10; srp.h `struct srp_cred_req`).
    mod cred_req, LEN = 16;
    OPCODE: 0..1,
    /// SOLNT (bit 0).
    SOL_NOT: 1..2,
    RESERVED_2: 2..4,
    REQ_LIM_DELTA: 4..8,
    TAG: 8..16,
}

/// SRP_CRED_REQ (16 bytes; r16a 6.10, srp.h `struct srp_cred_req`).
///
/// ib_srp treats REQUEST LIMIT DELTA as signed (`s32 delta =
/// be32_to_cpu(req->req_lim_delta)`); it is carried here as the raw u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredReq {
    pub tag: Tag,
    pub sol_not: u8,
    pub req_lim_delta: u32,
}

impl CredReq {
    pub const LEN: usize = cred_req::LEN;

    pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
        use cred_req as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_CRED_REQ", Opcode::CRED_REQ)?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            sol_not: get_u8(b, f::SOL_NOT),
            req_lim_delta: get_be32(b, f::REQ_LIM_DELTA),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use cred_req as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::OPCODE, Opcode::CRED_REQ.0);
        set_u8(b, f::SOL_NOT, self.sol_not);
        set_be32(b, f::REQ_LIM_DELTA, self.req_lim_delta);
        set_be64(b, f::TAG, self.tag.0);
        Ok(f::LEN)
    }
}

layout! {
    /// SRP_AER_REQ header (r16a 6.12; srp.h `struct srp_aer_req`); the
    /// SENSE DATA follows at `LEN`.
    mod aer_req, LEN = 36;
    OPCODE: 0..1,
    /// SOLNT (bit 0).
    SOL_NOT: 1..2,
    RESERVED_2: 2..4,
    REQ_LIM_DELTA: 4..8,
    TAG: 8..16,
    RESERVED_16: 16..20,
    LUN: 20..28,
    /// SENSE DATA LIST LENGTH.
    SENSE_DATA_LEN: 28..32,
    RESERVED_32: 32..36,
}

/// SRP_AER_REQ (36-byte header + sense data; r16a 6.12, srp.h
/// `struct srp_aer_req`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AerReq<'a> {
    pub tag: Tag,
    pub sol_not: u8,
    pub req_lim_delta: u32,
    pub lun: Lun,
    /// SENSE DATA; its length is the SENSE DATA LIST LENGTH field.
    pub sense: &'a [u8],
}

impl<'a> AerReq<'a> {
    pub const HEADER_LEN: usize = aer_req::LEN;

    pub fn parse(iu: &'a [u8]) -> Result<Self, WireError> {
        use aer_req as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_AER_REQ", Opcode::AER_REQ)?;
        // The sense data must be wholly inside the IU.
        let sense_len = len32(get_be32(b, f::SENSE_DATA_LEN));
        let sense = take_at(iu, f::LEN, sense_len, "SRP_AER_REQ sense data")?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            sol_not: get_u8(b, f::SOL_NOT),
            req_lim_delta: get_be32(b, f::REQ_LIM_DELTA),
            lun: get(b, f::LUN),
            sense,
        })
    }

    /// Total IU length `emit` writes.
    pub fn emitted_len(&self) -> usize {
        Self::HEADER_LEN.saturating_add(self.sense.len())
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use aer_req as f;
        let sense_len = u32_len("SRP_AER_REQ sense length", self.sense.len())?;
        let n = self.emitted_len();
        let (b, rest) = check_out_split::<{ f::LEN }>(buf, n)?;
        set_u8(b, f::OPCODE, Opcode::AER_REQ.0);
        set_u8(b, f::SOL_NOT, self.sol_not);
        set_be32(b, f::REQ_LIM_DELTA, self.req_lim_delta);
        set_be64(b, f::TAG, self.tag.0);
        set(b, f::LUN, &self.lun);
        set_be32(b, f::SENSE_DATA_LEN, sense_len);
        put_at(rest, 0, self.sense)?;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Task management
// ---------------------------------------------------------------------------

/// TASK MANAGEMENT FUNCTIONS code of SRP_TSK_MGMT (srp.h `SRP_TSK_*`).
/// Any byte survives parsing; the protocol layer answers unknown codes with
/// [`Rsp::TM_NOT_SUPPORTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TmFunction(pub u8);

impl TmFunction {
    pub const ABORT_TASK: TmFunction = TmFunction(0x01);
    pub const ABORT_TASK_SET: TmFunction = TmFunction(0x02);
    pub const CLEAR_TASK_SET: TmFunction = TmFunction(0x04);
    pub const LUN_RESET: TmFunction = TmFunction(0x08);
    pub const CLEAR_ACA: TmFunction = TmFunction(0x40);
}

layout! {
    /// SRP_TSK_MGMT (r16a 6.7; srp.h `struct srp_tsk_mgmt`).
    mod tsk_mgmt, LEN = 48;
    OPCODE: 0..1,
    /// SCSOLNT / UCSOLNT bits.
    SOL_NOT: 1..2,
    RESERVED_2: 2..8,
    TAG: 8..16,
    RESERVED_16: 16..20,
    LUN: 20..28,
    RESERVED_28: 28..30,
    /// TASK MANAGEMENT FUNCTIONS.
    FUNCTION: 30..31,
    RESERVED_31: 31..32,
    /// TAG OF TASK TO BE MANAGED.
    TASK_TAG: 32..40,
    RESERVED_40: 40..48,
}

/// SRP_TSK_MGMT (48 bytes; r16a 6.7, srp.h `struct srp_tsk_mgmt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmt {
    pub tag: Tag,
    /// [`SCSOLNT`] / [`UCSOLNT`] bits.
    pub sol_not: u8,
    pub lun: Lun,
    pub function: TmFunction,
    /// TAG OF TASK TO BE MANAGED (ABORT TASK only).
    pub task_tag: Tag,
}

impl TaskMgmt {
    pub const LEN: usize = tsk_mgmt::LEN;

    pub fn parse(iu: &[u8]) -> Result<Self, WireError> {
        use tsk_mgmt as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_TSK_MGMT", Opcode::TSK_MGMT)?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            sol_not: get_u8(b, f::SOL_NOT),
            lun: get(b, f::LUN),
            function: TmFunction(get_u8(b, f::FUNCTION)),
            task_tag: Tag(get_be64(b, f::TASK_TAG)),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use tsk_mgmt as f;
        let b = check_out_len::<{ f::LEN }>(buf)?;
        set_u8(b, f::OPCODE, Opcode::TSK_MGMT.0);
        set_u8(b, f::SOL_NOT, self.sol_not);
        set_be64(b, f::TAG, self.tag.0);
        set(b, f::LUN, &self.lun);
        set_u8(b, f::FUNCTION, self.function.0);
        set_be64(b, f::TASK_TAG, self.task_tag.0);
        Ok(f::LEN)
    }
}

// ---------------------------------------------------------------------------
// SRP_RSP
// ---------------------------------------------------------------------------

/// Four bytes of response data per RSP_CODE: three reserved bytes, then the
/// code (ib_srpt `srpt_build_tskmgmt_rsp`: `srp_rsp->data[3] = rsp_code`).
static TM_RSP_DATA: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        t[i][3] = i as u8;
        i += 1;
    }
    t
};

layout! {
    /// SRP_RSP header (r16a 6.9; srp.h `struct srp_rsp`); RESPONSE DATA and
    /// then SENSE DATA follow at `LEN`.
    mod rsp, LEN = 36;
    OPCODE: 0..1,
    /// SOLNT (bit 0).
    SOL_NOT: 1..2,
    RESERVED_2: 2..4,
    REQ_LIM_DELTA: 4..8,
    TAG: 8..16,
    RESERVED_16: 16..18,
    /// DIUNDER, DIOVER, DOUNDER, DOOVER, SNSVALID, RSPVALID.
    FLAGS: 18..19,
    STATUS: 19..20,
    /// DATA-OUT RESIDUAL COUNT.
    DATA_OUT_RES_CNT: 20..24,
    /// DATA-IN RESIDUAL COUNT.
    DATA_IN_RES_CNT: 24..28,
    /// SENSE DATA LIST LENGTH.
    SENSE_DATA_LEN: 28..32,
    /// RESPONSE DATA LIST LENGTH.
    RESP_DATA_LEN: 32..36,
}

/// SRP_RSP (36-byte header + response data + sense data; r16a 6.9, srp.h
/// `struct srp_rsp`).
///
/// Order after the header: RESPONSE DATA first, then SENSE DATA. ib_srp
/// reads the sense at `rsp->data + be32_to_cpu(rsp->resp_data_len)` when
/// SNSVALID is set, and the task management status at `rsp->data[3]` when
/// `resp_data_len >= 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsp<'a> {
    pub tag: Tag,
    /// [`SOLNT`] or 0.
    pub sol_not: u8,
    pub req_lim_delta: u32,
    /// DIUNDER/DIOVER/DOUNDER/DOOVER/SNSVALID/RSPVALID. On `emit`, RSPVALID
    /// and SNSVALID are recomputed from `resp_data` / `sense` being
    /// non-empty.
    pub flags: u8,
    /// SCSI STATUS (ib_srp: `scmnd->result = rsp->status`).
    pub status: u8,
    pub data_out_res_cnt: u32,
    pub data_in_res_cnt: u32,
    pub sense: &'a [u8],
    pub resp_data: &'a [u8],
}

impl<'a> Rsp<'a> {
    pub const HEADER_LEN: usize = rsp::LEN;

    pub const RSPVALID: u8 = 1 << 0;
    pub const SNSVALID: u8 = 1 << 1;
    pub const DOOVER: u8 = 1 << 2;
    pub const DOUNDER: u8 = 1 << 3;
    pub const DIOVER: u8 = 1 << 4;
    pub const DIUNDER: u8 = 1 << 5;

    // RSP_CODE values for task management responses (ib_srpt.h "table 24
    // in the SRP specification"; OFED srp.h RESPONSE_CODE_VALUE).
    /// Task management function complete (also: no failure).
    pub const TM_COMPLETE: u8 = 0x00;
    /// Invalid fields in the SRP_TSK_MGMT request.
    pub const TM_INVALID_FIELDS: u8 = 0x02;
    /// Task management function not supported.
    pub const TM_NOT_SUPPORTED: u8 = 0x04;
    /// Task management function failed.
    pub const TM_FAILED: u8 = 0x05;

    /// A response to a SRP_TSK_MGMT: RSPVALID and 4 bytes of response data
    /// whose last byte is `rsp_code`, as ib_srpt builds it.
    pub fn task_mgmt(tag: Tag, req_lim_delta: u32, rsp_code: u8) -> Rsp<'static> {
        Rsp {
            tag,
            sol_not: 0,
            req_lim_delta,
            flags: Self::RSPVALID,
            status: 0,
            data_out_res_cnt: 0,
            data_in_res_cnt: 0,
            sense: &[],
            resp_data: &TM_RSP_DATA[usize::from(rsp_code)],
        }
    }

    /// A response to a SRP_CMD with SCSI `status` and optional sense data
    /// (no residuals; set `flags` and the counts for those).
    pub fn scsi(tag: Tag, req_lim_delta: u32, status: u8, sense: &'a [u8]) -> Self {
        Rsp {
            tag,
            sol_not: 0,
            req_lim_delta,
            flags: if sense.is_empty() { 0 } else { Self::SNSVALID },
            status,
            data_out_res_cnt: 0,
            data_in_res_cnt: 0,
            sense,
            resp_data: &[],
        }
    }

    /// The RSP_CODE (byte 3 of the response data) if there are at least 4
    /// bytes of response data, as ib_srp reads it.
    pub fn response_code(&self) -> Option<u8> {
        self.resp_data.get(3).copied()
    }

    /// Total IU length `emit` writes.
    pub fn emitted_len(&self) -> usize {
        Self::HEADER_LEN
            .saturating_add(self.resp_data.len())
            .saturating_add(self.sense.len())
    }

    pub fn parse(iu: &'a [u8]) -> Result<Self, WireError> {
        use rsp as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_RSP", Opcode::RSP)?;
        let sense_len = len32(get_be32(b, f::SENSE_DATA_LEN));
        let resp_len = len32(get_be32(b, f::RESP_DATA_LEN));
        // Response data, then sense data; both wholly inside the IU. The
        // lengths are honoured as ib_srp does, whatever the VALID bits say.
        let resp_data = take_at(iu, f::LEN, resp_len, "SRP_RSP response data")?;
        let sense = take_at(iu, f::LEN + resp_data.len(), sense_len, "SRP_RSP sense data")?;
        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            sol_not: get_u8(b, f::SOL_NOT),
            req_lim_delta: get_be32(b, f::REQ_LIM_DELTA),
            flags: get_u8(b, f::FLAGS),
            status: get_u8(b, f::STATUS),
            data_out_res_cnt: get_be32(b, f::DATA_OUT_RES_CNT),
            data_in_res_cnt: get_be32(b, f::DATA_IN_RES_CNT),
            sense,
            resp_data,
        })
    }

    /// Write header, response data, then sense data; returns the IU length.
    /// The caller sizes `buf` to the channel's max_ti_iu_len; ib_srpt
    /// truncates sense to `max_ti_iu_len - 36`, we report
    /// [`WireError::BufferTooSmall`] instead.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use rsp as f;
        let sense_len = u32_len("SRP_RSP sense length", self.sense.len())?;
        let resp_len = u32_len("SRP_RSP response data length", self.resp_data.len())?;
        let mut flags = self.flags & !(Self::RSPVALID | Self::SNSVALID);
        if !self.resp_data.is_empty() {
            flags |= Self::RSPVALID;
        }
        if !self.sense.is_empty() {
            flags |= Self::SNSVALID;
        }
        let n = self.emitted_len();
        let (b, rest) = check_out_split::<{ f::LEN }>(buf, n)?;
        set_u8(b, f::OPCODE, Opcode::RSP.0);
        set_u8(b, f::SOL_NOT, self.sol_not);
        set_be32(b, f::REQ_LIM_DELTA, self.req_lim_delta);
        set_be64(b, f::TAG, self.tag.0);
        set_u8(b, f::FLAGS, flags);
        set_u8(b, f::STATUS, self.status);
        set_be32(b, f::DATA_OUT_RES_CNT, self.data_out_res_cnt);
        set_be32(b, f::DATA_IN_RES_CNT, self.data_in_res_cnt);
        set_be32(b, f::SENSE_DATA_LEN, sense_len);
        set_be32(b, f::RESP_DATA_LEN, resp_len);
        put_at(rest, 0, self.resp_data)?;
        put_at(rest, self.resp_data.len(), self.sense)?;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Data buffer descriptors and SRP_CMD: `srp_cmd.rs`
// ---------------------------------------------------------------------------

#[path = "srp_cmd.rs"]
mod command_iu;
pub use command_iu::*;

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

/// Any SRP IU, parsed according to its opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iu<'a> {
    LoginReq(LoginRequest),
    TskMgmt(TaskMgmt),
    Cmd(Cmd<'a>),
    ILogout(ILogout),
    LoginRsp(LoginResponse),
    Rsp(Rsp<'a>),
    LoginRej(LoginReject),
    TLogout(TLogout),
    CredReq(CredReq),
    AerReq(AerReq<'a>),
    CredRsp(CredRsp),
    AerRsp(AerRsp),
}

impl<'a> Iu<'a> {
    /// Parse any IU by its first byte (64-byte IU form for SRP_LOGIN_REQ).
    pub fn parse(iu: &'a [u8]) -> Result<Self, WireError> {
        Ok(match peek_opcode(iu)? {
            Opcode::LOGIN_REQ => Self::LoginReq(LoginRequest::parse(iu)?),
            Opcode::TSK_MGMT => Self::TskMgmt(TaskMgmt::parse(iu)?),
            Opcode::CMD => Self::Cmd(Cmd::parse(iu)?),
            Opcode::I_LOGOUT => Self::ILogout(ILogout::parse(iu)?),
            Opcode::LOGIN_RSP => Self::LoginRsp(LoginResponse::parse(iu)?),
            Opcode::RSP => Self::Rsp(Rsp::parse(iu)?),
            Opcode::LOGIN_REJ => Self::LoginRej(LoginReject::parse(iu)?),
            Opcode::T_LOGOUT => Self::TLogout(TLogout::parse(iu)?),
            Opcode::CRED_REQ => Self::CredReq(CredReq::parse(iu)?),
            Opcode::AER_REQ => Self::AerReq(AerReq::parse(iu)?),
            Opcode::CRED_RSP => Self::CredRsp(CredRsp::parse(iu)?),
            Opcode::AER_RSP => Self::AerRsp(AerRsp::parse(iu)?),
            Opcode(other) => return Err(WireError::UnknownOpcode(other)),
        })
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            Self::LoginReq(_) => Opcode::LOGIN_REQ,
            Self::TskMgmt(_) => Opcode::TSK_MGMT,
            Self::Cmd(_) => Opcode::CMD,
            Self::ILogout(_) => Opcode::I_LOGOUT,
            Self::LoginRsp(_) => Opcode::LOGIN_RSP,
            Self::Rsp(_) => Opcode::RSP,
            Self::LoginRej(_) => Opcode::LOGIN_REJ,
            Self::TLogout(_) => Opcode::T_LOGOUT,
            Self::CredReq(_) => Opcode::CRED_REQ,
            Self::AerReq(_) => Opcode::AER_REQ,
            Self::CredRsp(_) => Opcode::CRED_RSP,
            Self::AerRsp(_) => Opcode::AER_RSP,
        }
    }

    /// The IU's tag.
    pub fn tag(&self) -> Tag {
        match self {
            Self::LoginReq(x) => x.tag,
            Self::TskMgmt(x) => x.tag,
            Self::Cmd(x) => x.tag,
            Self::ILogout(x) => x.tag,
            Self::LoginRsp(x) => x.tag,
            Self::Rsp(x) => x.tag,
            Self::LoginRej(x) => x.tag,
            Self::TLogout(x) => x.tag,
            Self::CredReq(x) => x.tag,
            Self::AerReq(x) => x.tag,
            Self::CredRsp(x) => x.tag,
            Self::AerRsp(x) => x.tag,
        }
    }
}

#[cfg(test)]
#[path = "srp_tests.rs"]
mod tests;
