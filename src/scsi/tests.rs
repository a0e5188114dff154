//! Command-level tests of the target core: every emulated command against
//! RAM and file LUNs, as the transport would drive them.

use std::sync::Arc;

use super::backstore::tests::TempFile;
use super::backstore::{BackstoreConfig, BackstoreKind};
use super::lun::{encode_lun, LunConfig, Nexus, Target, TargetConfig};
use super::sense::{Sense, SenseKey};
use super::{Completion, DataDir, ScsiStatus};
use crate::mem::DmaBuf;

pub(super) const INI_A: [u8; 16] = [0xa; 16];
pub(super) const INI_B: [u8; 16] = [0xb; 16];

pub(super) fn ram(size: u64, bs: u32) -> BackstoreConfig {
    BackstoreConfig {
        kind: BackstoreKind::Ram { size },
        block_size: bs,
        read_only: false,
    }
}

pub(super) fn file(t: &TempFile, bs: u32) -> BackstoreConfig {
    BackstoreConfig {
        kind: BackstoreKind::File {
            path: t.0.clone(),
            cache: Default::default(),
        },
        block_size: bs,
        read_only: false,
    }
}

pub(super) fn target(luns: Vec<LunConfig>) -> Arc<Target> {
    Target::new(TargetConfig {
        luns,
        ..TargetConfig::default()
    })
    .unwrap()
}

/// A nexus on a one-LUN target (LUN 0), with the creation unit attention
/// already consumed.
fn one(bs: BackstoreConfig) -> Arc<Nexus> {
    let t = target(vec![LunConfig::new(0, bs)]);
    let n = t.nexus(INI_A);
    let (c, _) = run(&n, 0, &tur(), &[]);
    assert_eq!(c.sense.unwrap(), Sense::power_on_reset());
    n
}

/// Drives one command like the transport: plan, move data-out (through the
/// zero-copy range when offered), execute, collect data-in.
pub(super) fn run(n: &Nexus, lun: u16, cdb: &[u8], out: &[u8]) -> (Completion, Vec<u8>) {
    let l = encode_lun(lun);
    let plan = match n.plan(l, cdb) {
        Ok(p) => p,
        Err(s) => return (Completion::check(s), Vec::new()),
    };
    assert_eq!(plan.dir == DataDir::None, plan.len == 0);
    if let Some(d) = &plan.direct {
        assert_eq!(d.len, plan.len);
        if plan.dir == DataDir::Out {
            d.buf.write(d.offset as usize, &out[..plan.len as usize]);
        }
        let c = n.execute(l, cdb, &d.buf, d.offset as usize, plan.len);
        let mut v = vec![0u8; c.data_in_len as usize];
        if plan.dir == DataDir::In {
            d.buf.read(d.offset as usize, &mut v);
        }
        return (c, v);
    }
    // Offset 512 into the buffer exercises non-zero buffer offsets.
    let buf = DmaBuf::new(plan.len as usize + 512).unwrap();
    if plan.dir == DataDir::Out {
        buf.write(512, &out[..plan.len as usize]);
    }
    let c = n.execute(l, cdb, &buf, 512, plan.len);
    let mut v = vec![0u8; c.data_in_len as usize];
    buf.read(512, &mut v);
    (c, v)
}

pub(super) fn good(n: &Nexus, lun: u16, cdb: &[u8], out: &[u8]) -> Vec<u8> {
    let (c, v) = run(n, lun, cdb, out);
    assert_eq!(c.status, ScsiStatus::GOOD, "cdb {cdb:02x?}: {:?}", c.sense);
    v
}

pub(super) fn fails(n: &Nexus, lun: u16, cdb: &[u8], out: &[u8], key: SenseKey, asc: u8, ascq: u8) -> Sense {
    let (c, _) = run(n, lun, cdb, out);
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION, "cdb {cdb:02x?}");
    let s = c.sense.unwrap();
    assert_eq!((s.key, s.asc, s.ascq), (key, asc, ascq), "cdb {cdb:02x?}: {s}");
    s
}

pub(super) fn illegal(n: &Nexus, cdb: &[u8], out: &[u8], asc: u8) -> Sense {
    fails(n, 0, cdb, out, SenseKey::IllegalRequest, asc, 0)
}

pub(super) fn tur() -> [u8; 6] {
    [0; 6]
}
pub(super) fn inquiry(evpd: bool, page: u8, alloc: u16) -> [u8; 6] {
    let a = alloc.to_be_bytes();
    [0x12, u8::from(evpd), page, a[0], a[1], 0]
}
pub(super) fn rw10(op: u8, lba: u32, blocks: u16, fua: bool) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [
        op,
        if fua { 0x08 } else { 0 },
        l[0],
        l[1],
        l[2],
        l[3],
        0,
        b[0],
        b[1],
        0,
    ]
}
fn rw12(op: u8, lba: u32, blocks: u32, fua: bool) -> [u8; 12] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [
        op,
        if fua { 0x08 } else { 0 },
        l[0],
        l[1],
        l[2],
        l[3],
        b[0],
        b[1],
        b[2],
        b[3],
        0,
        0,
    ]
}
fn rw16(op: u8, byte1: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = byte1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}
fn rw6(op: u8, lba: u32, blocks: u8) -> [u8; 6] {
    let l = lba.to_be_bytes();
    [op, l[1] & 0x1f, l[2], l[3], blocks, 0]
}
pub(super) fn read_cap16(alloc: u32) -> [u8; 16] {
    let mut c = rw16(0x9e, 0x10, 0, alloc);
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}
pub(super) fn report_luns(select: u8, alloc: u32) -> [u8; 12] {
    let a = alloc.to_be_bytes();
    [0xa0, 0, select, 0, 0, 0, a[0], a[1], a[2], a[3], 0, 0]
}
fn rsoc(byte2: u8, opcode: u8, sa: u16, alloc: u32) -> [u8; 12] {
    let a = alloc.to_be_bytes();
    let s = sa.to_be_bytes();
    [
        0xa3, 0x0c, byte2, opcode, s[0], s[1], a[0], a[1], a[2], a[3], 0, 0,
    ]
}
fn mode_sense10(byte1: u8, pc_page: u8, sub: u8, alloc: u16) -> [u8; 10] {
    let a = alloc.to_be_bytes();
    [0x5a, byte1, pc_page, sub, 0, 0, 0, a[0], a[1], 0]
}

