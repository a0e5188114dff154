//! CDBs of every supported opcode, with data-out (write data and the
//! parameter lists of MODE SELECT, UNMAP, WRITE SAME, VERIFY, WRITE AND
//! VERIFY, COMPARE AND WRITE, PERSISTENT RESERVE OUT) under fuzzer
//! control, on five LUNs: RAM 512-byte blocks (shadowed), RAM 4 KiB blocks,
//! a read-only RAM LUN, a sparse file LUN beyond 2^32 blocks and a file LUN
//! with 4 KiB blocks.
//!
//! Oracles: every outcome is GOOD or CHECK CONDITION with a valid fixed
//! sense (a real key, a non-zero ASC), or RESERVATION CONFLICT for a
//! reservation command; a read-only LUN never changes and
//! never accepts a write; on the shadowed LUN a CHECK CONDITION changes
//! nothing, a GOOD READ returns the shadow, a GOOD VERIFY with BYTCHK=1
//! matched it, a GOOD WRITE or WRITE AND VERIFY stores exactly its data, a
//! GOOD COMPARE AND WRITE matched its verify half and stores its write
//! half (a miscompare is a CHECK CONDITION: nothing changes), WRITE SAME and UNMAP
//! change only the blocks they name, and every other command changes
//! nothing.
//!
//! EXTENDED COPY (83h): a first parameter byte with bit 0 set builds a
//! well-formed list from the rest of the input (CSCD descriptors naming
//! LUNs 0, 1, 2, 4 or no LUN, up to three segments, then a few byte
//! flips); otherwise the raw bytes are the list. Oracle: a GOOD copy left
//! LUNs 0, 1 and 4 exactly as its segments, applied in order as memmoves
//! to a model, make them (nothing outside the destination ranges changed,
//! every range reads back equal); any other outcome changed nothing; the
//! read-only LUN is never a destination.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use srptd::mem::DmaBuf;
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{encode_lun, LunConfig, Nexus, Target, TargetConfig};
use srptd::scsi::xcopy::{CopyList, Cscd, ListIdUsage, Segment};
use srptd::scsi::{ScsiStatus, Sense};

const BUF: usize = 1 << 20;
const LUN0_BYTES: usize = 1 << 20;
const RO_BYTES: usize = 512 << 10;

const BIG_BYTES: u64 = 3 << 40;
const SMALL_BYTES: u64 = 4 << 20;

struct World {
    nexus: Arc<Nexus>,
    buf: DmaBuf,
    lun0: Arc<DmaBuf>,
    ro: Arc<DmaBuf>,
    lun1: Arc<DmaBuf>,
    /// Each LUN's NAA designator, block size and blocks.
    luns: Vec<([u8; 16], u32, u64)>,
    /// The file LUNs' files (unlinked once open), emptied after each
    /// input that addressed them.
    files: [(std::fs::File, u64); 2],
    state: Mutex<State>,
}

