//! SRP data buffer descriptors (direct, indirect, immediate) and the
//! SRP_CMD IU that carries them (SRP r16a 5.5, 6.8; srp.h).

use super::*;

// ---------------------------------------------------------------------------
// Data buffer descriptors
// ---------------------------------------------------------------------------

layout! {
    /// Direct data buffer descriptor, also the entry of an indirect table
    /// (srp.h `struct srp_direct_buf`).
    mod direct_desc, LEN = 16;
    /// VIRTUAL ADDRESS.
    VA: 0..8,
    /// MEMORY HANDLE (the R_Key on InfiniBand).
    RKEY: 8..12,
    /// DATA LENGTH.
    DATA_LEN: 12..16,
}

layout! {
    /// Indirect data buffer descriptor header (srp.h
    /// `struct srp_indirect_buf`); the in-IU part of the table follows at
    /// `LEN`, DESCRIPTOR COUNT direct descriptors.
    mod indirect_desc, LEN = 20;
    /// Where the whole table is: a direct descriptor.
    TABLE_DESC: 0..16,
    /// TOTAL LENGTH of the data the table describes.
    TOTAL_LEN: 16..20,
}

layout! {
    /// Immediate data buffer descriptor (SRP-2; srp.h `struct srp_imm_buf`).
    mod imm_desc, LEN = 4;
    /// Length of the immediate data.
    DATA_LEN: 0..4,
}

/// A direct data buffer descriptor / memory descriptor (16 bytes; srp.h
/// `struct srp_direct_buf`: virtual address, memory handle (rkey), length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DirectDesc {
    pub va: u64,
    pub rkey: u32,
    pub len: u32,
}

impl DirectDesc {
    pub const LEN: usize = direct_desc::LEN;

    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(Self::decode(check_len(bytes, "direct data buffer descriptor")?))
    }

    /// Decodes exactly 16 bytes: cannot fail (the data path reads every
    /// descriptor of a table through this).
    #[inline]
    pub fn decode(b: &[u8; Self::LEN]) -> Self {
        use direct_desc as f;
        Self {
            va: get_be64(b, f::VA),
            rkey: get_be32(b, f::RKEY),
            len: get_be32(b, f::DATA_LEN),
        }
    }

    /// The 16 bytes of this descriptor.
    fn encode(&self) -> [u8; Self::LEN] {
        use direct_desc as f;
        let mut b = [0u8; f::LEN];
        set_be64(&mut b, f::VA, self.va);
        set_be32(&mut b, f::RKEY, self.rkey);
        set_be32(&mut b, f::DATA_LEN, self.len);
        b
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        *check_out_len::<{ direct_desc::LEN }>(buf)? = self.encode();
        Ok(Self::LEN)
    }

    /// The descriptors of an indirect table fetched separately (e.g. by
    /// RDMA READ of `IndirectDesc::table`). The length must be a whole
    /// number of 16-byte descriptors.
    pub fn parse_table(bytes: &[u8]) -> Result<DirectDescIter<'_>, WireError> {
        if bytes.len() % Self::LEN != 0 {
            return Err(WireError::BadIndirectTableLength(
                u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            ));
        }
        Ok(DirectDescIter { rest: bytes })
    }

    /// Descriptor `i` of a table (`None` past the end).
    pub fn table_get(bytes: &[u8], i: usize) -> Option<DirectDesc> {
        let start = i.checked_mul(Self::LEN)?;
        let b = bytes.get(start..start.checked_add(Self::LEN)?)?;
        Some(Self::decode(b.try_into().ok()?))
    }
}

/// Iterator over consecutive 16-byte direct descriptors.
#[derive(Debug, Clone)]
pub struct DirectDescIter<'a> {
    rest: &'a [u8],
}

