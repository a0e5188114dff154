//! Wire formats: SRP information units and data buffer descriptors.
//!
//! Everything here is a pure function of byte slices: parsers take a
//! `&[u8]` and return typed views (borrowing variable-length parts such as
//! sense data or partial descriptor tables), emitters write into a caller's
//! buffer and return the number of bytes written. No state, no I/O and no
//! allocation. All multi-byte fields are big-endian (SRP r16a: "all fields
//! are transmitted in big-endian byte order"); the layouts follow
//! `include/scsi/srp.h` of the Linux kernel.
//!
//! Every parser is total: any input yields `Ok` or a [`WireError`], never a
//! panic (checked by proptest and the fuzz targets in `fuzz/`).
//!
//! Each fixed-size structure (an IU, an IU header, a descriptor, a MAD
//! attribute) states its byte layout once, as a table of field ranges
//! declared with `layout!` (the `mod field` of smoltcp's `src/wire`); its
//! `parse` and `emit` both index with that table. A parser makes one length
//! check up front (`check_len`), which yields an array of exactly the
//! structure's size; each table is checked at compile time to tile that
//! array, so reading its fields cannot go out of bounds.

use std::ops::Range;

/// A field of a wire structure: its byte range from the structure's start.
type Field = Range<usize>;

/// Declare the byte layout of a fixed-size wire structure as a module of
/// [`Field`] constants plus its size `LEN`.
///
/// The fields are listed in wire order, reserved ones included (named
/// `RESERVED_<offset>`), and must tile `0..LEN` without gap or overlap:
/// this is checked at compile time, so a table cannot disagree with itself
/// or with `LEN`.
macro_rules! layout {
    (
        $(#[$m:meta])*
        mod $name:ident, LEN = $len:expr;
        $( $(#[$fm:meta])* $field:ident: $range:expr, )+
    ) => {
        $(#[$m])*
        #[allow(dead_code)]
        mod $name {
            use $crate::wire::Field;
            /// Size of the structure: the end of its last field.
            pub const LEN: usize = $len;
            $( $(#[$fm])* pub const $field: Field = $range; )+
            const _: () = $crate::wire::check_tiling(&[$($field),+], LEN);
        }
    };
}

/// Compile-time check behind [`layout!`]: `fields` tile `0..len` in order.
const fn check_tiling(fields: &[Field], len: usize) {
    let mut at = 0;
    let mut i = 0;
    while i < fields.len() {
        assert!(fields[i].start == at, "layout: gap or overlap before a field");
        assert!(fields[i].end > fields[i].start, "layout: empty field");
        at = fields[i].end;
        i += 1;
    }
    assert!(at == len, "layout: the fields do not end at LEN");
}

/// The one length check of a parser: the first `N` bytes of `buf` as an
/// array, or [`WireError::TooShort`] naming `what`. Bytes past `N` are
/// left to the caller (trailing data or a variable-length part).
#[inline]
fn check_len<'a, const N: usize>(buf: &'a [u8], what: &'static str) -> Result<&'a [u8; N], WireError> {
    buf.first_chunk().ok_or(WireError::TooShort {
        what,
        need: N,
        have: buf.len(),
    })
}

/// The `N` bytes of `buf` at offset `at` (a variable-length part), or
/// [`WireError::TooShort`] naming `what` with `need = at + N`.
#[inline]
fn check_len_at<'a, const N: usize>(
    buf: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<&'a [u8; N], WireError> {
    buf.get(at..)
        .and_then(<[u8]>::first_chunk)
        .ok_or(WireError::TooShort {
            what,
            need: at.saturating_add(N),
            have: buf.len(),
        })
}

/// The `n` bytes of `buf` at offset `at`, or [`WireError::TooShort`]
/// naming `what` with `need = at + n`.
#[inline]
fn take_at<'a>(buf: &'a [u8], at: usize, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    let end = at.saturating_add(n);
    buf.get(at..end).ok_or(WireError::TooShort {
        what,
        need: end,
        have: buf.len(),
    })
}

/// The emit-side length check: the first `N` bytes of `buf`, zeroed, or
/// [`WireError::BufferTooSmall`]. Emitters then write the fields, so
/// reserved fields go out as zero.
#[inline]
fn check_out_len<const N: usize>(buf: &mut [u8]) -> Result<&mut [u8; N], WireError> {
    let have = buf.len();
    let b = buf
        .first_chunk_mut()
        .ok_or(WireError::BufferTooSmall { need: N, have })?;
    *b = [0; N];
    Ok(b)
}

/// The emit-side check of a structure with a fixed `N`-byte header and a
/// variable-length part, `need` bytes in all: the header (zeroed) and the
/// rest of `buf`, or [`WireError::BufferTooSmall`].
#[inline]
fn check_out_split<const N: usize>(
    buf: &mut [u8],
    need: usize,
) -> Result<(&mut [u8; N], &mut [u8]), WireError> {
    let have = buf.len();
    let too_small = WireError::BufferTooSmall { need, have };
    if have < need {
        return Err(too_small);
    }
    let (head, rest) = buf.split_first_chunk_mut().ok_or(too_small)?;
    *head = [0; N];
    Ok((head, rest))
}

/// Copy `bytes` to offset `at` of `buf` (a variable-length part whose room
/// the caller has checked; a miscount is an error, not a panic).
#[inline]
fn put_at(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), WireError> {
    let end = at.saturating_add(bytes.len());
    let have = buf.len();
    buf.get_mut(at..end)
        .ok_or(WireError::BufferTooSmall { need: end, have })?
        .copy_from_slice(bytes);
    Ok(())
}

// Field accessors. They take the array `check_len` (or `check_out_len`)
// returned and a field of the same layout: the layout's compile-time tiling
// check keeps the field inside the array, and with both constant the
// optimiser removes the bounds checks. A width that does not match the
// field (`get_be32` of a 2-byte field) panics; the layout tests read and
// write every field.

/// Field `f` as an array of its width.
#[inline(always)]
fn get<const W: usize, const N: usize>(b: &[u8; N], f: Field) -> [u8; W] {
    let mut out = [0u8; W];
    out.copy_from_slice(&b[f]);
    out
}

#[inline(always)]
fn get_u8<const N: usize>(b: &[u8; N], f: Field) -> u8 {
    b[f.start]
}

#[inline(always)]
fn get_be16<const N: usize>(b: &[u8; N], f: Field) -> u16 {
    u16::from_be_bytes(get(b, f))
}

/// A 24-bit big-endian field.
#[inline(always)]
fn get_be24<const N: usize>(b: &[u8; N], f: Field) -> u32 {
    let [x, y, z] = get(b, f);
    u32::from_be_bytes([0, x, y, z])
}

#[inline(always)]
fn get_be32<const N: usize>(b: &[u8; N], f: Field) -> u32 {
    u32::from_be_bytes(get(b, f))
}

#[inline(always)]
fn get_be64<const N: usize>(b: &[u8; N], f: Field) -> u64 {
    u64::from_be_bytes(get(b, f))
}

/// Write `v` over field `f` (`v` is as wide as the field).
#[inline(always)]
fn set<const N: usize>(b: &mut [u8; N], f: Field, v: &[u8]) {
    b[f].copy_from_slice(v);
}

#[inline(always)]
fn set_u8<const N: usize>(b: &mut [u8; N], f: Field, v: u8) {
    b[f.start] = v;
}

#[inline(always)]
fn set_be16<const N: usize>(b: &mut [u8; N], f: Field, v: u16) {
    set(b, f, &v.to_be_bytes());
}

/// The low 24 bits of `v` as a 24-bit big-endian field.
#[inline(always)]
fn set_be24<const N: usize>(b: &mut [u8; N], f: Field, v: u32) {
    set(b, f, &v.to_be_bytes()[1..]);
}

#[inline(always)]
fn set_be32<const N: usize>(b: &mut [u8; N], f: Field, v: u32) {
    set(b, f, &v.to_be_bytes());
}

#[inline(always)]
fn set_be64<const N: usize>(b: &mut [u8; N], f: Field, v: u64) {
    set(b, f, &v.to_be_bytes());
}

pub mod mad;
pub mod srp;

pub use srp::*;

/// Lower-case hex digits of `b`, as identifiers (port IDs, GUIDs, GIDs)
/// are written in logs, add_target strings and on the command line.
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = vec![0u8; 2 * b.len()];
    for (d, &x) in s.chunks_exact_mut(2).zip(b) {
        d[0] = DIGITS[usize::from(x >> 4)];
        d[1] = DIGITS[usize::from(x & 0xf)];
    }
    String::from_utf8(s).expect("hex digits are ASCII")
}

/// The bytes of an identifier written as exactly `2 * N` hex digits;
/// colons between them are allowed (`fe80:0000:...`).
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b':').collect();
    // from_str_radix would take a sign: only digits are allowed.
    if digits.len() != 2 * N || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; N];
    for (b, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *b = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Errors from parsing or building SRP information units.
///
/// The variants are specific so that the protocol layer can map them onto
/// SRP_LOGIN_REJ reasons, SRP_T_LOGOUT reasons or SCSI sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends before `what` does: `need` bytes are required in
    /// total, only `have` are present.
    #[error("{what}: need {need} bytes, have {have}")]
    TooShort {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// The IU's first byte is not the opcode the parser was asked for.
    #[error("bad opcode: expected {expected:#04x}, got {got:#04x}")]
    BadOpcode { expected: u8, got: u8 },
    /// The IU's first byte is not an SRP opcode at all.
    #[error("unknown SRP opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// SRP_CMD BUFFER FORMAT byte (the raw byte: DATA-OUT format in the high
    /// nibble, DATA-IN format in the low nibble) holds a reserved value, or
    /// the immediate format (3) is used for DATA-IN. SRP r16a defines no
    /// DATA-IN immediate format; the protocol layer maps a bad high nibble to
    /// T_LOGOUT reason 6 and a bad low nibble to reason 7.
    #[error("unsupported data buffer descriptor format byte {0:#04x}")]
    BadDescriptorFormat(u8),
    /// An indirect descriptor carries more descriptors in the IU
    /// (`in_iu`, from the DESCRIPTOR COUNT field) than its table
    /// descriptor describes (`total` = table length / 16).
    #[error("indirect descriptor: {in_iu} descriptors in the IU but the table holds {total}")]
    DescriptorCountMismatch { in_iu: usize, total: usize },
    /// An indirect table descriptor's length is not a multiple of the
    /// 16-byte direct descriptor size.
    #[error("indirect table length {0} is not a multiple of 16")]
    BadIndirectTableLength(u32),
    /// The immediate data buffer descriptor ends past the negotiated
    /// immediate data offset (ib_srpt: "The immediate data buffer descriptor
    /// must occur before the immediate data itself").
    #[error(
        "immediate data descriptor ends at {desc_end}, after the immediate data offset {imm_data_offset}"
    )]
    ImmediateDataOverlap { desc_end: usize, imm_data_offset: usize },
    /// The destination buffer of an `emit` is too small.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// A value cannot be represented on the wire (emit side), e.g. a CDB
    /// longer than 16 + 252 bytes or a partial table not made of whole
    /// 16-byte descriptors.
    #[error("field cannot be encoded: {0}")]
    InvalidField(&'static str),
}

/// A bounds-checked big-endian read cursor over a byte slice.
///
/// Every read either advances the cursor or returns
/// [`WireError::TooShort`] naming `what` (the structure being parsed), the
/// total length needed from the start of the slice and the slice length.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`; `what` names the structure in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    /// Bytes consumed so far (the offset of the next read).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Rename the structure reported in later errors (e.g. when moving from
    /// a fixed header into a variable-length part).
    pub fn set_what(&mut self, what: &'static str) {
        self.what = what;
    }

    /// Check that at least `n` more bytes are present, without consuming.
    pub fn require(&self, n: usize) -> Result<(), WireError> {
        if self.remaining() < n {
            return Err(self.short(n));
        }
        Ok(())
    }

    /// Bytes left after the cursor.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread rest of the slice, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn short(&self, n: usize) -> WireError {
        WireError::TooShort {
            what: self.what,
            need: self.pos.saturating_add(n),
            have: self.buf.len(),
        }
    }

    /// Take the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (head, _) = self.rest().split_at_checked(n).ok_or(self.short(n))?;
        self.pos += n;
        Ok(head)
    }

    /// Take the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Skip `n` bytes (reserved fields).
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.take(n).map(|_| ())
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn be16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn be32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn be64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }
}

