//! The copy manager: EXTENDED COPY(LID1) with block device to block device
//! segments, within one LUN and between the target's LUNs, and RECEIVE
//! COPY RESULTS (SPC-4 6.4 EXTENDED COPY(LID1), SPC-3 6.3; SPC-3 6.17
//! RECEIVE COPY RESULTS). The data moves from backstore to backstore
//! through a bounded buffer; none of it passes through the initiator.
//!
//! - CSCD descriptors: the identification descriptor (E4h) naming a LUN
//!   by the NAA designator of its Device Identification VPD page (83h),
//!   peripheral device type 00h. A LUN this I_T nexus does not see is
//!   not found.
//! - Segment descriptors: block device to block device (02h); the LUNs
//!   may have different block sizes, a segment whose bytes are not whole
//!   blocks of both is refused (UNEXPECTED INEXACT SEGMENT).
//! - A list is checked whole before any data moves: its format (ILLEGAL
//!   REQUEST, field pointer into the parameter list), then each segment's
//!   copy targets (COPY ABORTED, the segment number in COMMAND-SPECIFIC
//!   INFORMATION and a segment pointer), their reservations for this
//!   initiator (RESERVATION CONFLICT: the source as a READ, the
//!   destination as a WRITE) and write protection (DATA PROTECT). Then the
//!   segments run in order, each as a memmove: overlapping ranges of one
//!   LUN copy as if through a buffer of the whole segment.
//! - A copy runs to completion within the command, on the worker pool;
//!   one command copies at most [`MAX_COPY_BYTES`]. It is not atomic
//!   against other writers, and writes nothing outside its destination
//!   ranges.
//! - COPY STATUS(LID1) reports the copies with a list identifier (LIST ID
//!   USAGE 00b or 10b) of the I_T nexus, the last [`HELD_STATUSES`] of
//!   them; no data is held (HELD DATA LIMIT 0), so RECEIVE DATA is not
//!   supported.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;

use super::cdb::{be16, be32, be64};
use super::disk::{io_sense, Disk};
use super::lun::{LunTable, NexusId};
use super::reservations::{CommandClass, Refusal};
use super::sense::{Sense, SenseKey};
use super::{with_parameter_list, DataDir, Plan};
use crate::mem::DmaBuf;

// ------------------------------------------------------------- limits
// Reported by RECEIVE COPY RESULTS, OPERATING PARAMETERS.

/// MAXIMUM CSCD DESCRIPTOR COUNT.
pub const MAX_CSCD_DESCRIPTORS: u16 = 8;
/// MAXIMUM SEGMENT DESCRIPTOR COUNT.
pub const MAX_SEGMENT_DESCRIPTORS: u16 = 8;
/// MAXIMUM SEGMENT LENGTH: bytes one segment descriptor may copy.
pub const MAX_SEGMENT_BYTES: u32 = 16 << 20;
/// The most one EXTENDED COPY copies (the work one command holds a
/// worker for).
pub const MAX_COPY_BYTES: u64 = MAX_SEGMENT_DESCRIPTORS as u64 * MAX_SEGMENT_BYTES as u64;
/// MAXIMUM DESCRIPTOR LIST LENGTH: the CSCD and segment descriptors.
pub const MAX_DESCRIPTOR_LIST_BYTES: u32 =
    MAX_CSCD_DESCRIPTORS as u32 * CSCD_LEN as u32 + MAX_SEGMENT_DESCRIPTORS as u32 * SEGMENT_LEN as u32;
/// The longest PARAMETER LIST LENGTH taken in (longer is PARAMETER LIST
/// LENGTH ERROR before any data moves). Above the longest valid list so
/// that too many descriptors get their own sense codes.
pub const MAX_PARAMETER_LIST_BYTES: u32 = 4096;
/// MAXIMUM CONCURRENT COPIES: copies with a list identifier one I_T nexus
/// may have running at once.
pub const MAX_CONCURRENT_COPIES: u8 = 4;
/// TOTAL CONCURRENT COPIES: the same, over the whole target.
pub const TOTAL_CONCURRENT_COPIES: u16 = 64;
/// Copy statuses an I_T nexus keeps for COPY STATUS(LID1).
pub const HELD_STATUSES: usize = 16;
/// Data moves in chunks of at most this (a multiple of every block size).
pub const CHUNK_BYTES: usize = 1 << 20;
/// DATA SEGMENT GRANULARITY (log 2): the smallest block size.
const GRANULARITY_LOG2: u8 = 9;

// ------------------------------------------------------------- format