impl Iterator for DirectDescIter<'_> {
    type Item = DirectDesc;

    fn next(&mut self) -> Option<DirectDesc> {
        let (head, tail) = self.rest.split_first_chunk::<{ DirectDesc::LEN }>()?;
        self.rest = tail;
        Some(DirectDesc::decode(head))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / DirectDesc::LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for DirectDescIter<'_> {}

/// An indirect data buffer descriptor (srp.h `struct srp_indirect_buf`):
/// table descriptor, TOTAL LENGTH, then the first `in_iu_count()`
/// descriptors of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndirectDesc<'a> {
    /// Where the full table lives in initiator memory; `table.len` is
    /// 16 × the total descriptor count (ib_srp: `table_desc.len =
    /// state.ndesc * sizeof(struct srp_direct_buf)`).
    pub table: DirectDesc,
    /// Sum of the lengths of all descriptors in the table (ib_srp:
    /// `indirect_hdr->len = state.total_len`).
    pub total_len: u32,
    /// The descriptors present in the IU: the first (DESCRIPTOR COUNT)
    /// entries of the table, 16 bytes each.
    pub partial: &'a [u8],
}

impl<'a> IndirectDesc<'a> {
    /// Table descriptor + total length.
    pub const HEADER_LEN: usize = indirect_desc::LEN;

    /// Descriptors present in the IU.
    pub fn in_iu_count(&self) -> usize {
        self.partial.len() / DirectDesc::LEN
    }

    /// Descriptors in the whole table.
    pub fn total_count(&self) -> usize {
        len32(self.table.len) / DirectDesc::LEN
    }

    /// Whether the whole table is in the IU, so no RDMA READ of the table
    /// is needed. If not, this is an "external" table (ib_srp with
    /// `allow_ext_sg`): fetch `table` and use [`DirectDesc::parse_table`].
    pub fn is_complete_in_iu(&self) -> bool {
        self.in_iu_count() == self.total_count()
    }

    /// In-IU descriptor `i`.
    pub fn in_iu(&self, i: usize) -> Option<DirectDesc> {
        DirectDesc::table_get(self.partial, i)
    }

    /// The in-IU descriptors, in order.
    pub fn iter(&self) -> DirectDescIter<'a> {
        DirectDescIter { rest: self.partial }
    }

    /// Bytes this descriptor occupies in the IU.
    pub fn wire_len(&self) -> usize {
        Self::HEADER_LEN.saturating_add(self.partial.len())
    }
}

/// Immediate data buffer descriptor (SRP-2, srp.h `struct srp_imm_buf`: a
/// 4-byte length). The data is in the same IU at the login-negotiated
/// immediate data offset, not right after the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImmediateDesc {
    /// Length of the immediate data.
    pub len: u32,
    /// Byte offset in the IU just past this 4-byte descriptor. Filled by
    /// `parse`; ignored by `emit` (recomputed from the layout).
    pub desc_end: usize,
}

impl ImmediateDesc {
    pub const LEN: usize = imm_desc::LEN;

    /// The immediate data of `iu` (the whole received IU this descriptor
    /// was parsed from), given the negotiated `imm_data_offset`.
    pub fn data<'a>(&self, iu: &'a [u8], imm_data_offset: usize) -> Result<&'a [u8], WireError> {
        // ib_srpt: "The immediate data buffer descriptor must occur before
        // the immediate data itself".
        if self.desc_end > imm_data_offset {
            return Err(WireError::ImmediateDataOverlap {
                desc_end: self.desc_end,
                imm_data_offset,
            });
        }
        // ib_srpt: "if (recv_ioctx->byte_len < req_size) ... Received too
        // few data", req_size = imm_data_offset + len.
        let end = imm_data_offset.saturating_add(len32(self.len));
        iu.get(imm_data_offset..end).ok_or(WireError::TooShort {
            what: "SRP_CMD immediate data",
            need: end,
            have: iu.len(),
        })
    }
}

/// One direction's data buffer descriptor in an SRP_CMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDesc<'a> {
    None,
    Direct(DirectDesc),
    Indirect(IndirectDesc<'a>),
    Immediate(ImmediateDesc),
}

impl<'a> DataDesc<'a> {
    pub fn format(&self) -> DescFormat {
        match self {
            Self::None => DescFormat::None,
            Self::Direct(_) => DescFormat::Direct,
            Self::Indirect(_) => DescFormat::Indirect,
            Self::Immediate(_) => DescFormat::Immediate,
        }
    }

    /// The data length the descriptor announces: the direct length, the
    /// indirect TOTAL LENGTH, the immediate length, or 0.
    pub fn data_len(&self) -> u32 {
        match self {
            Self::None => 0,
            Self::Direct(d) => d.len,
            Self::Indirect(i) => i.total_len,
            Self::Immediate(i) => i.len,
        }
    }