struct State {
    shadow: Vec<u8>,
    /// LUN 0 after the command (kept to spare a 1 MiB allocation per input).
    now: Vec<u8>,
    /// LUN 1 (RAM, 4 KiB blocks) and file LUN 4, for EXTENDED COPY.
    lun1: Vec<u8>,
    file4: Vec<u8>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // On tmpfs when there is one: syncs (FUA, SYNCHRONIZE CACHE) cost
        // nothing there, and O_DIRECT works on tmpfs since Linux 6.6.
        let base = match std::path::Path::new("/dev/shm") {
            p if p.is_dir() => p.to_owned(),
            _ => std::env::temp_dir(),
        };
        let dir = base.join(format!("srptd-fuzz-scsi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.img");
        // 3 TiB sparse: 6.4 * 2^30 blocks of 512 bytes, beyond 2^32.
        let big_file = std::fs::File::create(&big).unwrap();
        big_file.set_len(BIG_BYTES).unwrap();
        let small = dir.join("small.img");
        // Read back by the EXTENDED COPY oracle.
        let small_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&small)
            .unwrap();
        small_file.set_len(SMALL_BYTES).unwrap();
        let specs = [
            "ram:1M,bs=512".to_owned(),
            "ram:1M,bs=4096".to_owned(),
            "ram:512K,bs=512,ro".to_owned(),
            format!("file:{},bs=512", big.display()),
            format!("file:{},bs=4096", small.display()),
        ];
        let luns = specs
            .iter()
            .enumerate()
            .map(|(i, s)| LunConfig::new(i as u16, BackstoreConfig::parse(s, "lun").unwrap()))
            .collect();
        let t = Target::new(TargetConfig { luns, ..TargetConfig::default() }).unwrap();
        let info = t.luns();
        assert!(info[3].num_blocks > 1 << 32);
        assert!(info[2].read_only);
        // The LUNs hold their files open: nothing is left behind on exit.
        std::fs::remove_dir_all(&dir).unwrap();
        World {
            nexus: t.nexus([1; 16]),
            buf: DmaBuf::new(BUF).unwrap(),
            lun0: info[0].dma_buf.clone().unwrap(),
            ro: info[2].dma_buf.clone().unwrap(),
            lun1: info[1].dma_buf.clone().unwrap(),
            luns: info.iter().map(|l| (l.naa, l.block_size, l.num_blocks)).collect(),
            files: [(big_file, BIG_BYTES), (small_file, SMALL_BYTES)],
            state: Mutex::new(State {
                shadow: vec![0; LUN0_BYTES],
                now: vec![0; LUN0_BYTES],
                lun1: vec![0; 1 << 20],
                file4: vec![0; SMALL_BYTES as usize],
            }),
        }
    })
}

/// Opcodes the fuzzer's first CDB byte is mapped onto (plus any byte).
const OPCODES: [u8; 39] = [
    0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x1b, 0x25, 0x28, 0x2a, 0x2f, 0x35, 0x41, 0x42, 0x55, 0x5a,
    0x88, 0x8a, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3, 0xa8, 0xaa, 0x2e, 0x8e, 0xae, 0x16, 0x17, 0x56, 0x57,
    0x5e, 0x5f, 0x89, 0x83, 0x84,
];

/// Reservation commands: the only ones that may meet RESERVATION CONFLICT
/// here (one I_T nexus, so it holds whatever reservation there is).
const RESERVATION_OPS: [u8; 6] = [0x16, 0x17, 0x56, 0x57, 0x5e, 0x5f];

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| a << 8 | u64::from(x))
}

/// LBA and block count of a READ/WRITE/VERIFY/WRITE SAME CDB.
fn lba_len(cdb: &[u8]) -> Option<(u64, u64)> {
    let g = |r: std::ops::Range<usize>| cdb.get(r).map(be);
    Some(match cdb[0] {
        0x08 | 0x0a => {
            let n = g(4..5)?;
            (g(1..4)? & 0x1f_ffff, if n == 0 { 256 } else { n })
        }
        0x28 | 0x2a | 0x2e | 0x2f | 0x41 => (g(2..6)?, g(7..9)?),
        0xa8 | 0xaa | 0xae => (g(2..6)?, g(6..10)?),
        0x88 | 0x8a | 0x8e | 0x8f | 0x93 => (g(2..10)?, g(10..14)?),
        0x89 => (g(2..10)?, g(13..14)?),
        _ => return None,
    })
}

fn check_sense(s: &Sense) {
    let mut b = [0u8; Sense::FIXED_LEN];
    assert_eq!(s.emit_fixed(&mut b), Sense::FIXED_LEN);
    assert_eq!(b[0] & 0x7f, 0x70, "fixed format");
    let key = b[2] & 0xf;
    assert!(
        matches!(key, 0x2 | 0x3 | 0x4 | 0x5 | 0x6 | 0x7 | 0xa | 0xb | 0xe),
        "sense key {key:#x} for a CHECK CONDITION"
    );
    assert_ne!(b[12], 0, "CHECK CONDITION without an ASC");
    assert!(usize::from(b[7]) + 8 <= Sense::FIXED_LEN, "additional sense length");
}