pub(super) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Each kind of LUN at each block size: (name, nexus, temp file guard).
fn each_lun(blocks: u64, f: impl Fn(&str, u32, &Nexus)) {
    for bs in [512u32, 4096] {
        let size = blocks * u64::from(bs);
        f("ram", bs, &one(ram(size, bs)));
        let t = TempFile::new("cmd", size);
        f("file", bs, &one(file(&t, bs)));
    }
}

// ---------------------------------------------------------------- INQUIRY

#[test]
fn inquiry_standard_and_vpd() {
    each_lun(64, |kind, bs, n| {
        let d = good(n, 0, &inquiry(false, 0, 255), &[]);
        assert_eq!(d[0], 0);
        assert_eq!(d[2], 6, "SPC-4");
        assert_eq!(d[3] & 0x0f, 2);
        assert_eq!(usize::from(d[4]) + 5, d.len());
        assert!(d.len() >= 36);
        assert_ne!(d[7] & 0x02, 0, "CMDQUE");
        assert_eq!(&d[8..16], b"SRPTD   ");
        // Allocation length truncates.
        assert_eq!(good(n, 0, &inquiry(false, 0, 5), &[]).len(), 5);
        assert!(good(n, 0, &inquiry(false, 0, 0), &[]).is_empty());

        let d = good(n, 0, &inquiry(true, 0, 255), &[]);
        assert_eq!(&d[4..], &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
        let serial = good(n, 0, &inquiry(true, 0x80, 255), &[]);
        assert_eq!(serial[1], 0x80);
        let serial = &serial[4..];
        assert!(!serial.is_empty());
        let d = good(n, 0, &inquiry(true, 0x83, 255), &[]);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])) + 4, d.len());
        assert_eq!(&d[4..8], &[0x01, 0x03, 0x00, 16], "NAA designator header");
        assert_eq!(d[8] >> 4, 6, "NAA 6");
        assert_eq!(&d[24..26], &[0x02, 0x01], "T10 vendor id designator");
        assert_eq!(&d[28..36], b"SRPTD   ");
        assert_eq!(&d[36..36 + serial.len()], serial); // then the port's
                                                       // Stable: the same again.
        assert_eq!(d, good(n, 0, &inquiry(true, 0x83, 255), &[]));

        let d = good(n, 0, &inquiry(true, 0xb0, 255), &[]);
        assert_eq!(d.len(), 64);
        assert_eq!(d[4] & 1, 1, "WSNZ");
        let max_xfer = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        assert_eq!(max_xfer, (1 << 20) / bs);
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), (4096 / bs) as u16);
        let b2 = good(n, 0, &inquiry(true, 0xb2, 255), &[]);
        let d = good(n, 0, &inquiry(true, 0xb1, 255), &[]);
        assert_eq!(&d[4..6], &[0, 1], "non-rotating");
        let rc16 = good(n, 0, &read_cap16(32), &[]);
        // RAM and file LUNs are both thin provisioned (files by punching
        // holes).
        let _ = kind;
        assert_eq!(b2[5], 0xe4, "LBPU LBPWS LBPWS10 LBPRZ");
        assert_eq!(b2[6] & 7, 2);
        let b0 = good(n, 0, &inquiry(true, 0xb0, 255), &[]);
        assert_ne!(u32::from_be_bytes([b0[20], b0[21], b0[22], b0[23]]), 0);
        assert_eq!(rc16[14] & 0xc0, 0xc0, "LBPME LBPRZ");
        illegal(n, &inquiry(false, 0x80, 255), &[], 0x24);
        illegal(n, &inquiry(true, 0x42, 255), &[], 0x24);
        illegal(n, &[0x12, 0x02, 0, 0, 255, 0], &[], 0x24); // CMDDT
    });
}

#[test]
fn serial_override_and_ram_identity_differs_per_lun() {
    let mut l1 = LunConfig::new(1, ram(4096, 512));
    l1.serial = Some("MYSERIAL01".into());
    let t = target(vec![LunConfig::new(0, ram(4096, 512)), l1]);
    let info = t.luns();
    assert_eq!(info[1].serial, "MYSERIAL01");
    assert_ne!(info[0].naa, info[1].naa);
    let t2 = target(vec![LunConfig::new(0, ram(4096, 512))]);
    assert_eq!(t2.luns()[0].serial, info[0].serial, "derived stably");
}

// ---------------------------------------------------------------- READ / WRITE