/// The parameter list header (SPC-4 6.4.3.1).
const HEADER_LEN: usize = 16;
/// CSCD descriptors other than the 64-byte kinds (SPC-4 6.4.5.1).
const CSCD_LEN: usize = 32;
/// Segment descriptor 02h: DESCRIPTOR LENGTH 0018h, plus 4.
const SEGMENT_LEN: usize = 28;
/// Identification descriptor CSCD descriptor type code.
pub const CSCD_IDENTIFICATION: u8 = 0xe4;
/// Block device to block device segment descriptor type code.
pub const SEGMENT_BLOCK_TO_BLOCK: u8 = 0x02;

/// ILLEGAL REQUEST, TOO MANY TARGET DESCRIPTORS (26h/06h).
pub const fn too_many_target_descriptors() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x26, 0x06)
}
/// ILLEGAL REQUEST, UNSUPPORTED TARGET DESCRIPTOR TYPE CODE (26h/07h).
pub const fn unsupported_target_descriptor() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x26, 0x07)
}
/// ILLEGAL REQUEST, TOO MANY SEGMENT DESCRIPTORS (26h/08h).
pub const fn too_many_segment_descriptors() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x26, 0x08)
}
/// ILLEGAL REQUEST, UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE (26h/09h).
pub const fn unsupported_segment_descriptor() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x26, 0x09)
}
/// COPY ABORTED, UNEXPECTED INEXACT SEGMENT (26h/0Ah).
pub const fn unexpected_inexact_segment() -> Sense {
    Sense::new(SenseKey::CopyAborted, 0x26, 0x0a)
}
/// COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE (0Dh/02h): no LUN the
/// I_T nexus sees has the CSCD's designator.
pub const fn copy_target_not_reachable() -> Sense {
    Sense::new(SenseKey::CopyAborted, 0x0d, 0x02)
}
/// COPY ABORTED, UNREACHABLE COPY TARGET (08h/04h): a CSCD DESCRIPTOR ID
/// beyond the CSCD descriptors of the list.
pub const fn unreachable_copy_target() -> Sense {
    Sense::new(SenseKey::CopyAborted, 0x08, 0x04)
}
/// ILLEGAL REQUEST, OPERATION IN PROGRESS (00h/16h): the list identifier
/// of a copy of this I_T nexus still running.
pub const fn operation_in_progress() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x00, 0x16)
}
/// ILLEGAL REQUEST, INSUFFICIENT RESOURCES (55h/03h): too many copies
/// with list identifiers running.
pub const fn insufficient_resources() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x55, 0x03)
}

fn bad_field(byte: usize, bit: Option<u8>) -> Sense {
    Sense::invalid_field_in_parameter_list_at(u16::try_from(byte).unwrap_or(u16::MAX), bit)
}

/// The highest set bit of `b` (for a bit pointer at a reserved field).
fn top_bit(b: u8) -> Option<u8> {
    (b != 0).then(|| 7 - b.leading_zeros() as u8)
}

/// LIST ID USAGE (SPC-4 6.4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListIdUsage {
    /// 00b: the list identifier names the copy; data would be held.
    Hold,
    /// 10b: the list identifier names the copy; no data is held.
    Discard,
    /// 11b: no list identifier (NOLIST; LIST IDENTIFIER must be zero).
    NoList,
}

/// An identification CSCD descriptor (E4h, SPC-4 6.4.5.6) of
/// peripheral device type 00h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cscd {
    /// Its offset in the parameter list.
    pub at: usize,
    /// The designator when it is an NAA designator of 16 bytes (binary,
    /// logical unit association), the only kind srptd's LUNs have that
    /// fits; `None` names no LUN.
    pub naa: Option<[u8; 16]>,
    /// PAD (SPC-4 6.4.5.2.1 table 135, byte 28 bit 2).
    pub pad: bool,
    /// DISK BLOCK LENGTH (bytes 29-31); 0: not given.
    pub block_len: u32,
}

/// A block device to block device segment descriptor (02h, SPC-4
/// 6.4.6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its offset in the parameter list.
    pub at: usize,
    pub src: u16,
    pub dst: u16,
    /// DC: `blocks` counts destination blocks (else source blocks).
    pub dc: bool,
    pub cat: bool,
    pub blocks: u16,
    pub src_lba: u64,
    pub dst_lba: u64,
}

/// An EXTENDED COPY(LID1) parameter list (SPC-4 6.4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyList {
    pub list_id: u8,
    pub usage: ListIdUsage,
    pub cscds: Vec<Cscd>,
    pub segments: Vec<Segment>,
}