/// The first byte where `a` and `b` differ (compared with `==`, a
/// memcmp, before any byte loop: the shadow checks run on 1 MiB per input).
fn differs(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn is_zero(b: &[u8]) -> bool {
    static ZERO: [u8; 64 << 10] = [0; 64 << 10];
    b.chunks(ZERO.len()).all(|c| c == &ZERO[..c.len()])
}

/// Empties a file LUN's file (it reads zeros again and frees what earlier
/// writes allocated), so that an input sees the same LUN whatever ran
/// before it and the sparse file stays sparse.
fn reset_file((f, len): &(std::fs::File, u64)) {
    f.set_len(0).unwrap();
    f.set_len(*len).unwrap();
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else { return };
    let Some((&cdb_len, rest)) = rest.split_first() else { return };
    let cdb_len = (6 + usize::from(cdb_len % 27)).min(rest.len());
    let (cdb, params) = rest.split_at(cdb_len);
    let mut cdb = cdb.to_vec();
    if cdb.is_empty() {
        return;
    }
    if sel & 0x80 == 0 {
        cdb[0] = OPCODES[usize::from(cdb[0]) % OPCODES.len()];
    }
    let lun_no = u16::from(sel % 6); // 5: no such LUN
    let lun = encode_lun(lun_no);
    let w = world();
    let built;
    let params = if cdb[0] == 0x83 && params.first().is_some_and(|b| b & 1 == 1) {
        built = xcopy_list(w, &params[1..]);
        cdb = vec![0; 16];
        cdb[0] = 0x83;
        cdb[10..14].copy_from_slice(&(built.len() as u32).to_be_bytes());
        &built[..]
    } else {
        params
    };
    let mut state = w.state.lock().unwrap();
    let State { shadow, now, lun1, file4 } = &mut *state;
    if let Some(f) = lun_no.checked_sub(3).and_then(|i| w.files.get(usize::from(i))) {
        reset_file(f);
    }
    let xcopy = cdb[0] == 0x83;
    if xcopy {
        // The copy model starts from a file LUN 4 of zeros.
        reset_file(&w.files[1]);
    }

    let plan = match w.nexus.plan_command(lun, &cdb) {
        Ok(p) => p,
        Err(sense) => {
            check_sense(&sense);
            return;
        }
    };
    let (cmd, plan) = plan;
    let len = plan.len.min(BUF as u32);
    // Keep the sparse 3 TiB file sparse: small writes, no WRITE SAME
    // (which may write up to 256 MiB there).
    if lun_no == 3 && (len > 64 << 10 || matches!(cdb[0], 0x41 | 0x93)) {
        return;
    }
    // Data-out (and the parameter list) is the rest of the input, repeated.
    if !params.is_empty() {
        w.buf.with_bytes_mut(0, len as usize, |b| {
            // Copies of what is filled already, doubling: a few memcpys,
            // not a loop over up to 1 MiB of bytes.
            let first = b.len().min(params.len());
            b[..first].copy_from_slice(&params[..first]);
            let mut done = first;
            while done < b.len() {
                let n = done.min(b.len() - done);
                b.copy_within(..n, done);
                done += n;
            }
        });
    }
    let ro_before = (lun_no == 2).then(|| w.ro.with_bytes(0, RO_BYTES, |b| !is_zero(b)));
    if xcopy {
        w.lun1.read(0, lun1);
    }
    let done = w.nexus.run(&cmd, &w.buf, 0, len);

    assert!(
        done.status == ScsiStatus::GOOD
            || done.status == ScsiStatus::CHECK_CONDITION
            || (done.status == ScsiStatus::RESERVATION_CONFLICT && RESERVATION_OPS.contains(&cdb[0])),
        "status {:?} for {:#x}",
        done.status,
        cdb[0]
    );
    if done.status == ScsiStatus::CHECK_CONDITION {
        check_sense(&done.sense.expect("CHECK CONDITION carries sense"));
    }
    let good = done.status == ScsiStatus::GOOD;
    if xcopy {
        let mut list = vec![0u8; len as usize];
        w.buf.read(0, &mut list);
        let models = Models { lun0: shadow, lun1, file4 };
        xcopy_oracle(w, good.then_some(&list[..]), models, now);
        return;
    }
    let op = cdb[0];
    let writes = matches!(op, 0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e | 0x41 | 0x93 | 0x42 | 0x89);
    if lun_no == 2 {
        assert!(!(good && writes), "read-only LUN accepted {op:#x}");
        assert_eq!(ro_before, Some(false));
        assert!(w.ro.with_bytes(0, RO_BYTES, is_zero), "read-only LUN changed");
    }
    if lun_no != 0 {
        return;
    }
    // The shadowed LUN.
    w.lun0.read(0, now);
    let bs = 512usize;
    if !good || !writes {
        if let Some(at) = differs(now, shadow) {
            panic!("{op:#x} ended {:?} but changed the LUN at byte {at}", done.status);
        }
        if good {
            if let Some((lba, n)) = lba_len(&cdb).filter(|&(_, n)| n > 0) {
                let (lo, hi) = (lba as usize * bs, (lba + n) as usize * bs);
                if matches!(op, 0x08 | 0x28 | 0xa8 | 0x88) {
                    let mut got = vec![0u8; hi - lo];
                    w.buf.read(0, &mut got);
                    assert!(got == shadow[lo..hi], "GOOD READ returned other data than the LUN holds");
                }
                // VERIFY with BYTCHK = 01b compares the data-out.
                if matches!(op, 0x2f | 0x8f) && (cdb[1] >> 1) & 3 == 1 && n > 0 {
                    let mut got = vec![0u8; hi - lo];
                    w.buf.read(0, &mut got);
                    assert!(got == shadow[lo..hi], "GOOD VERIFY BYTCHK=1 of data that differs");
                }
            }
        }
        return;
    }
    // A GOOD write-class command.
    let mut data = vec![0u8; len as usize];
    w.buf.read(0, &mut data);
    match op {
        // WRITE and WRITE AND VERIFY.
        0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e => {
            let (lba, n) = lba_len(&cdb).unwrap();
            let (lo, hi) = (lba as usize * bs, (lba + n) as usize * bs);
            assert_eq!(data.len(), hi - lo, "WRITE transfer length");
            shadow[lo..hi].copy_from_slice(&data);
            if let Some(at) = differs(now, shadow) {
                panic!("GOOD WRITE lba {lba} n {n}: LUN differs from what was written at byte {at}");
            }
        }
        // COMPARE AND WRITE: the verify half matched what was there.
        0x89 => {
            let (lba, n) = lba_len(&cdb).unwrap();
            let (lo, hi) = (lba as usize * bs, (lba + n) as usize * bs);
            assert_eq!(data.len(), 2 * (hi - lo), "COMPARE AND WRITE transfer length");
            let (verify, write) = data.split_at(hi - lo);
            assert!(verify == &shadow[lo..hi], "GOOD COMPARE AND WRITE of verify data that differs");
            shadow[lo..hi].copy_from_slice(write);
            if let Some(at) = differs(now, shadow) {
                panic!("GOOD COMPARE AND WRITE lba {lba} n {n}: LUN differs from the write data at byte {at}");
            }
        }
        0x41 | 0x93 => {
            let (lba, n) = lba_len(&cdb).unwrap();
            let n = if n == 0 { (LUN0_BYTES / bs) as u64 - lba } else { n };
            let (lo, hi) = (lba as usize * bs, (lba + n) as usize * bs);
            let unmap = cdb[1] & 0x08 != 0;
            let ndob = op == 0x93 && cdb[1] & 0x01 != 0;
            let pattern = if ndob { vec![0u8; bs] } else { data[..bs].to_vec() };
            for b in (lo..hi).step_by(bs) {
                let blk = &now[b..b + bs];
                assert!(
                    blk == pattern || unmap && is_zero(blk),
                    "WRITE SAME lba {lba} n {n}: block {} holds neither the pattern nor zeros",
                    b / bs
                );
            }
            check_outside(now, shadow, &[(lo, hi)], "WRITE SAME");
            shadow.copy_from_slice(now);
        }
        0x42 => {
            // UNMAP: blocks named by a descriptor read zero afterwards
            // (LBPRZ = 1); nothing else changes.
            let mut ranges = Vec::new();
            for d in data.get(8..).unwrap_or(&[]).chunks_exact(16) {
                let (lba, n) = (be(&d[..8]), be(&d[8..12]));
                if n == 0 {
                    continue;
                }
                let lo = (lba as usize).saturating_mul(bs).min(LUN0_BYTES);
                let hi = (lba.saturating_add(n) as usize).saturating_mul(bs).min(LUN0_BYTES);
                if lo < hi {
                    ranges.push((lo, hi));
                }
            }
            // Each block once, however many descriptors name it.
            let ranges = merged(&ranges);
            for &(lo, hi) in &ranges {
                // Only descriptors the list length covers are in force; a
                // range left non-zero must then be unchanged. (Whole
                // ranges first: one memcmp instead of one per block.)
                if now[lo..hi] == shadow[lo..hi] || is_zero(&now[lo..hi]) {
                    continue;
                }
                for b in (lo..hi).step_by(bs) {
                    let blk = &now[b..b + bs];
                    assert!(
                        is_zero(blk) || blk == &shadow[b..b + bs],
                        "UNMAP left block {} neither zero nor as it was",
                        b / bs
                    );
                }
            }
            check_outside(now, shadow, &ranges, "UNMAP");
            shadow.copy_from_slice(now);
        }
        _ => unreachable!(),
    }
});