#[test]
fn write_then_read_back_all_sizes() {
    each_lun(600, |kind, bs, n| {
        let b = bs as usize;
        let cases: Vec<(Vec<u8>, Vec<u8>, u64, usize)> = vec![
            (rw6(0x0a, 3, 2).to_vec(), rw6(0x08, 3, 2).to_vec(), 3, 2),
            (
                rw10(0x2a, 10, 7, false).to_vec(),
                rw10(0x28, 10, 7, false).to_vec(),
                10,
                7,
            ),
            (
                rw10(0x2a, 20, 4, true).to_vec(),
                rw10(0x28, 20, 4, true).to_vec(),
                20,
                4,
            ),
            (
                rw12(0xaa, 30, 5, true).to_vec(),
                rw12(0xa8, 30, 5, false).to_vec(),
                30,
                5,
            ),
            (
                rw16(0x8a, 0x08, 40, 9).to_vec(),
                rw16(0x88, 0, 40, 9).to_vec(),
                40,
                9,
            ),
            (
                rw16(0x8a, 0x10, 599, 1).to_vec(),
                rw16(0x88, 0x18, 599, 1).to_vec(),
                599,
                1,
            ),
        ];
        for (i, (w, r, lba, blocks)) in cases.into_iter().enumerate() {
            let data = pattern(blocks * b, i as u64 + u64::from(bs));
            let plan = n.plan(encode_lun(0), &w).unwrap();
            assert_eq!(plan.dir, DataDir::Out);
            assert_eq!(plan.len as usize, blocks * b);
            assert_eq!(plan.direct.is_some(), kind == "ram");
            if let Some(d) = &plan.direct {
                assert_eq!(d.offset, lba * u64::from(bs));
            }
            good(n, 0, &w, &data);
            let back = good(n, 0, &r, &[]);
            assert_eq!(back, data, "{kind} bs={bs} case {i}");
        }
        // Neighbouring blocks untouched: block 9 and 17 never written.
        let d = good(n, 0, &rw10(0x28, 9, 1, false), &[]);
        assert!(d.iter().all(|&x| x == 0));
        // READ(6) with length 0 transfers 256 blocks.
        let p = n.plan(encode_lun(0), &rw6(0x08, 0, 0)).unwrap();
        assert_eq!(p.len, 256 * bs);
        // Length 0 on (10)/(12)/(16): no transfer, GOOD.
        for cdb in [
            rw10(0x28, 5, 0, false).to_vec(),
            rw12(0xaa, 5, 0, false).to_vec(),
            rw16(0x8a, 0, 600, 0).to_vec(),
        ] {
            let p = n.plan(encode_lun(0), &cdb).unwrap();
            assert_eq!((p.dir, p.len), (DataDir::None, 0));
            assert!(good(n, 0, &cdb, &[]).is_empty());
        }
        assert!(n.is_blocking(encode_lun(0), &rw10(0x28, 0, 1, false)) == (kind == "file"));
        assert!(!n.is_blocking(encode_lun(0), &tur()));
    });
}