/// A bounds-checked big-endian write cursor over a caller's buffer.
///
/// Emitters first check the whole length with [`Writer::new`]'s `need`, so
/// individual writes never fail part-way; they still return `Result` so a
/// wrong size computation cannot panic.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A cursor over `buf`, which must hold at least `need` bytes.
    pub fn new(buf: &'a mut [u8], need: usize) -> Result<Self, WireError> {
        if buf.len() < need {
            return Err(WireError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        Ok(Self { buf, pos: 0 })
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Write `bytes` at the cursor.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self.pos.saturating_add(bytes.len());
        let have = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(WireError::BufferTooSmall { need: end, have })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Write `n` zero bytes (reserved fields, padding).
    pub fn zeros(&mut self, n: usize) -> Result<(), WireError> {
        let end = self.pos.saturating_add(n);
        let have = self.buf.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(WireError::BufferTooSmall { need: end, have })?
            .fill(0);
        self.pos = end;
        Ok(())
    }

    /// Zero-fill up to absolute offset `to` (no-op if already past it).
    pub fn pad_to(&mut self, to: usize) -> Result<(), WireError> {
        self.zeros(to.saturating_sub(self.pos))
    }

    pub fn u8(&mut self, v: u8) -> Result<(), WireError> {
        self.put(&[v])
    }

    pub fn be16(&mut self, v: u16) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    pub fn be32(&mut self, v: u32) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    pub fn be64(&mut self, v: u64) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_identifiers_round_trip() {
        let g = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0x77, 0x01];
        assert_eq!(hex(&g), "fe80000000000000000000fffe007701");
        assert_eq!(parse_hex::<16>("fe80000000000000000000fffe007701"), Some(g));
        assert_eq!(
            parse_hex::<16>("fe80:0000:0000:0000:0000:00ff:fe00:7701"),
            Some(g)
        );
        assert_eq!(parse_hex::<8>("000000fffe00770"), None);
        assert_eq!(parse_hex::<8>("000000fffe0077g1"), None);
        assert_eq!(parse_hex::<16>("fe80::1"), None);
        assert_eq!(parse_hex::<2>("+f+e"), None);
    }

    #[test]
    fn reader_reads_big_endian_and_reports_short() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut r = Reader::new(&b, "t");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.be16().unwrap(), 0x0203);
        assert_eq!(r.be32().unwrap(), 0x0405_0607);
        assert_eq!(r.be64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        let mut r = Reader::new(&b, "t");
        r.skip(7).unwrap();
        assert_eq!(r.be64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(
            r.u8(),
            Err(WireError::TooShort {
                what: "t",
                need: 16,
                have: 15
            })
        );
        assert_eq!(r.position(), 15);
        let mut r = Reader::new(&b, "t");
        assert!(r.take(usize::MAX).is_err());
    }

    #[test]
    fn writer_checks_bounds() {
        let mut b = [0xffu8; 8];
        assert_eq!(
            Writer::new(&mut b, 9).err(),
            Some(WireError::BufferTooSmall { need: 9, have: 8 })
        );
        let mut w = Writer::new(&mut b, 8).unwrap();
        w.be16(0x0102).unwrap();
        w.zeros(2).unwrap();
        w.be32(0x0304_0506).unwrap();
        assert!(w.u8(0).is_err());
        assert_eq!(b, [1, 2, 0, 0, 3, 4, 5, 6]);
    }
}