/// Bytes outside every range of `ranges` are unchanged. The gaps between
/// the ranges are compared whole (memcmp), not byte by byte.
fn check_outside(now: &[u8], shadow: &[u8], ranges: &[(usize, usize)], what: &str) {
    let mut at = 0;
    for (lo, hi) in merged(ranges).into_iter().chain([(now.len(), now.len())]) {
        let lo = lo.min(now.len());
        if at < lo {
            if let Some(i) = differs(&now[at..lo], &shadow[at..lo]) {
                panic!("{what} changed byte {}, outside the blocks it names", at + i);
            }
        }
        at = at.max(hi);
    }
}

/// The union of the byte ranges `ranges`, as sorted disjoint ranges.
fn merged(ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = ranges.iter().copied().filter(|&(lo, hi)| lo < hi).collect();
    v.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Input bytes read in order, zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u16()) << 48 | u64::from(self.u16()) << 32 | u64::from(self.u16()) << 16 | u64::from(self.u16())
    }
}

/// LUNs a built list's CSCD descriptors name (5: no LUN).
const XCOPY_LUNS: [usize; 5] = [0, 1, 2, 4, 5];

/// A well-formed EXTENDED COPY parameter list from `input`, then a few
/// bytes of it flipped.
fn xcopy_list(w: &World, input: &[u8]) -> Vec<u8> {
    let mut r = Bytes(input);
    let (usage, list_id) = match r.u8() % 3 {
        0 => (ListIdUsage::Hold, r.u8()),
        1 => (ListIdUsage::Discard, r.u8()),
        _ => (ListIdUsage::NoList, 0),
    };
    let n = 1 + usize::from(r.u8() % 3);
    let mut luns = Vec::new();
    let cscds = (0..n)
        .map(|_| {
            let t = r.u8();
            let lun = XCOPY_LUNS[usize::from(t) % XCOPY_LUNS.len()];
            let (naa, bs, blocks) = w.luns.get(lun).copied().unwrap_or(([0x60; 16], 512, 1 << 20));
            luns.push(blocks);
            let bs = if t & 0x80 != 0 { u32::from(r.u8()) * 512 } else { bs };
            Cscd::naa(naa, bs)
        })
        .collect();
    let segments = (0..r.u8() % 4)
        .map(|_| {
            // Sometimes a CSCD DESCRIPTOR ID past the list.
            let (src, dst) = (r.u8() % (n as u8 + 1), r.u8() % (n as u8 + 1));
            let f = r.u8();
            let cap = |i: u8| luns.get(usize::from(i)).copied().unwrap_or(64) + 8;
            let blocks = r.u16() % 2048;
            let (sl, dl) = (r.u64() % cap(src), r.u64() % cap(dst));
            Segment {
                dc: f & 1 != 0,
                cat: f & 2 != 0,
                ..Segment::blocks(u16::from(src), u16::from(dst), blocks, sl, dl)
            }
        })
        .collect();
    let mut p = CopyList { list_id, usage, cscds, segments }.emit();
    for _ in 0..r.u8() % 4 {
        let at = usize::from(r.u16()) % p.len();
        p[at] ^= r.u8();
    }
    p
}