#[test]
fn read_write_errors() {
    each_lun(100, |_, bs, n| {
        let s = fails(
            n,
            0,
            &rw10(0x28, 99, 2, false),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        assert_eq!(s.info, Some(99));
        fails(
            n,
            0,
            &rw10(0x2a, 100, 1, false),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        fails(
            n,
            0,
            &rw16(0x88, 0, u64::MAX, 2),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        fails(
            n,
            0,
            &rw6(0x08, 0x1f_0000, 1),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        fails(
            n,
            0,
            &rw12(0xa8, 101, 0, false),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        // Beyond MAXIMUM TRANSFER LENGTH: INVALID FIELD IN CDB.
        let t = target(vec![LunConfig::new(0, ram(u64::from(bs) * 4096, bs))]);
        let big = t.nexus(INI_A);
        run(&big, 0, &tur(), &[]);
        let max = (1 << 20) / bs;
        good(&big, 0, &rw10(0x28, 0, max as u16, false), &[]);
        let s = illegal(&big, &rw10(0x28, 0, max as u16 + 1, false), &[], 0x24);
        assert_eq!(s.field.unwrap().byte, 7);
        // RDPROTECT / WRPROTECT without protection information.
        let s = illegal(n, &[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], &[], 0x24);
        assert_eq!(s.field.unwrap().byte, 1);
        illegal(n, &rw16(0x8a, 0x40, 0, 1), &[], 0x24);
    });
}

#[test]
fn read_only_lun_is_write_protected() {
    let t = TempFile::new("ro", 1 << 20);
    for cfg in [ram(1 << 20, 512), file(&t, 512)] {
        let cfg = BackstoreConfig {
            read_only: true,
            ..cfg
        };
        let n = one(cfg);
        good(&n, 0, &rw10(0x28, 0, 1, false), &[]);
        let blk = vec![1u8; 512];
        fails(
            &n,
            0,
            &rw10(0x2a, 0, 1, false),
            &blk,
            SenseKey::DataProtect,
            0x27,
            0,
        );
        fails(&n, 0, &rw6(0x0a, 0, 1), &blk, SenseKey::DataProtect, 0x27, 0);
        fails(&n, 0, &rw16(0x93, 0, 0, 1), &blk, SenseKey::DataProtect, 0x27, 0);
        good(&n, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        let d = good(&n, 0, &[0x1a, 0, 0x3f, 0, 255, 0], &[]);
        assert_ne!(d[2] & 0x80, 0, "WP");
    }
    let n = one(BackstoreConfig {
        read_only: true,
        ..ram(1 << 20, 512)
    });
    fails(
        &n,
        0,
        &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
        &[0; 24],
        SenseKey::DataProtect,
        0x27,
        0,
    );
    let d = good(&n, 0, &[0x1a, 0, 0x3f, 0, 255, 0], &[]);
    assert_ne!(d[2] & 0x80, 0, "WP");
    let n = one(ram(1 << 20, 512));
    let d = good(&n, 0, &[0x1a, 0, 0x3f, 0, 255, 0], &[]);
    assert_eq!(d[2] & 0x80, 0);
}

// ---------------------------------------------------------------- capacity

#[test]
fn read_capacity() {
    each_lun(100, |_, bs, n| {
        let d = good(n, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(d, [&99u32.to_be_bytes()[..], &bs.to_be_bytes()[..]].concat());
        let d = good(n, 0, &read_cap16(32), &[]);
        assert_eq!(d.len(), 32);
        assert_eq!(&d[..8], &99u64.to_be_bytes());
        assert_eq!(&d[8..12], &bs.to_be_bytes());
        assert_eq!(good(n, 0, &read_cap16(12), &[]).len(), 12);
        // Unknown SERVICE ACTION IN(16) action.
        let mut c = read_cap16(32);
        c[1] = 0x11;
        illegal(n, &c, &[], 0x24);
    });
}

#[test]
fn read_capacity_10_saturates() {
    // A sparse 3 TiB file: 6 Gi blocks of 512 bytes.
    let t = TempFile::new("huge", 3 << 40);
    let n = one(file(&t, 512));
    let d = good(&n, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&d[..4], &[0xff; 4]);
    let d = good(&n, 0, &read_cap16(32), &[]);
    assert_eq!(
        u64::from_be_bytes(d[..8].try_into().unwrap()),
        (3u64 << 40) / 512 - 1
    );
    // Short block descriptor saturates too; long one does not.
    let d = good(&n, 0, &[0x1a, 0, 0x08, 0, 255, 0], &[]);
    assert_eq!(&d[4..8], &[0xff; 4]);
    let d = good(&n, 0, &mode_sense10(0x10, 0x08, 0, 255), &[]);
    assert_eq!(d[4] & 1, 1, "LONGLBA");
    assert_eq!(
        u64::from_be_bytes(d[8..16].try_into().unwrap()),
        (3u64 << 40) / 512
    );
    // I/O at the far end.
    let blk = pattern(512, 9);
    let last = (3u64 << 40) / 512 - 1;
    good(&n, 0, &rw16(0x8a, 0, last, 1), &blk);
    assert_eq!(good(&n, 0, &rw16(0x88, 0, last, 1), &[]), blk);
}

// ---------------------------------------------------------------- cache

#[test]
fn synchronize_cache_and_fua_on_file() {
    for bs in [512u32, 4096] {
        let t = TempFile::new("sync", 64 * u64::from(bs));
        let n = one(file(&t, bs));
        let data = pattern(2 * bs as usize, 77);
        good(&n, 0, &rw10(0x2a, 5, 2, true), &data);
        good(&n, 0, &rw16(0x8a, 0x08, 7, 2), &data);
        // The bytes are in the file itself.
        let raw = std::fs::read(&t.0).unwrap();
        let off = 5 * bs as usize;
        assert_eq!(&raw[off..off + data.len()], &data[..]);
        good(&n, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        good(&n, 0, &[0x35, 0x02, 0, 0, 0, 10, 0, 0, 54, 0], &[]); // IMMED, to the end
        good(&n, 0, &rw16(0x91, 0, 63, 0), &[]);
        good(&n, 0, &rw16(0x91, 0, 0, 64), &[]);
        fails(
            &n,
            0,
            &rw16(0x91, 0, 64, 0),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        fails(
            &n,
            0,
            &rw16(0x91, 0, 60, 5),
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        fails(
            &n,
            0,
            &[0x35, 0, 0, 0, 0, 63, 0, 0, 2, 0],
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        assert!(n.is_blocking(encode_lun(0), &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
}

// ---------------------------------------------------------------- WRITE SAME / UNMAP

#[test]
fn write_same() {
    each_lun(64, |kind, bs, n| {
        let b = bs as usize;
        let blk = pattern(b, 5);
        // WRITE SAME(10) of a pattern over blocks 2..6.
        good(n, 0, &[0x41, 0, 0, 0, 0, 2, 0, 0, 4, 0], &blk);
        let d = good(n, 0, &rw10(0x28, 2, 4, false), &[]);
        assert!(d.chunks(b).all(|c| c == &blk[..]));
        // WRITE SAME(16) with UNMAP and a zero block: deallocated, reads zero.
        good(n, 0, &rw16(0x93, 0x08, 3, 2), &vec![0; b]);
        let d = good(n, 0, &rw10(0x28, 2, 4, false), &[]);
        assert_eq!(&d[..b], &blk[..]);
        assert!(d[b..3 * b].iter().all(|&x| x == 0));
        assert_eq!(&d[3 * b..], &blk[..]);
        // UNMAP bit with a nonzero pattern: written, not unmapped.
        good(n, 0, &rw16(0x93, 0x08, 3, 1), &blk);
        assert_eq!(good(n, 0, &rw10(0x28, 3, 1, false), &[]), blk);
        // NDOB: no data-out, zeros.
        let p = n.plan(encode_lun(0), &rw16(0x93, 0x09, 2, 4)).unwrap();
        assert_eq!((p.dir, p.len), (DataDir::None, 0));
        good(n, 0, &rw16(0x93, 0x09, 2, 4), &[]);
        assert!(good(n, 0, &rw10(0x28, 2, 4, false), &[]).iter().all(|&x| x == 0));
        // Errors.
        illegal(n, &rw16(0x93, 0, 0, 0), &blk, 0x24); // WSNZ
        illegal(n, &rw16(0x93, 0x10, 0, 1), &blk, 0x24); // ANCHOR
        illegal(n, &[0x41, 0x02, 0, 0, 0, 2, 0, 0, 4, 0], &blk, 0x24); // LBDATA
        illegal(n, &[0x41, 0x01, 0, 0, 0, 2, 0, 0, 4, 0], &blk, 0x24); // NDOB not in (10)
        fails(
            n,
            0,
            &rw16(0x93, 0, 63, 2),
            &blk,
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        let _ = kind;
    });
}

fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    p[0..2].copy_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
    p[2..4].copy_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
    for &(lba, n) in descs {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p
}

fn unmap_cdb(len: u16) -> [u8; 10] {
    let l = len.to_be_bytes();
    [0x42, 0, 0, 0, 0, 0, 0, l[0], l[1], 0]
}

#[test]
fn unmap() {
    for bs in [512u32, 4096] {
        let b = bs as usize;
        let n = one(ram(64 * u64::from(bs), bs));
        let data = pattern(16 * b, 3);
        good(&n, 0, &rw10(0x2a, 0, 16, false), &data);
        let p = unmap_list(&[(1, 2), (10, 1), (12, 0)]);
        good(&n, 0, &unmap_cdb(p.len() as u16), &p);
        let d = good(&n, 0, &rw10(0x28, 0, 16, false), &[]);
        for blk in 0..16 {
            let got = &d[blk * b..(blk + 1) * b];
            if [1, 2, 10].contains(&blk) {
                assert!(got.iter().all(|&x| x == 0), "block {blk}");
            } else {
                assert_eq!(got, &data[blk * b..(blk + 1) * b], "block {blk}");
            }
        }
        // One bad descriptor: nothing is unmapped.
        let p = unmap_list(&[(4, 1), (63, 2)]);
        fails(
            &n,
            0,
            &unmap_cdb(p.len() as u16),
            &p,
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        assert_eq!(good(&n, 0, &rw10(0x28, 4, 1, false), &[]), &data[4 * b..5 * b]);
        // Length 0: nothing; 1..7: PARAMETER LIST LENGTH ERROR.
        good(&n, 0, &unmap_cdb(0), &[]);
        illegal(&n, &unmap_cdb(4), &[0; 4], 0x1a);
        // ANCHOR is not supported.
        illegal(&n, &[0x42, 0x01, 0, 0, 0, 0, 0, 0, 24, 0], &[0; 24], 0x24);
        // Block descriptor data length larger than what was sent: clipped;
        // a partial trailing descriptor is ignored.
        let mut p = unmap_list(&[(5, 1)]);
        p[2..4].copy_from_slice(&100u16.to_be_bytes());
        p.extend_from_slice(&[0xff; 8]);
        good(&n, 0, &unmap_cdb(p.len() as u16), &p);
        assert!(good(&n, 0, &rw10(0x28, 5, 1, false), &[]).iter().all(|&x| x == 0));
        // Too many descriptors.
        let many: Vec<(u64, u32)> = (0..257).map(|i| (i % 64, 0)).collect();
        let p = unmap_list(&many);
        let s = illegal(&n, &unmap_cdb(p.len() as u16), &p, 0x26);
        assert!(!s.field.unwrap().in_cdb);
    }
    // File LUNs punch holes: the unmapped blocks read back as zeros, the
    // others keep their data.
    let t = TempFile::new("unmap", 1 << 20);
    let n = one(file(&t, 512));
    let data = pattern(8 * 512, 21);
    good(&n, 0, &rw10(0x2a, 0, 8, false), &data);
    let p = unmap_list(&[(1, 2)]);
    good(&n, 0, &unmap_cdb(p.len() as u16), &p);
    let back = good(&n, 0, &rw10(0x28, 0, 8, false), &[]);
    assert_eq!(&back[..512], &data[..512]);
    assert!(
        back[512..1536].iter().all(|&b| b == 0),
        "unmapped blocks read as zeros"
    );
    assert_eq!(&back[1536..], &data[1536..]);
}

// ---------------------------------------------------------------- VERIFY

#[test]
fn verify() {
    each_lun(64, |_, bs, n| {
        let b = bs as usize;
        let data = pattern(4 * b, 11);
        good(n, 0, &rw10(0x2a, 8, 4, false), &data);
        good(n, 0, &[0x2f, 0, 0, 0, 0, 8, 0, 0, 4, 0], &[]); // BYTCHK 0
        good(n, 0, &[0x2f, 0x02, 0, 0, 0, 8, 0, 0, 4, 0], &data); // BYTCHK 1
        good(n, 0, &rw16(0x8f, 0x02, 8, 4), &data);
        good(n, 0, &rw16(0x8f, 0x02, 8, 0), &[]); // no blocks
        let mut bad = data.clone();
        bad[b + 7] ^= 1;
        let s = fails(n, 0, &rw16(0x8f, 0x02, 8, 4), &bad, SenseKey::Miscompare, 0x1d, 0);
        assert_eq!(s.info, Some(b as u64 + 7));
        fails(
            n,
            0,
            &[0x2f, 0, 0, 0, 0, 62, 0, 0, 4, 0],
            &[],
            SenseKey::IllegalRequest,
            0x21,
            0,
        );
        illegal(n, &[0x2f, 0x04, 0, 0, 0, 8, 0, 0, 4, 0], &[], 0x24); // BYTCHK 10b
        illegal(n, &[0x2f, 0x06, 0, 0, 0, 8, 0, 0, 4, 0], &[], 0x24); // BYTCHK 11b
    });
}

#[test]
fn write_and_verify() {
    each_lun(64, |_, bs, n| {
        let b = bs as usize;
        // (10) BYTCHK 0, (12) BYTCHK 1, (16) BYTCHK 1: each lands and reads back.
        let cases: [(Vec<u8>, u64); 3] = [
            (vec![0x2e, 0, 0, 0, 0, 4, 0, 0, 2, 0], 4),
            (vec![0xae, 0x02, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0], 10),
            (rw16(0x8e, 0x02, 20, 2).to_vec(), 20),
        ];
        for (i, (cdb, lba)) in cases.iter().enumerate() {
            let data = pattern(2 * b, 40 + i as u64);
            good(n, 0, cdb, &data);
            assert_eq!(
                good(n, 0, &rw10(0x28, *lba as u32, 2, false), &[]),
                data,
                "{cdb:02x?}"
            );
        }
        // No blocks: nothing written, GOOD.
        good(n, 0, &[0x2e, 0x02, 0, 0, 0, 4, 0, 0, 0, 0], &[]);
        // BYTCHK 10b / 11b, WRPROTECT set, past the end.
        illegal(n, &[0x2e, 0x04, 0, 0, 0, 4, 0, 0, 1, 0], &[], 0x24);
        illegal(n, &[0x2e, 0x06, 0, 0, 0, 4, 0, 0, 1, 0], &[], 0x24);
        illegal(n, &[0x2e, 0x20, 0, 0, 0, 4, 0, 0, 1, 0], &[], 0x24);
        illegal(n, &rw16(0x8e, 0, 63, 2), &[], 0x21);
    });
    // A read-only LUN refuses it with DATA PROTECT / WRITE PROTECTED.
    let n = one(BackstoreConfig {
        read_only: true,
        ..ram(1 << 20, 512)
    });
    fails(
        &n,
        0,
        &[0x2e, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        &[0; 512],
        SenseKey::DataProtect,
        0x27,
        0,
    );
}

// ---------------------------------------------------------------- MODE SENSE / SELECT

#[test]
fn mode_sense() {
    each_lun(64, |kind, bs, n| {
        let d = good(n, 0, &[0x1a, 0, 0x3f, 0, 255, 0], &[]);
        assert_eq!(usize::from(d[0]) + 1, d.len());
        assert_eq!(d[2] & 0x10, 0x10, "DPOFUA");
        assert_eq!(d[3], 8);
        assert_eq!(&d[4..8], &64u32.to_be_bytes());
        assert_eq!(&d[9..12], &bs.to_be_bytes()[1..]);
        // All pages in ascending order: 01h, 08h, 0Ah, 1Ch.
        let pages = &d[12..];
        assert_eq!(
            &pages[..12],
            &[0x01, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "read-write error recovery"
        );
        let pages = &pages[12..];
        assert_eq!(&pages[..2], &[0x08, 0x12]);
        assert_eq!(pages[2] & 0x04 != 0, kind == "file", "WCE");
        assert_eq!(&pages[20..22], &[0x0a, 0x0a]);
        assert_eq!(
            &pages[32..],
            &[0x1c, 0x0a, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "DEXCPT = 1, MRIE 0"
        );
        assert_eq!(d.len(), 12 + 12 + 20 + 12 + 12);
        // Each new page alone.
        let d = good(n, 0, &[0x1a, 0x08, 0x01, 0, 255, 0], &[]);
        assert_eq!(&d[4..6], &[0x01, 0x0a]);
        let d = good(n, 0, &[0x1a, 0x08, 0x1c, 0, 255, 0], &[]);
        assert_eq!(&d[4..7], &[0x1c, 0x0a, 0x08]);
        let d = good(n, 0, &[0x1a, 0x08, 0x5c, 0, 255, 0], &[]);
        assert!(d[6..].iter().all(|&x| x == 0), "1Ch: nothing changeable");
        // DBD: no block descriptor.
        let d = good(n, 0, &[0x1a, 0x08, 0x08, 0, 255, 0], &[]);
        assert_eq!(d[3], 0);
        assert_eq!(d.len(), 4 + 20);
        // MODE SENSE(10), control page, short descriptor.
        let d = good(n, 0, &mode_sense10(0, 0x0a, 0, 255), &[]);
        assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])) + 2, d.len());
        assert_eq!(&d[6..8], &[0, 8]);
        assert_eq!(&d[16..18], &[0x0a, 0x0a]);
        assert_eq!(d[18] & 0x04, 0, "D_SENSE = 0");
        // Long LBA descriptor.
        let d = good(n, 0, &mode_sense10(0x10, 0x0a, 0, 255), &[]);
        assert_eq!(&d[6..8], &[0, 16]);
        assert_eq!(&d[8..16], &64u64.to_be_bytes());
        assert_eq!(&d[20..24], &bs.to_be_bytes());
        // Changeable values: nothing changeable.
        let d = good(n, 0, &[0x1a, 0x08, 0x48, 0, 255, 0], &[]);
        assert!(d[6..].iter().all(|&x| x == 0));
        // Default values = current.
        let cur = good(n, 0, &[0x1a, 0x08, 0x3f, 0, 255, 0], &[]);
        assert_eq!(good(n, 0, &[0x1a, 0x08, 0xbf, 0, 255, 0], &[]), cur);
        // All pages and subpages.
        assert_eq!(good(n, 0, &[0x1a, 0x08, 0x3f, 0xff, 255, 0], &[]), cur);
        // Truncation keeps the full mode data length.
        let d = good(n, 0, &[0x1a, 0, 0x3f, 0, 4, 0], &[]);
        assert_eq!(d.len(), 4);
        assert_eq!(usize::from(d[0]), 4 + 8 + 56 - 1);
        // Errors.
        illegal(n, &[0x1a, 0, 0xc8, 0, 255, 0], &[], 0x39);
        illegal(n, &[0x1a, 0, 0x19, 0, 255, 0], &[], 0x24);
        illegal(n, &[0x1a, 0, 0x08, 0x01, 255, 0], &[], 0x24);
    });
}

#[test]
fn mode_select() {
    each_lun(64, |_, _, n| {
        // Echo MODE SENSE(6) back: header fields reserved in MODE SELECT
        // are cleared the way Linux sd does.
        let mut p = good(n, 0, &[0x1a, 0, 0x3f, 0, 255, 0], &[]);
        p[0] = 0;
        p[2] = 0;
        good(n, 0, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
        // Just the caching page, no block descriptor.
        let cur = good(n, 0, &[0x1a, 0x08, 0x08, 0, 255, 0], &[]);
        let mut p = cur.clone();
        p[0] = 0;
        p[2] = 0;
        good(n, 0, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
        // Toggle WCE: rejected, pointing at the byte.
        p[6] ^= 0x04;
        let s = illegal(n, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p, 0x26);
        assert_eq!(s.field.unwrap().byte, 6);
        assert!(!s.field.unwrap().in_cdb);
        // MODE SELECT(10) with the control page.
        let mut p = good(n, 0, &mode_sense10(0x08, 0x0a, 0, 255), &[]);
        p[0] = 0;
        p[1] = 0;
        p[3] = 0;
        let l = (p.len() as u16).to_be_bytes();
        good(n, 0, &[0x55, 0x10, 0, 0, 0, 0, 0, l[0], l[1], 0], &p);
        p[10] |= 0x04; // D_SENSE
        illegal(n, &[0x55, 0x10, 0, 0, 0, 0, 0, l[0], l[1], 0], &p, 0x26);
        // Block descriptor with a different block length.
        let mut p = good(n, 0, &[0x1a, 0, 0x08, 0, 255, 0], &[]);
        p[0] = 0;
        p[2] = 0;
        p[10] ^= 0x02;
        illegal(n, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p, 0x26);
        // The informational exceptions page as it is: accepted; turning
        // DEXCPT off: rejected at that byte.
        let mut p = good(n, 0, &[0x1a, 0x08, 0x1c, 0, 255, 0], &[]);
        p[0] = 0;
        p[2] = 0;
        good(n, 0, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
        p[6] = 0;
        let s = illegal(n, &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p, 0x26);
        assert_eq!(s.field.unwrap().byte, 6);
        // Unsupported page.
        illegal(n, &[0x15, 0x10, 0, 0, 8, 0], &[0, 0, 0, 0, 0x19, 2, 0, 0], 0x26);
        // SP = 1, truncated list, zero length.
        illegal(n, &[0x15, 0x11, 0, 0, 4, 0], &[0; 4], 0x24);
        illegal(n, &[0x15, 0x10, 0, 0, 3, 0], &[0; 3], 0x1a);
        illegal(
            n,
            &[0x15, 0x10, 0, 0, 8, 0],
            &[0, 0, 0, 0, 0x08, 0x12, 0, 0],
            0x1a,
        );
        good(n, 0, &[0x15, 0x10, 0, 0, 0, 0], &[]);
        // PF = 0 with pages.
        illegal(n, &[0x15, 0, 0, 0, cur.len() as u8, 0], &cur, 0x24);
    });
}

// ---------------------------------------------------------------- misc

#[test]
fn request_sense_start_stop_and_unknown() {
    let n = one(ram(1 << 20, 512));
    let d = good(&n, 0, &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!(d.len(), 18);
    assert_eq!(d[0], 0x70);
    assert_eq!(d[2], 0);
    illegal(&n, &[0x03, 1, 0, 0, 252, 0], &[], 0x24);
    good(&n, 0, &[0x1b, 0, 0, 0, 1, 0], &[]);
    good(&n, 0, &[0x1b, 1, 0, 0, 0x02, 0], &[]);
    for op in [
        0x04u8,
        0x1e,
        0x35 + 0x80,
        0x5c,
        0x86,
        0x7f,
        0xc0,
        0xff,
        0x8c,
        0xa0 + 0x0f,
    ] {
        let mut cdb = [0u8; 16];
        cdb[0] = op;
        illegal(&n, &cdb, &[], 0x20);
    }
    fails(&n, 0, &[], &[], SenseKey::IllegalRequest, 0x20, 0);
    // NACA = 1 in the CONTROL byte: ACA is not supported (SAM-5 5.11.2).
    illegal(&n, &[0, 0, 0, 0, 0, 0x04], &[], 0x24);
    // A 16-byte CDB field carrying a 6-byte CDB: trailing bytes ignored.
    let mut cdb = [0u8; 16];
    cdb[15] = 0xff;
    good(&n, 0, &cdb, &[]);
}

#[test]
fn report_supported_operation_codes() {
    let n = one(ram(1 << 20, 512));
    let d = good(&n, 0, &rsoc(0, 0, 0, 8192), &[]);
    let len = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, d.len());
    assert_eq!(len % 8, 0);
    let descs: Vec<&[u8]> = d[4..].chunks(8).collect();
    assert_eq!(descs.len(), super::cdb::COMMANDS.len());
    let rc16 = descs.iter().find(|x| x[0] == 0x9e).unwrap();
    assert_eq!(&rc16[2..4], &[0, 0x10]);
    assert_eq!(rc16[5] & 1, 1, "SERVACTV");
    assert_eq!(&rc16[6..8], &[0, 16]);
    // With timeouts descriptors.
    let d = good(&n, 0, &rsoc(0x80, 0, 0, 8192), &[]);
    assert_eq!(d.len(), 4 + 20 * descs.len());
    assert_eq!(d[4 + 5] & 0x02, 0x02, "CTDP");
    // One command: READ(10).
    let d = good(&n, 0, &rsoc(1, 0x28, 0, 512), &[]);
    assert_eq!(d[1] & 7, 3);
    assert_eq!(&d[2..4], &[0, 10]);
    assert_eq!(
        &d[4..],
        &[0x28, 0x1a, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0]
    );
    // Not supported.
    let d = good(&n, 0, &rsoc(1, 0x04, 0, 512), &[]);
    assert_eq!(d, vec![0, 1, 0, 0]);
    // Opcode + service action.
    let d = good(&n, 0, &rsoc(2, 0x9e, 0x10, 512), &[]);
    assert_eq!(d[1] & 7, 3);
    assert_eq!(&d[4..6], &[0x9e, 0x10]);
    let d = good(&n, 0, &rsoc(2, 0xa3, 0x0c, 512), &[]);
    assert_eq!(&d[2..4], &[0, 12]);
    let d = good(&n, 0, &rsoc(2, 0x9e, 0x12, 512), &[]);
    assert_eq!(d[1] & 7, 1);
    let d = good(&n, 0, &rsoc(0x83, 0x28, 0, 512), &[]);
    assert_eq!(d[1], 0x83);
    assert_eq!(d.len(), 4 + 10 + 12);
    // Option 1 with a service-action opcode, option 2 without, bad option.
    illegal(&n, &rsoc(1, 0x9e, 0, 512), &[], 0x24);
    illegal(&n, &rsoc(2, 0x28, 0, 512), &[], 0x24);
    illegal(&n, &rsoc(4, 0x28, 0, 512), &[], 0x24);
    // A file LUN lists UNMAP too (it punches holes).
    let t = TempFile::new("rsoc", 1 << 20);
    let f = one(file(&t, 512));
    let d = good(&f, 0, &rsoc(0, 0, 0, 8192), &[]);
    assert!(d[4..].chunks(8).any(|x| x[0] == 0x42));
    assert_eq!(good(&f, 0, &rsoc(1, 0x42, 0, 64), &[])[1] & 7, 3);
}

#[test]
fn file_lun_through_worker_pool() {
    use super::pool::WorkerPool;
    use std::sync::mpsc::channel;
    let t = TempFile::new("pool", 1 << 20);
    let n = one(file(&t, 4096));
    let (tx, rx) = channel::<(u64, Completion)>();
    let tx = std::sync::Mutex::new(tx);
    struct Job {
        nexus: Arc<Nexus>,
        cdb: [u8; 10],
        buf: DmaBuf,
        tag: u64,
    }
    let pool = WorkerPool::new(2, 16, "scsi-io", move |j: Job| {
        let c = j.nexus.execute(encode_lun(0), &j.cdb, &j.buf, 0, 4096);
        tx.lock().unwrap().send((j.tag, c)).unwrap();
    })
    .unwrap();
    for tag in 0..8u64 {
        let cdb = rw10(0x2a, tag as u32, 1, tag % 2 == 0);
        assert!(n.is_blocking(encode_lun(0), &cdb));
        n.plan(encode_lun(0), &cdb).unwrap();
        let buf = DmaBuf::new(4096).unwrap();
        buf.fill(0, 4096, tag as u8 + 1);
        pool.submit(Job {
            nexus: Arc::clone(&n),
            cdb,
            buf,
            tag,
        })
        .map_err(|_| ())
        .unwrap();
    }
    for _ in 0..8 {
        let (_, c) = rx.recv().unwrap();
        assert!(c.is_good(), "{c:?}");
    }
    drop(pool);
    for tag in 0..8u8 {
        let d = good(&n, 0, &rw10(0x28, u32::from(tag), 1, false), &[]);
        assert!(d.iter().all(|&x| x == tag + 1));
    }
}

// ---------------------------------------------------------------- fuzz

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn check_completion(c: &Completion) {
        match c.status {
            ScsiStatus::GOOD => assert!(c.sense.is_none()),
            ScsiStatus::CHECK_CONDITION => {
                let s = c.sense.expect("CHECK CONDITION carries sense");
                let b = s.to_fixed();
                assert_eq!(b[0] & 0x7f, 0x70);
                assert_eq!(b[7], 10);
                assert_eq!(
                    Sense::parse_fixed(&b).map(|p| (p.key, p.asc, p.ascq)),
                    Some((s.key, s.asc, s.ascq))
                );
            }
            other => panic!("unexpected status {other:?}"),
        }
    }

    fn nexuses() -> (Vec<Arc<Nexus>>, TempFile) {
        let t = TempFile::new("fuzz", 256 * 1024);
        let ram_n = one(ram(256 * 1024, 512));
        let file_n = one(file(&t, 4096));
        let ro = one(BackstoreConfig {
            read_only: true,
            ..ram(64 * 1024, 4096)
        });
        (vec![ram_n, file_n, ro], t)
    }

    fn cdb_strategy() -> impl Strategy<Value = Vec<u8>> {
        let ops: Vec<u8> = super::super::cdb::COMMANDS.iter().map(|c| c.opcode).collect();
        (
            prop_oneof![3 => proptest::sample::select(ops), 1 => any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(|(op, mut rest)| {
                // Keep LBAs and lengths small often enough to reach execute.
                if rest.len() > 8 && rest[0] & 1 == 0 {
                    for b in rest.iter_mut().skip(1).take(8) {
                        *b = 0;
                    }
                }
                let mut v = vec![op];
                v.append(&mut rest);
                v
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

        #[test]
        fn random_cdbs_never_panic(cdb in cdb_strategy(), which in 0usize..3, lun in 0u16..3, fill in any::<u8>()) {
            let (ns, _t) = nexuses();
            let n = &ns[which];
            let l = encode_lun(lun);
            match n.plan(l, &cdb) {
                Err(s) => check_completion(&Completion::check(s)),
                Ok(p) => {
                    prop_assert_eq!(p.dir == DataDir::None, p.len == 0);
                    let len = p.len.min(1 << 20);
                    let buf = DmaBuf::new(len as usize + 8).unwrap();
                    buf.fill(0, len as usize, fill);
                    let c = n.execute(l, &cdb, &buf, 8, len);
                    check_completion(&c);
                    prop_assert!(c.data_in_len <= len);
                }
            }
            // Execute without plan, with a too-small buffer, must not panic either.
            let buf = DmaBuf::new(4096).unwrap();
            check_completion(&n.execute(l, &cdb, &buf, 0, 4096));
            check_completion(&n.execute(l, &cdb, &buf, 4000, 4096));
        }
    }
}