impl CopyList {
    /// Parses and checks the format of a parameter list of `p.len()`
    /// bytes (the PARAMETER LIST LENGTH, at least 1).
    pub fn parse(p: &[u8]) -> Result<CopyList, Sense> {
        if p.len() < HEADER_LEN {
            return Err(Sense::parameter_list_length_error());
        }
        let list_id = p[0];
        // Byte 1: reserved (7:6), STR (5, a hint), LIST ID USAGE (4:3),
        // PRIORITY (2:0, one queue: not used).
        if let Some(bit) = top_bit(p[1] & 0xc0) {
            return Err(bad_field(1, Some(bit)));
        }
        let usage = match (p[1] >> 3) & 3 {
            0 => ListIdUsage::Hold,
            2 => ListIdUsage::Discard,
            3 => ListIdUsage::NoList,
            _ => return Err(bad_field(1, Some(4))),
        };
        // SPC-4 6.4.3.2: NOLIST with a nonzero LIST IDENTIFIER.
        if usage == ListIdUsage::NoList && list_id != 0 {
            return Err(bad_field(0, None));
        }
        if let Some(i) = p[4..8].iter().position(|&b| b != 0) {
            return Err(bad_field(4 + i, top_bit(p[4 + i])));
        }
        let cscd_len = usize::from(be16(&p[2..]));
        let seg_len = be32(&p[8..]) as usize;
        // SPC-4 6.4.3.4 / 6.4.3.5: more descriptors than OPERATING
        // PARAMETERS allows.
        if cscd_len > usize::from(MAX_CSCD_DESCRIPTORS) * CSCD_LEN {
            return Err(too_many_target_descriptors().with_field(false, 2, None));
        }
        if seg_len > usize::from(MAX_SEGMENT_DESCRIPTORS) * SEGMENT_LEN {
            return Err(too_many_segment_descriptors().with_field(false, 8, None));
        }
        // MAXIMUM INLINE DATA LENGTH is 0 (no segment type that uses it).
        if be32(&p[12..]) != 0 {
            return Err(bad_field(12, None));
        }
        let seg_start = HEADER_LEN + cscd_len;
        let end = seg_start + seg_len;
        if end > p.len() {
            return Err(Sense::parameter_list_length_error());
        }
        let cscds = descriptors(p, HEADER_LEN..seg_start, &CSCDS, Cscd::parse)?;
        let segments = descriptors(p, seg_start..end, &SEGMENTS, Segment::parse)?;
        Ok(CopyList {
            list_id,
            usage,
            cscds,
            segments,
        })
    }

    /// The list identifier, if the copy has one (LIST ID USAGE 00b, 10b).
    pub fn id(&self) -> Option<u8> {
        (self.usage != ListIdUsage::NoList).then_some(self.list_id)
    }

    /// The parameter list (as an initiator sends it; the `at` offsets are
    /// not used).
    pub fn emit(&self) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = self.list_id;
        p[1] = match self.usage {
            ListIdUsage::Hold => 0,
            ListIdUsage::Discard => 2,
            ListIdUsage::NoList => 3,
        } << 3;
        let cscd_len = (self.cscds.len() * CSCD_LEN) as u16;
        p[2..4].copy_from_slice(&cscd_len.to_be_bytes());
        let seg_len = (self.segments.len() * SEGMENT_LEN) as u32;
        p[8..12].copy_from_slice(&seg_len.to_be_bytes());
        for c in &self.cscds {
            p.extend_from_slice(&c.emit());
        }
        for s in &self.segments {
            p.extend_from_slice(&s.emit());
        }
        p
    }
}

/// A kind of descriptor the list holds.
struct Kind {
    /// The only type code supported.
    code: u8,
    len: usize,
    /// For another type code.
    unsupported: Sense,
    /// The list length field (pointed at when a descriptor is cut short).
    length_field: usize,
}

const CSCDS: Kind = Kind {
    code: CSCD_IDENTIFICATION,
    len: CSCD_LEN,
    unsupported: unsupported_target_descriptor(),
    length_field: 2,
};
const SEGMENTS: Kind = Kind {
    code: SEGMENT_BLOCK_TO_BLOCK,
    len: SEGMENT_LEN,
    unsupported: unsupported_segment_descriptor(),
    length_field: 8,
};