/// The contents an EXTENDED COPY may change: LUN 0 (the shadow), LUN 1,
/// file LUN 4.
struct Models<'a> {
    lun0: &'a mut Vec<u8>,
    lun1: &'a mut Vec<u8>,
    file4: &'a mut Vec<u8>,
}

impl Models<'_> {
    fn lun(&mut self, lun: usize) -> Option<&mut Vec<u8>> {
        match lun {
            0 => Some(self.lun0),
            1 => Some(self.lun1),
            4 => Some(self.file4),
            _ => None,
        }
    }
}

/// The EXTENDED COPY oracle: `good_list` is the parameter list of a GOOD
/// command (`None`: it failed). `now` is scratch for LUN 0.
fn xcopy_oracle(w: &World, good_list: Option<&[u8]>, mut m: Models<'_>, now: &mut [u8]) {
    use std::os::unix::fs::FileExt;
    assert!(w.ro.with_bytes(0, RO_BYTES, is_zero), "EXTENDED COPY changed the read-only LUN");
    if let Some(p) = good_list.filter(|p| !p.is_empty()) {
        let list = CopyList::parse(p).expect("GOOD for a list the parser refuses");
        let lun_of = |c: &Cscd| {
            let naa = c.naa.expect("GOOD with a CSCD descriptor naming no LUN");
            w.luns.iter().position(|l| l.0 == naa).expect("GOOD with an unknown designator")
        };
        let ends = |s: &Segment| (lun_of(&list.cscds[usize::from(s.src)]), lun_of(&list.cscds[usize::from(s.dst)]));
        if list.segments.iter().any(|s| ends(s).0 == 3 || ends(s).1 == 3) {
            // The 3 TiB LUN has no model: take LUN 0 as it is now.
            w.lun0.read(0, m.lun0);
            return;
        }
        for s in &list.segments {
            let (src, dst) = ends(s);
            assert_ne!(dst, 2, "GOOD EXTENDED COPY to the read-only LUN");
            let (sbs, dbs) = (u64::from(w.luns[src].1), u64::from(w.luns[dst].1));
            let bytes = u64::from(s.blocks) * if s.dc { dbs } else { sbs };
            assert!(bytes % sbs == 0 && bytes % dbs == 0, "GOOD inexact segment");
            let (from, to) = ((s.src_lba * sbs) as usize, (s.dst_lba * dbs) as usize);
            let n = bytes as usize;
            let data = match m.lun(src) {
                Some(v) => v[from..from + n].to_vec(),
                None => vec![0; n], // LUN 2: zeros
            };
            m.lun(dst).expect("a modelled destination")[to..to + n].copy_from_slice(&data);
        }
    }
    w.lun0.read(0, now);
    if let Some(at) = differs(now, m.lun0) {
        panic!("EXTENDED COPY left LUN 0 other than modelled at byte {at}");
    }
    let mut lun1 = vec![0u8; m.lun1.len()];
    w.lun1.read(0, &mut lun1);
    if let Some(at) = differs(&lun1, m.lun1) {
        panic!("EXTENDED COPY left LUN 1 other than modelled at byte {at}");
    }
    let mut file = vec![0u8; m.file4.len()];
    w.files[1].0.read_exact_at(&mut file, 0).unwrap();
    if let Some(at) = differs(&file, m.file4) {
        panic!("EXTENDED COPY left LUN 4 other than modelled at byte {at}");
    }
    // The next input's model of LUN 4 starts from zeros again.
    m.file4.fill(0);
}