    /// Bytes the descriptor occupies in the IU.
    pub fn wire_len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Direct(_) => DirectDesc::LEN,
            Self::Indirect(i) => i.wire_len(),
            Self::Immediate(_) => ImmediateDesc::LEN,
        }
    }

    /// The DESCRIPTOR COUNT field value `Cmd::with_data_*` uses: the in-IU
    /// count for indirect (as ib_srp sends it), 0 otherwise (ib_srp leaves
    /// the count 0 for direct and immediate descriptors).
    fn natural_count(&self) -> u8 {
        match self {
            Self::Indirect(i) => u8::try_from(i.in_iu_count()).unwrap_or(u8::MAX),
            _ => 0,
        }
    }

    /// Parse the descriptor of format `fmt` (with DESCRIPTOR COUNT `count`)
    /// at offset `at` of `iu`; `what` names it in errors. Returns the
    /// descriptor and the offset just past it.
    #[inline]
    fn parse_at(
        iu: &'a [u8],
        at: usize,
        fmt: DescFormat,
        count: u8,
        what: &'static str,
    ) -> Result<(Self, usize), WireError> {
        Ok(match fmt {
            DescFormat::None => (Self::None, at),
            // The DESCRIPTOR COUNT is not used for direct descriptors: ib_srp
            // sends 0, other initiators 1, and ib_srpt ignores it.
            DescFormat::Direct => {
                let b = check_len_at::<{ direct_desc::LEN }>(iu, at, what)?;
                (Self::Direct(DirectDesc::decode(b)), at + direct_desc::LEN)
            }
            DescFormat::Indirect => {
                use indirect_desc as f;
                let b = check_len_at::<{ f::LEN }>(iu, at, what)?;
                let table = DirectDesc::decode(&get(b, f::TABLE_DESC));
                let total_len = get_be32(b, f::TOTAL_LEN);
                // For indirect descriptors the count is the number of
                // descriptors in the IU (ib_srp: `data_*_desc_cnt = count`
                // with count = min(ndesc, cmd_sg_cnt)); they must all fit.
                let partial = take_at(iu, at + f::LEN, usize::from(count) * DirectDesc::LEN, what)?;
                // The table descriptor describes whole 16-byte descriptors.
                if len32(table.len) % DirectDesc::LEN != 0 {
                    return Err(WireError::BadIndirectTableLength(table.len));
                }
                let ind = IndirectDesc {
                    table,
                    total_len,
                    partial,
                };
                // The in-IU descriptors are the head of the table, so they
                // cannot outnumber it. More in the table than in the IU is
                // an external table, which we serve (ib_srpt rejects it:
                // "nbufs > data_out_desc_cnt + data_in_desc_cnt").
                if ind.in_iu_count() > ind.total_count() {
                    return Err(WireError::DescriptorCountMismatch {
                        in_iu: ind.in_iu_count(),
                        total: ind.total_count(),
                    });
                }
                (Self::Indirect(ind), at + f::LEN + partial.len())
            }
            DescFormat::Immediate => {
                let b = check_len_at::<{ imm_desc::LEN }>(iu, at, what)?;
                let desc_end = at + imm_desc::LEN;
                let len = get_be32(b, imm_desc::DATA_LEN);
                (Self::Immediate(ImmediateDesc { len, desc_end }), desc_end)
            }
        })
    }

    /// Write the descriptor at offset `at` of `buf`; returns the offset
    /// just past it.
    fn emit_at(&self, buf: &mut [u8], at: usize) -> Result<usize, WireError> {
        match self {
            Self::None => Ok(at),
            Self::Direct(d) => {
                put_at(buf, at, &d.encode())?;
                Ok(at + direct_desc::LEN)
            }
            Self::Indirect(i) => {
                use indirect_desc as f;
                let mut b = [0u8; f::LEN];
                set(&mut b, f::TABLE_DESC, &i.table.encode());
                set_be32(&mut b, f::TOTAL_LEN, i.total_len);
                put_at(buf, at, &b)?;
                put_at(buf, at + f::LEN, i.partial)?;
                Ok(at + f::LEN + i.partial.len())
            }
            Self::Immediate(i) => {
                let mut b = [0u8; imm_desc::LEN];
                set_be32(&mut b, imm_desc::DATA_LEN, i.len);
                put_at(buf, at, &b)?;
                Ok(at + imm_desc::LEN)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// SRP_CMD
// ---------------------------------------------------------------------------

layout! {
    /// SRP_CMD header (r16a 6.8; srp.h `struct srp_cmd`). The additional
    /// CDB bytes follow at `LEN`, then the DATA-OUT descriptor, then the
    /// DATA-IN descriptor.
    mod cmd, LEN = 48;
    OPCODE: 0..1,
    /// SCSOLNT / UCSOLNT bits.
    SOL_NOT: 1..2,
    RESERVED_2: 2..5,
    /// BUFFER FORMAT: DATA-OUT format (high nibble), DATA-IN (low nibble).
    BUF_FMT: 5..6,
    /// DATA-OUT BUFFER DESCRIPTOR COUNT.
    DATA_OUT_DESC_CNT: 6..7,
    /// DATA-IN BUFFER DESCRIPTOR COUNT.
    DATA_IN_DESC_CNT: 7..8,
    TAG: 8..16,
    RESERVED_16: 16..20,
    LUN: 20..28,
    RESERVED_28: 28..29,
    /// TASK ATTRIBUTE (bits 2:0).
    TASK_ATTR: 29..30,
    RESERVED_30: 30..31,
    /// ADDITIONAL CDB LENGTH: 4-byte words in bits 7:2, bits 1:0 reserved.
    ADD_CDB_LEN: 31..32,
    /// The first 16 bytes of the CDB.
    CDB: 32..48,
}

/// SRP_CMD (r16a 6.8, srp.h `struct srp_cmd`): 48-byte header (with a
/// 16-byte CDB), additional CDB bytes, the DATA-OUT descriptor, the DATA-IN
/// descriptor, and, for SRP-2 immediate data, the data at the negotiated
/// immediate data offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cmd<'a> {
    pub tag: Tag,
    /// [`SCSOLNT`] / [`UCSOLNT`] bits.
    pub sol_not: u8,
    pub data_out_format: DescFormat,
    pub data_in_format: DescFormat,
    /// DATA-OUT BUFFER DESCRIPTOR COUNT as received (meaningful for
    /// indirect only: the in-IU count).
    pub data_out_desc_cnt: u8,
    /// DATA-IN BUFFER DESCRIPTOR COUNT as received.
    pub data_in_desc_cnt: u8,
    pub lun: Lun,
    /// The TASK ATTRIBUTE byte (attribute in bits 2:0, see `TASK_ATTR_*`).
    pub task_attr: u8,
    /// The CDB: the 16-byte CDB field plus the additional CDB bytes.
    pub cdb: &'a [u8],
    pub data_out: DataDesc<'a>,
    pub data_in: DataDesc<'a>,
}

impl<'a> Cmd<'a> {
    pub const HEADER_LEN: usize = cmd::LEN;
    /// Largest additional CDB: 6 bits of 4-byte words.
    pub const MAX_ADD_CDB_LEN: usize = 0xfc;

    /// TASK ATTRIBUTE field mask (ib_srpt.h "table 21").
    pub const TASK_ATTR_MASK: u8 = 0x07;
    pub const TASK_ATTR_SIMPLE: u8 = 0x0;
    pub const TASK_ATTR_HEAD_OF_QUEUE: u8 = 0x1;
    pub const TASK_ATTR_ORDERED: u8 = 0x2;
    pub const TASK_ATTR_ACA: u8 = 0x4;

    /// A command without data transfer; add descriptors with
    /// [`Cmd::with_data_out`] / [`Cmd::with_data_in`].
    pub fn new(tag: Tag, lun: Lun, cdb: &'a [u8]) -> Self {
        Self {
            tag,
            sol_not: 0,
            data_out_format: DescFormat::None,
            data_in_format: DescFormat::None,
            data_out_desc_cnt: 0,
            data_in_desc_cnt: 0,
            lun,
            task_attr: Self::TASK_ATTR_SIMPLE,
            cdb,
            data_out: DataDesc::None,
            data_in: DataDesc::None,
        }
    }

    /// Set the DATA-OUT descriptor with a matching format and count.
    pub fn with_data_out(mut self, d: DataDesc<'a>) -> Self {
        self.data_out_format = d.format();
        self.data_out_desc_cnt = d.natural_count();
        self.data_out = d;
        self
    }

    /// Set the DATA-IN descriptor with a matching format and count.
    pub fn with_data_in(mut self, d: DataDesc<'a>) -> Self {
        self.data_in_format = d.format();
        self.data_in_desc_cnt = d.natural_count();
        self.data_in = d;
        self
    }

    /// The BUFFER FORMAT byte.
    pub fn buf_fmt(&self) -> u8 {
        ((self.data_out_format as u8) << 4) | self.data_in_format as u8
    }

    /// Offset of the DATA-OUT descriptor in the IU (48 + additional CDB).
    pub fn desc_offset(&self) -> usize {
        Self::HEADER_LEN.saturating_add(self.cdb.len().saturating_sub(16).next_multiple_of(4))
    }

    /// Offset in the IU of the first in-IU descriptor of the DATA-IN
    /// (`data_in`) or DATA-OUT indirect descriptor: after the additional
    /// CDB, the DATA-OUT descriptor (for DATA-IN) and the indirect header.
    pub fn in_iu_table_offset(&self, data_in: bool) -> usize {
        let mut at = self.desc_offset();
        if data_in {
            at = at.saturating_add(self.data_out.wire_len());
        }
        at.saturating_add(IndirectDesc::HEADER_LEN)
    }

    pub fn parse(iu: &'a [u8]) -> Result<Cmd<'a>, WireError> {
        use cmd as f;
        let b = fixed::<{ f::LEN }>(iu, "SRP_CMD", Opcode::CMD)?;
        let buf_fmt = get_u8(b, f::BUF_FMT);
        let data_out_desc_cnt = get_u8(b, f::DATA_OUT_DESC_CNT);
        let data_in_desc_cnt = get_u8(b, f::DATA_IN_DESC_CNT);
        // ib_srpt: "the lower two bits of the 'ADDITIONAL CDB LENGTH' field
        // are reserved and the size in bytes of this field is four times the
        // value specified in bits 3..7. Hence the '& ~3'".
        let add_cdb_len = usize::from(get_u8(b, f::ADD_CDB_LEN) & 0xfc);
        // The CDB field and the additional CDB bytes right after the header.
        let cdb = take_at(
            iu,
            f::CDB.start,
            f::CDB.len() + add_cdb_len,
            "SRP_CMD additional CDB",
        )?;

        // High nibble DATA-OUT, low nibble DATA-IN. Values 4..15 are
        // reserved; immediate (3) exists only for DATA-OUT (ib_srpt tests
        // `(srp_cmd->buf_fmt >> 4) == SRP_DATA_DESC_IMM` only).
        let bad = WireError::BadDescriptorFormat(buf_fmt);
        let data_out_format = DescFormat::from_nibble(buf_fmt >> 4).ok_or(bad)?;
        let data_in_format = match DescFormat::from_nibble(buf_fmt & 0x0f) {
            None | Some(DescFormat::Immediate) => return Err(bad),
            Some(fmt) => fmt,
        };

        // Descriptors follow the additional CDB, DATA-OUT first (ib_srpt
        // `srpt_get_desc_buf`; ibmvscsis: "if (dir == DMA_FROM_DEVICE)
        // offset += data_out_desc_size(srp_cmd)").
        let (data_out, at) = DataDesc::parse_at(
            iu,
            f::LEN + add_cdb_len,
            data_out_format,
            data_out_desc_cnt,
            "SRP_CMD data-out descriptor",
        )?;
        let (data_in, _) = DataDesc::parse_at(
            iu,
            at,
            data_in_format,
            data_in_desc_cnt,
            "SRP_CMD data-in descriptor",
        )?;

        Ok(Self {
            tag: Tag(get_be64(b, f::TAG)),
            sol_not: get_u8(b, f::SOL_NOT),
            data_out_format,
            data_in_format,
            data_out_desc_cnt,
            data_in_desc_cnt,
            lun: get(b, f::LUN),
            task_attr: get_u8(b, f::TASK_ATTR),
            cdb,
            data_out,
            data_in,
        })
    }

    /// Length of the IU `emit` writes (header, additional CDB, descriptors;
    /// not immediate data).
    pub fn emitted_len(&self) -> usize {
        self.desc_offset()
            .saturating_add(self.data_out.wire_len())
            .saturating_add(self.data_in.wire_len())
    }

    fn check(&self) -> Result<(), WireError> {
        if self.cdb.len().saturating_sub(16) > Self::MAX_ADD_CDB_LEN {
            return Err(WireError::InvalidField("CDB longer than 268 bytes"));
        }
        if self.data_out_format != self.data_out.format() || self.data_in_format != self.data_in.format() {
            return Err(WireError::InvalidField(
                "descriptor format does not match descriptor",
            ));
        }
        if self.data_in_format == DescFormat::Immediate {
            return Err(WireError::InvalidField("immediate data-in descriptor"));
        }
        for (d, cnt) in [
            (&self.data_out, self.data_out_desc_cnt),
            (&self.data_in, self.data_in_desc_cnt),
        ] {
            if let DataDesc::Indirect(i) = d {
                if i.partial.len() % DirectDesc::LEN != 0 || usize::from(cnt) != i.in_iu_count() {
                    return Err(WireError::InvalidField(
                        "indirect descriptor count does not match the in-IU descriptors",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Build the IU (header, CDB padded with zeros to 16 + a multiple of 4
    /// bytes, descriptors). The descriptor counts are written as they are
    /// in `self`; for indirect descriptors they must equal the in-IU count.
    /// Returns the length written; immediate data is not written (see
    /// [`Cmd::emit_with_immediate`]).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        use cmd as f;
        self.check()?;
        let (cdb, add_cdb) = self.cdb.split_at(self.cdb.len().min(f::CDB.len()));
        let add = add_cdb.len().next_multiple_of(4);
        // ib_srp writes the byte count (a multiple of 4), i.e. words << 2.
        let add_cdb_len = u8::try_from(add).map_err(|_| WireError::InvalidField("additional CDB length"))?;
        let (b, rest) = check_out_split::<{ f::LEN }>(buf, self.emitted_len())?;
        set_u8(b, f::OPCODE, Opcode::CMD.0);
        set_u8(b, f::SOL_NOT, self.sol_not);
        set_u8(b, f::BUF_FMT, self.buf_fmt());
        set_u8(b, f::DATA_OUT_DESC_CNT, self.data_out_desc_cnt);
        set_u8(b, f::DATA_IN_DESC_CNT, self.data_in_desc_cnt);
        set_be64(b, f::TAG, self.tag.0);
        set(b, f::LUN, &self.lun);
        set_u8(b, f::TASK_ATTR, self.task_attr);
        set_u8(b, f::ADD_CDB_LEN, add_cdb_len);
        // A CDB shorter than 16 bytes is zero-padded, and so is the
        // additional CDB to a multiple of 4 bytes.
        put_at(&mut b[f::CDB], 0, cdb)?;
        put_at(rest, 0, add_cdb)?;
        put_at(rest, add_cdb.len(), &[0; 3][..add - add_cdb.len()])?;
        // `rest` starts at the end of the header.
        let at = self.data_out.emit_at(rest, add)?;
        let end = self.data_in.emit_at(rest, at)?;
        Ok(f::LEN + end)
    }

    /// Build the IU with immediate `data` at `imm_data_offset` (zero fill in
    /// between), as ib_srp does with `SRP_IMM_DATA_OFFSET`. `data_out` must
    /// be an immediate descriptor whose length equals `data.len()`.
    /// Returns `imm_data_offset + data.len()`.
    pub fn emit_with_immediate(
        &self,
        buf: &mut [u8],
        imm_data_offset: usize,
        data: &[u8],
    ) -> Result<usize, WireError> {
        match self.data_out {
            DataDesc::Immediate(i) if len32(i.len) == data.len() => {}
            _ => {
                return Err(WireError::InvalidField(
                    "data-out is not an immediate descriptor of the data's length",
                ))
            }
        }
        let desc_end = self.emitted_len();
        if desc_end > imm_data_offset {
            return Err(WireError::ImmediateDataOverlap {
                desc_end,
                imm_data_offset,
            });
        }
        let total = imm_data_offset.saturating_add(data.len());
        // Check the whole size first so nothing is written on failure.
        if buf.len() < total {
            return Err(WireError::BufferTooSmall {
                need: total,
                have: buf.len(),
            });
        }
        let n = self.emit(buf)?;
        let have = buf.len();
        let tail = buf
            .get_mut(n..total)
            .ok_or(WireError::BufferTooSmall { need: total, have })?;
        let (gap, dst) = tail.split_at_mut(imm_data_offset.saturating_sub(n));
        gap.fill(0);
        dst.copy_from_slice(data);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::srp::tests::{cat, emit_over_junk, head, LUN1, TAGV};

    /// SRP_CMD with a 32-byte CDB, a direct DATA-OUT descriptor and an
    /// indirect DATA-IN descriptor with one descriptor in the IU: the
    /// header, direct and indirect layouts together.
    mod cmd_layout {
        use super::*;
        use crate::wire::srp::command_iu::{cmd as f, direct_desc as d, indirect_desc as ind};
        use crate::wire::{get, get_be32, get_be64, get_u8, set, set_be32, set_be64, set_u8};

        const CDB32: [u8; 32] = [
            0x7f, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0,
            0, 0, 0, 0, 0x08,
        ];
        const OUT: DirectDesc = DirectDesc {
            va: 0x7f00_1234_5000,
            rkey: 0xabcd,
            len: 0x1000,
        };
        const TABLE: DirectDesc = DirectDesc {
            va: 0x7f00_0000_8000,
            rkey: 0x1234,
            len: 32,
        };
        const IN0: DirectDesc = DirectDesc {
            va: 0x7f00_0000_a000,
            rkey: 0x5678,
            len: 0x800,
        };

        #[rustfmt::skip]
        const BYTES: [u8; 48 + 16 + 16 + 20 + 16] = [
            0x02, 0x02, 0, 0, 0,                            // SCSOLNT
            0x12,                                           // out direct, in indirect
            0x01, 0x01,                                     // descriptor counts
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
            0, 0, 0, 0,
            0x00, 0x01, 0, 0, 0, 0, 0, 0,                   // lun
            0, 0x02, 0, 0x10,                               // ordered, 16 more CDB bytes
            0x7f, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0b, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x08,
            // DATA-OUT: direct
            0x00, 0x00, 0x7f, 0x00, 0x12, 0x34, 0x50, 0x00, 0, 0, 0xab, 0xcd, 0, 0, 0x10, 0x00,
            // DATA-IN: indirect; table descriptor, total length, 1 in IU
            0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x80, 0x00, 0, 0, 0x12, 0x34, 0, 0, 0, 0x20,
            0, 0, 0x10, 0x00,
            0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0xa0, 0x00, 0, 0, 0x56, 0x78, 0, 0, 0x08, 0x00,
        ];

        fn repr() -> Cmd<'static> {
            let mut c = Cmd::new(TAGV, LUN1, &CDB32)
                .with_data_out(DataDesc::Direct(OUT))
                .with_data_in(DataDesc::Indirect(IndirectDesc {
                    table: TABLE,
                    total_len: 0x1000,
                    partial: &BYTES[100..116],
                }));
            c.sol_not = SCSOLNT;
            c.task_attr = Cmd::TASK_ATTR_ORDERED;
            c.data_out_desc_cnt = 1;
            c
        }

        #[test]
        fn deconstruct() {
            let b = head::<{ f::LEN }>(&BYTES);
            assert_eq!(get_u8(b, f::OPCODE), Opcode::CMD.0);
            assert_eq!(get_u8(b, f::SOL_NOT), SCSOLNT);
            assert_eq!(get_u8(b, f::BUF_FMT), 0x12);
            assert_eq!(get_u8(b, f::DATA_OUT_DESC_CNT), 1);
            assert_eq!(get_u8(b, f::DATA_IN_DESC_CNT), 1);
            assert_eq!(get_be64(b, f::TAG), TAGV.0);
            assert_eq!(get::<8, 48>(b, f::LUN), LUN1);
            assert_eq!(get_u8(b, f::TASK_ATTR), Cmd::TASK_ATTR_ORDERED);
            assert_eq!(get_u8(b, f::ADD_CDB_LEN), 16);
            assert_eq!(get::<16, 48>(b, f::CDB), CDB32[..16]);
            assert_eq!(BYTES[f::LEN..64], CDB32[16..]);
            let out = head::<{ d::LEN }>(&BYTES[64..]);
            assert_eq!(get_be64(out, d::VA), OUT.va);
            assert_eq!(get_be32(out, d::RKEY), OUT.rkey);
            assert_eq!(get_be32(out, d::DATA_LEN), OUT.len);
            let h = head::<{ ind::LEN }>(&BYTES[80..]);
            assert_eq!(DirectDesc::decode(&get(h, ind::TABLE_DESC)), TABLE);
            assert_eq!(get_be32(h, ind::TOTAL_LEN), 0x1000);
            assert_eq!(DirectDesc::decode(head(&BYTES[100..])), IN0);
        }

        #[test]
        fn construct() {
            let mut b = [0u8; f::LEN];
            set_u8(&mut b, f::OPCODE, Opcode::CMD.0);
            set_u8(&mut b, f::SOL_NOT, SCSOLNT);
            set_u8(&mut b, f::BUF_FMT, 0x12);
            set_u8(&mut b, f::DATA_OUT_DESC_CNT, 1);
            set_u8(&mut b, f::DATA_IN_DESC_CNT, 1);
            set_be64(&mut b, f::TAG, TAGV.0);
            set(&mut b, f::LUN, &LUN1);
            set_u8(&mut b, f::TASK_ATTR, Cmd::TASK_ATTR_ORDERED);
            set_u8(&mut b, f::ADD_CDB_LEN, 16);
            set(&mut b, f::CDB, &CDB32[..16]);
            let mut out = [0u8; d::LEN];
            set_be64(&mut out, d::VA, OUT.va);
            set_be32(&mut out, d::RKEY, OUT.rkey);
            set_be32(&mut out, d::DATA_LEN, OUT.len);
            let mut h = [0u8; ind::LEN];
            set(&mut h, ind::TABLE_DESC, &TABLE.encode());
            set_be32(&mut h, ind::TOTAL_LEN, 0x1000);
            assert_eq!(cat(&[&b, &CDB32[16..], &out, &h, &IN0.encode()]), BYTES);
        }

        #[test]
        fn parse() {
            let c = Cmd::parse(&BYTES).unwrap();
            assert_eq!(c, repr());
            assert_eq!(c.desc_offset(), 64);
            assert_eq!(c.in_iu_table_offset(true), 100);
            let DataDesc::Indirect(i) = c.data_in else {
                panic!("{:?}", c.data_in)
            };
            assert_eq!(i.in_iu(0), Some(IN0));
        }

        #[test]
        fn emit() {
            let (b, n) = emit_over_junk(|b| repr().emit(b));
            assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
        }
    }

    mod direct_desc_layout {
        use super::*;
        use crate::wire::srp::command_iu::direct_desc as f;
        use crate::wire::{get_be32, get_be64, set_be32, set_be64};

        #[rustfmt::skip]
        const BYTES: [u8; 16] = [
            0x00, 0x00, 0x7f, 0x00, 0x12, 0x34, 0x50, 0x00, // va
            0x00, 0x00, 0xab, 0xcd,                         // rkey
            0x00, 0x00, 0x10, 0x00,                         // len 4096
        ];
        const REPR: DirectDesc = DirectDesc {
            va: 0x7f00_1234_5000,
            rkey: 0xabcd,
            len: 4096,
        };

        #[test]
        fn deconstruct() {
            assert_eq!(get_be64(&BYTES, f::VA), REPR.va);
            assert_eq!(get_be32(&BYTES, f::RKEY), REPR.rkey);
            assert_eq!(get_be32(&BYTES, f::DATA_LEN), REPR.len);
        }

        #[test]
        fn construct() {
            let mut b = [0u8; f::LEN];
            set_be64(&mut b, f::VA, REPR.va);
            set_be32(&mut b, f::RKEY, REPR.rkey);
            set_be32(&mut b, f::DATA_LEN, REPR.len);
            assert_eq!(b, BYTES);
        }

        #[test]
        fn parse() {
            assert_eq!(DirectDesc::parse(&BYTES), Ok(REPR));
            assert_eq!(DirectDesc::decode(&BYTES), REPR);
            assert_eq!(
                DirectDesc::parse(&BYTES[..15]),
                Err(WireError::TooShort {
                    what: "direct data buffer descriptor",
                    need: 16,
                    have: 15
                })
            );
        }

        #[test]
        fn emit() {
            let (b, n) = emit_over_junk(|b| REPR.emit(b));
            assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
            assert_eq!(
                REPR.emit(&mut [0; 15]),
                Err(WireError::BufferTooSmall { need: 16, have: 15 })
            );
        }
    }
}