/// The descriptors of kind `k` filling `range` of `p`: another type code
/// is UNSUPPORTED ... DESCRIPTOR TYPE CODE pointing at it, a descriptor cut
/// by the end of the range INVALID FIELD IN PARAMETER LIST at the list
/// length.
fn descriptors<T>(
    p: &[u8],
    range: std::ops::Range<usize>,
    k: &Kind,
    parse: fn(&[u8], usize) -> Result<T, Sense>,
) -> Result<Vec<T>, Sense> {
    let mut v = Vec::with_capacity(range.len() / k.len);
    let mut at = range.start;
    while at < range.end {
        if p[at] != k.code {
            return Err(k.unsupported.with_field(false, at as u16, None));
        }
        let d = p.get(at..at + k.len).filter(|_| at + k.len <= range.end);
        v.push(parse(d.ok_or_else(|| bad_field(k.length_field, None))?, at)?);
        at += k.len;
    }
    Ok(v)
}

impl Cscd {
    /// Parses the 32 bytes `d` of an E4h descriptor found at `at`.
    fn parse(d: &[u8], at: usize) -> Result<Cscd, Sense> {
        // Byte 1: LU ID TYPE (7:6, unused by E4h), NUL (5), PERIPHERAL
        // DEVICE TYPE (4:0). A null device is not supported; only
        // direct-access block devices (00h) are copy targets.
        if d[1] & 0x20 != 0 {
            return Err(bad_field(at + 1, Some(5)));
        }
        if let Some(bit) = top_bit(d[1] & 0x1f) {
            return Err(bad_field(at + 1, Some(bit)));
        }
        // Bytes 4-7: the designation descriptor header (SPC-4 7.8.6.1)
        // whose PROTOCOL IDENTIFIER and PIV are ignored. CODE SET 1
        // (binary), ASSOCIATION 00b (the logical unit), DESIGNATOR LENGTH
        // at most 20.
        if d[4] & 0x0f != 1 {
            return Err(bad_field(at + 4, Some(3)));
        }
        if d[5] & 0x30 != 0 {
            return Err(bad_field(at + 5, Some(5)));
        }
        if d[7] > 20 {
            return Err(bad_field(at + 7, None));
        }
        let naa = (d[5] & 0x0f == 3 && d[7] == 16).then(|| {
            let mut n = [0u8; 16];
            n.copy_from_slice(&d[8..24]);
            n
        });
        Ok(Cscd {
            at,
            naa,
            pad: d[28] & 0x04 != 0,
            block_len: u32::from_be_bytes([0, d[29], d[30], d[31]]),
        })
    }

    /// A descriptor naming the LUN of NAA designator `naa` with
    /// `block_len` byte blocks.
    pub fn naa(naa: [u8; 16], block_len: u32) -> Cscd {
        Cscd {
            at: 0,
            naa: Some(naa),
            pad: false,
            block_len,
        }
    }

    /// Its 32 bytes; without an NAA designator, an empty vendor specific
    /// one (which names no LUN).
    pub fn emit(&self) -> [u8; CSCD_LEN] {
        let mut d = [0u8; CSCD_LEN];
        d[0] = CSCD_IDENTIFICATION;
        d[4] = 0x01; // CODE SET: binary
        if let Some(n) = self.naa {
            d[5] = 0x03; // ASSOCIATION: logical unit; DESIGNATOR TYPE: NAA
            d[7] = 16;
            d[8..24].copy_from_slice(&n);
        }
        d[28] = if self.pad { 0x04 } else { 0 };
        d[29..32].copy_from_slice(&self.block_len.to_be_bytes()[1..]);
        d
    }
}

impl Segment {
    /// Parses the 28 bytes `d` of a 02h descriptor found at `at`.
    fn parse(d: &[u8], at: usize) -> Result<Segment, Sense> {
        // Byte 1: FCO (2, SPC-5: every copy here is offloaded), DC (1),
        // CAT (0); the rest reserved.
        if let Some(bit) = top_bit(d[1] & 0xf8) {
            return Err(bad_field(at + 1, Some(bit)));
        }
        if be16(&d[2..]) != (SEGMENT_LEN - 4) as u16 {
            return Err(bad_field(at + 2, None));
        }
        if let Some(i) = d[8..10].iter().position(|&b| b != 0) {
            return Err(bad_field(at + 8 + i, top_bit(d[8 + i])));
        }
        Ok(Segment {
            at,
            src: be16(&d[4..]),
            dst: be16(&d[6..]),
            dc: d[1] & 0x02 != 0,
            cat: d[1] & 0x01 != 0,
            blocks: be16(&d[10..]),
            src_lba: be64(&d[12..]),
            dst_lba: be64(&d[20..]),
        })
    }

    /// A segment copying `blocks` source blocks from CSCD `src` at
    /// `src_lba` to CSCD `dst` at `dst_lba`.
    pub fn blocks(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Segment {
        Segment {
            at: 0,
            src,
            dst,
            dc: false,
            cat: false,
            blocks,
            src_lba,
            dst_lba,
        }
    }

    /// Its 28 bytes.
    pub fn emit(&self) -> [u8; SEGMENT_LEN] {
        let mut d = [0u8; SEGMENT_LEN];
        d[0] = SEGMENT_BLOCK_TO_BLOCK;
        d[1] = u8::from(self.dc) << 1 | u8::from(self.cat);
        d[2..4].copy_from_slice(&((SEGMENT_LEN - 4) as u16).to_be_bytes());
        d[4..6].copy_from_slice(&self.src.to_be_bytes());
        d[6..8].copy_from_slice(&self.dst.to_be_bytes());
        d[10..12].copy_from_slice(&self.blocks.to_be_bytes());
        d[12..20].copy_from_slice(&self.src_lba.to_be_bytes());
        d[20..28].copy_from_slice(&self.dst_lba.to_be_bytes());
        d
    }
}

/// Plans an EXTENDED COPY of `len` parameter list bytes: 0 copies
/// nothing and is not an error (SPC-4 6.4.1); shorter than the header, or
/// longer than [`MAX_PARAMETER_LIST_BYTES`], is PARAMETER LIST LENGTH
/// ERROR before any data moves.
pub fn plan(len: u32) -> Result<Plan, Sense> {
    if (1..HEADER_LEN as u32).contains(&len) || len > MAX_PARAMETER_LIST_BYTES {
        return Err(Sense::parameter_list_length_error().with_field(true, 10, None));
    }
    Ok(Plan::new(DataDir::Out, len))
}

// ------------------------------------------------------ copy targets

/// Whether the initiator may write a LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writable {
    Yes,
    /// Another initiator's reservation: RESERVATION CONFLICT.
    Conflict,
    /// Read-only, or read-only for this initiator: DATA PROTECT.
    Protected,
}

/// What the copy manager knows of the LUN a CSCD descriptor names, for
/// the initiator of the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunFacts {
    pub block_size: u32,
    pub num_blocks: u64,
    /// Reservations let the initiator read it.
    pub readable: bool,
    pub writable: Writable,
}

/// One segment, checked: copy `bytes` from CSCD `src` at `src_lba` to
/// CSCD `dst` at `dst_lba`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The segment descriptor's number in the list.
    pub segment: u16,
    pub src: usize,
    pub dst: usize,
    pub src_lba: u64,
    pub dst_lba: u64,
    pub bytes: u64,
}

/// COPY ABORTED with `s`'s code while processing segment `i`, pointing at
/// byte `byte` of its descriptor.
fn in_segment(s: Sense, i: usize, byte: u16) -> Refusal {
    Refusal::Check(s.in_segment(i as u16, Some(byte)))
}

/// Checks every segment of `list` against the LUNs its CSCD descriptors
/// name (`facts[i]` for CSCD descriptor `i`; `None`: no such LUN), before
/// any data moves.
pub fn check_segments(list: &CopyList, facts: &[Option<LunFacts>]) -> Result<Vec<Move>, Refusal> {
    let mut moves = Vec::with_capacity(list.segments.len());
    for (i, s) in list.segments.iter().enumerate() {
        let target = |id: u16, byte: u16| -> Result<(usize, LunFacts), Refusal> {
            let k = usize::from(id);
            let cscd = list
                .cscds
                .get(k)
                .ok_or_else(|| in_segment(unreachable_copy_target(), i, byte))?;
            let f = facts
                .get(k)
                .copied()
                .flatten()
                .ok_or_else(|| in_segment(copy_target_not_reachable(), i, byte))?;
            // The DISK BLOCK LENGTH given must be the LUN's.
            if cscd.block_len != 0 && cscd.block_len != f.block_size {
                return Err(bad_field(cscd.at + 29, None).into());
            }
            Ok((k, f))
        };
        let (src, sf) = target(s.src, 4)?;
        let (dst, df) = target(s.dst, 6)?;
        if !sf.readable || df.writable == Writable::Conflict {
            return Err(Refusal::Conflict);
        }
        if df.writable == Writable::Protected {
            return Err(Sense::write_protected().into());
        }
        let unit = if s.dc { df.block_size } else { sf.block_size };
        let bytes = u64::from(s.blocks) * u64::from(unit);
        if bytes > u64::from(MAX_SEGMENT_BYTES) {
            return Err(bad_field(s.at + 10, None).into());
        }
        // SPC-4 6.4.6.1: a segment that is not whole blocks of both
        // devices is inexact; neither PAD nor CAT handling is offered.
        if bytes % u64::from(sf.block_size) != 0 || bytes % u64::from(df.block_size) != 0 {
            return Err(in_segment(unexpected_inexact_segment(), i, 10));
        }
        let in_range = |lba: u64, bs: u32, f: &LunFacts| {
            lba.checked_add(bytes / u64::from(bs))
                .is_some_and(|e| e <= f.num_blocks)
        };
        let out_of_range = Sense::new(SenseKey::CopyAborted, 0x21, 0x00);
        if !in_range(s.src_lba, sf.block_size, &sf) {
            return Err(in_segment(out_of_range.with_info(s.src_lba), i, 12));
        }
        if !in_range(s.dst_lba, df.block_size, &df) {
            return Err(in_segment(out_of_range.with_info(s.dst_lba), i, 20));
        }
        moves.push(Move {
            segment: i as u16,
            src,
            dst,
            src_lba: s.src_lba,
            dst_lba: s.dst_lba,
            bytes,
        });
    }
    Ok(moves)
}

/// How far a copy got: segments done and bytes written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub segments: u16,
    pub bytes: u64,
}

/// Runs `moves` in order on `disks` (`disks[i]` the LUN of CSCD i)
/// through `buf` (a multiple of 4096 bytes), calling `step` after each
/// segment. A failed read or write is COPY ABORTED with its code, the
/// segment number and, if the segment wrote anything, the residual in
/// destination blocks in INFORMATION (SPC-4 6.4.4).
pub fn run_moves(
    moves: &[Move],
    disks: &[Option<&Disk>],
    buf: &DmaBuf,
    progress: &mut Progress,
    step: &mut dyn FnMut(&Progress),
) -> Result<(), Sense> {
    let chunk = buf.len() as u64;
    for m in moves {
        let disk = |i: usize| disks.get(i).copied().flatten();
        let (Some(src), Some(dst)) = (disk(m.src), disk(m.dst)) else {
            return Err(Sense::internal_target_failure());
        };
        let sbs = u64::from(src.store().block_size());
        let dbs = u64::from(dst.store().block_size());
        // Forward unless the destination starts inside the source range
        // of the same LUN (then the tail is copied first: a memmove).
        let backward =
            std::ptr::eq(src, dst) && m.dst_lba > m.src_lba && m.dst_lba < m.src_lba + m.bytes / sbs;
        let chunks = m.bytes.div_ceil(chunk.max(1));
        let mut written = 0u64;
        for k in 0..chunks {
            let k = if backward { chunks - 1 - k } else { k };
            let start = k * chunk;
            let n = chunk.min(m.bytes - start) as usize;
            let failed = |s: Sense, written: u64| {
                let s = Sense::new(SenseKey::CopyAborted, s.asc, s.ascq).in_segment(m.segment, None);
                if written > 0 {
                    s.with_info((m.bytes - written) / dbs)
                } else {
                    s
                }
            };
            let (slba, dlba) = (m.src_lba + start / sbs, m.dst_lba + start / dbs);
            src.store()
                .read(slba, buf, 0, n)
                .map_err(|e| failed(io_sense(&e, false, slba), written))?;
            dst.copy_write(dlba, buf, n).map_err(|s| failed(s, written))?;
            written += n as u64;
            progress.bytes += n as u64;
        }
        progress.segments += 1;
        step(progress);
    }
    Ok(())
}

// ------------------------------------------------------------ status

/// The state of a copy with a list identifier (COPY MANAGER STATUS,
/// SPC-3 6.17.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyState {
    Running,
    Done,
    Failed,
}

/// What COPY STATUS(LID1) reports of one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyStatus {
    pub state: CopyState,
    pub progress: Progress,
}

/// The target's count of running copies with list identifiers.
#[derive(Debug, Default)]
pub struct CopyManager {
    running: AtomicU16,
}

/// The copies of one I_T nexus (SPC-4 6.4.3.2: list identifiers are per
/// I_T nexus), the last [`HELD_STATUSES`] kept.
#[derive(Debug, Default)]
pub struct CopyResults {
    held: Mutex<VecDeque<(u8, CopyStatus)>>,
}

impl CopyResults {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u8, CopyStatus)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts copy `id`: OPERATION IN PROGRESS if a copy of that list
    /// identifier is still running, INSUFFICIENT RESOURCES past the
    /// concurrency limits. Until finished, COPY STATUS reports it running.
    pub fn begin<'a>(&'a self, mgr: &'a CopyManager, id: u8) -> Result<Running<'a>, Sense> {
        let mut held = self.lock();
        let running = |s: &CopyStatus| s.state == CopyState::Running;
        if held.iter().any(|(l, s)| *l == id && running(s)) {
            return Err(operation_in_progress());
        }
        if held.iter().filter(|(_, s)| running(s)).count() >= usize::from(MAX_CONCURRENT_COPIES) {
            return Err(insufficient_resources());
        }
        mgr.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < TOTAL_CONCURRENT_COPIES).then_some(n + 1)
            })
            .map_err(|_| insufficient_resources())?;
        held.retain(|(l, _)| *l != id);
        if held.len() >= HELD_STATUSES {
            if let Some(i) = held.iter().position(|(_, s)| !running(s)) {
                held.remove(i);
            }
        }
        let st = CopyStatus {
            state: CopyState::Running,
            progress: Progress::default(),
        };
        held.push_back((id, st));
        Ok(Running {
            results: self,
            mgr,
            id,
            done: false,
        })
    }

    /// Changes the status of copy `id` with `f`.
    fn set(&self, id: u8, f: impl FnOnce(&mut CopyStatus)) {
        if let Some(e) = self.lock().iter_mut().find(|(l, _)| *l == id) {
            f(&mut e.1);
        }
    }

    /// The status of copy `id`, if known.
    pub fn status(&self, id: u8) -> Option<CopyStatus> {
        self.lock().iter().find(|(l, _)| *l == id).map(|e| e.1)
    }

    /// RECEIVE COPY RESULTS parameter data for service action `sa`
    /// (COPY STATUS of `list_id`, or OPERATING PARAMETERS).
    pub fn receive(&self, sa: u8, list_id: u8) -> Result<Vec<u8>, Sense> {
        if sa == 0x03 {
            return Ok(operating_parameters().to_vec());
        }
        // A list identifier no copy of this I_T nexus has (or whose
        // status was dropped): INVALID FIELD IN CDB at LIST IDENTIFIER.
        let st = self
            .status(list_id)
            .ok_or_else(|| Sense::invalid_field_in_cdb_at(2, None))?;
        Ok(copy_status(&st).to_vec())
    }
}

/// A copy with a list identifier, counted as running until dropped.
#[derive(Debug)]
pub struct Running<'a> {
    results: &'a CopyResults,
    mgr: &'a CopyManager,
    id: u8,
    done: bool,
}

impl Running<'_> {
    /// Reports progress while it runs.
    pub fn update(&self, progress: &Progress) {
        self.results.set(self.id, |s| s.progress = *progress);
    }

    /// Ends it: done, or failed, after `progress`.
    pub fn finish(mut self, ok: bool, progress: &Progress) {
        let state = if ok { CopyState::Done } else { CopyState::Failed };
        self.results.set(self.id, |s| {
            *s = CopyStatus {
                state,
                progress: *progress,
            }
        });
        self.done = true;
    }
}

impl Drop for Running<'_> {
    /// A copy not finished (a panic on the way) is reported failed, with
    /// the progress last reported.
    fn drop(&mut self) {
        if !self.done {
            self.results.set(self.id, |s| s.state = CopyState::Failed);
        }
        self.mgr.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// COPY STATUS(LID1) parameter data (SPC-3 6.17.2, table 82).
pub fn copy_status(st: &CopyStatus) -> [u8; 12] {
    let mut d = [0u8; 12];
    // AVAILABLE DATA.
    d[..4].copy_from_slice(&8u32.to_be_bytes());
    // HDD = 0; COPY MANAGER STATUS: 00h running, 01h completed without
    // errors, 02h completed with errors.
    d[4] = match st.state {
        CopyState::Running => 0x00,
        CopyState::Done => 0x01,
        CopyState::Failed => 0x02,
    };
    d[5..7].copy_from_slice(&st.progress.segments.to_be_bytes());
    // TRANSFER COUNT UNITS: 00h bytes, 01h KiB, ... 2^(10 x units).
    let mut units = 0u8;
    let mut count = st.progress.bytes;
    while count > u64::from(u32::MAX) {
        count >>= 10;
        units += 1;
    }
    d[7] = units;
    d[8..12].copy_from_slice(&(count as u32).to_be_bytes());
    d
}

/// OPERATING PARAMETERS parameter data (SPC-3 6.17.4, table 85): the
/// limits above; descriptor types 02h and E4h.
pub fn operating_parameters() -> [u8; 46] {
    let mut d = [0u8; 46];
    d[..4].copy_from_slice(&42u32.to_be_bytes()); // AVAILABLE DATA (n - 3)
    d[4] = 0x01; // SNLID: NOLIST copies (LIST ID USAGE 11b) supported
    d[8..10].copy_from_slice(&MAX_CSCD_DESCRIPTORS.to_be_bytes());
    d[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    d[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_BYTES.to_be_bytes());
    d[16..20].copy_from_slice(&MAX_SEGMENT_BYTES.to_be_bytes());
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE
    // TRANSFER SIZE: 0.
    d[34..36].copy_from_slice(&TOTAL_CONCURRENT_COPIES.to_be_bytes());
    d[36] = MAX_CONCURRENT_COPIES;
    d[37] = GRANULARITY_LOG2; // DATA SEGMENT GRANULARITY
    d[38] = GRANULARITY_LOG2; // INLINE DATA GRANULARITY
    d[39] = GRANULARITY_LOG2; // HELD DATA GRANULARITY
    d[43] = 2; // IMPLEMENTED DESCRIPTOR LIST LENGTH, in ascending order
    d[44] = SEGMENT_BLOCK_TO_BLOCK;
    d[45] = CSCD_IDENTIFICATION;
    d
}

// ------------------------------------------------------------- driver

/// EXTENDED COPY(LID1) from I_T nexus `nexus`: the `list_len` byte
/// parameter list is in `data[off..off+len]`; its CSCD descriptors are
/// looked up among the LUNs of `table` that its initiator port sees.
pub(super) fn extended_copy(
    table: &LunTable,
    nexus: &NexusId,
    (mgr, results): (&CopyManager, &CopyResults),
    list_len: u32,
    data: &DmaBuf,
    off: usize,
    len: u32,
) -> Result<u32, Refusal> {
    if list_len == 0 {
        return Ok(0);
    }
    let list = with_parameter_list(data, off, len, list_len, CopyList::parse)??;
    let running = list.id().map(|id| results.begin(mgr, id)).transpose()?;
    let mut progress = Progress::default();
    let r = copy(table, nexus, &list, &running, &mut progress);
    if let Some(run) = running {
        run.finish(r.is_ok(), &progress);
    }
    r.map(|()| 0)
}

/// Resolves, checks and runs `list`.
fn copy(
    table: &LunTable,
    nexus: &NexusId,
    list: &CopyList,
    running: &Option<Running<'_>>,
    progress: &mut Progress,
) -> Result<(), Refusal> {
    let ini = &nexus.initiator;
    // The LUN of each CSCD descriptor, among those `ini` sees, each
    // counted in as a command of its own (`drain.rs`): a LUN being removed
    // is neither read nor written, and one removed later is flushed after
    // the copy.
    let entered: Vec<_> = list
        .cscds
        .iter()
        .map(|c| {
            let naa = c.naa?;
            let (_, m) = table
                .luns
                .iter()
                .find(|&(&l, m)| m.entry.disk.naa() == naa && table.visible(l, ini).is_some())?;
            Some((m, m.entry.in_flight.enter()?))
        })
        .collect();
    let luns: Vec<_> = entered.iter().map(|e| e.as_ref().map(|(m, _)| *m)).collect();
    let facts: Vec<_> = luns
        .iter()
        .map(|m| {
            m.map(|m| {
                let s = m.entry.disk.store();
                let pr = &m.entry.pr;
                let writable = if !pr.allows(nexus, CommandClass::Write) {
                    Writable::Conflict
                } else if s.read_only() || m.read_only_to(ini) {
                    Writable::Protected
                } else {
                    Writable::Yes
                };
                LunFacts {
                    block_size: s.block_size(),
                    num_blocks: s.num_blocks(),
                    readable: pr.allows(nexus, CommandClass::Read),
                    writable,
                }
            })
        })
        .collect();
    let moves = check_segments(list, &facts)?;
    let total: u64 = moves.iter().map(|m| m.bytes).sum();
    if total == 0 {
        progress.segments = moves.len() as u16;
        return Ok(());
    }
    let buf = DmaBuf::new(total.min(CHUNK_BYTES as u64).next_multiple_of(4096) as usize)
        .map_err(|_| Sense::internal_target_failure())?;
    let disks: Vec<_> = luns.iter().map(|m| m.map(|m| &m.entry.disk)).collect();
    let mut step = |p: &Progress| {
        if let Some(r) = running {
            r.update(p);
        }
    };
    run_moves(&moves, &disks, &buf, progress, &mut step)?;
    Ok(())
}

#[cfg(test)]
#[path = "xcopy_tests.rs"]
mod tests;
