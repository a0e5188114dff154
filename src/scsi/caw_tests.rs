//! COMPARE AND WRITE (SBC-3 5.2) through `Nexus::plan` and
//! `Nexus::execute`, on RAM and file LUNs.

use std::sync::Arc;

use super::backstore::tests::TempFile;
use super::backstore::{BackstoreConfig, BackstoreKind};
use super::lun::{encode_lun, LunConfig, Nexus, Target, TargetConfig};
use super::sense::{Sense, SenseKey};
use super::{Completion, DataDir, ScsiStatus};
use crate::mem::DmaBuf;

const INI_A: [u8; 16] = [0xa; 16];
const INI_B: [u8; 16] = [0xb; 16];

fn ram(size: u64, bs: u32, read_only: bool) -> BackstoreConfig {
    BackstoreConfig {
        kind: BackstoreKind::Ram { size },
        block_size: bs,
        read_only,
    }
}

fn target_with(bs: BackstoreConfig, max_transfer_bytes: u32) -> Arc<Target> {
    Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        max_transfer_bytes,
        ..TargetConfig::default()
    })
    .unwrap()
}

/// A nexus of `ini` with its power-on unit attention consumed.
fn nexus(t: &Arc<Target>, ini: [u8; 16]) -> Arc<Nexus> {
    let n = t.nexus(ini);
    assert_eq!(exec(&n, &[0; 6], &[]).sense, Some(Sense::power_on_reset()));
    n
}

fn one(bs: BackstoreConfig) -> Arc<Nexus> {
    nexus(&target_with(bs, 1 << 20), INI_A)
}

/// Plans and executes `cdb` on LUN 0 with `out` as data-out (at a nonzero
/// buffer offset, never through the zero-copy range).
fn exec(n: &Nexus, cdb: &[u8], out: &[u8]) -> Completion {
    let l = encode_lun(0);
    let plan = match n.plan(l, cdb) {
        Ok(p) => p,
        Err(s) => return Completion::check(s),
    };
    let buf = DmaBuf::new(plan.len as usize + 512).unwrap();
    if plan.dir == DataDir::Out {
        buf.write(512, &out[..plan.len as usize]);
    }
    n.execute(l, cdb, &buf, 512, plan.len)
}

fn caw_cdb(lba: u64, nlb: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = nlb;
    c
}

fn write(n: &Nexus, lba: u64, data: &[u8], bs: usize) {
    let mut c = [0u8; 16];
    c[0] = 0x8a;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&((data.len() / bs) as u32).to_be_bytes());
    assert!(exec(n, &c, data).is_good());
}

fn read(n: &Nexus, lba: u64, len: usize, bs: usize) -> Vec<u8> {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&((len / bs) as u32).to_be_bytes());
    let plan = n.plan(encode_lun(0), &c).unwrap();
    let buf = DmaBuf::new(len).unwrap();
    assert!(n.execute(encode_lun(0), &c, &buf, 0, plan.len).is_good());
    let mut v = vec![0u8; len];
    buf.read(0, &mut v);
    v
}

fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn both(verify: &[u8], write: &[u8]) -> Vec<u8> {
    [verify, write].concat()
}

/// Match then miscompare, on any backstore.
fn match_and_miscompare(n: &Nexus, bs: usize) {
    let old = fill(2 * bs, 1);
    write(n, 10, &old, bs);
    let new = fill(2 * bs, 2);
    let c = exec(n, &caw_cdb(10, 2), &both(&old, &new));
    assert!(c.is_good(), "{c:?}");
    assert_eq!(read(n, 10, 2 * bs, bs), new);
    // The first difference in the second block: INFORMATION is its offset
    // within the verify data.
    let mut verify = new.clone();
    verify[bs + 37] ^= 0xff;
    verify[bs + 40] ^= 0xff;
    let c = exec(n, &caw_cdb(10, 2), &both(&verify, &fill(2 * bs, 3)));
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    let s = c.sense.unwrap();
    assert_eq!(s, Sense::miscompare(bs as u64 + 37));
    let b = s.to_fixed();
    assert_eq!(b[0], 0xf0, "VALID = 1");
    assert_eq!((b[2] & 0xf, b[12], b[13]), (0x0e, 0x1d, 0x00));
    assert_eq!(&b[3..7], &(bs as u32 + 37).to_be_bytes());
    // Nothing was written.
    assert_eq!(read(n, 10, 2 * bs, bs), new);
    // First byte of the first block.
    let mut verify = new.clone();
    verify[0] ^= 1;
    let c = exec(n, &caw_cdb(10, 2), &both(&verify, &old));
    assert_eq!(c.sense, Some(Sense::miscompare(0)));
    assert_eq!(read(n, 10, 2 * bs, bs), new);
}

#[test]
fn match_and_miscompare_ram() {
    match_and_miscompare(&one(ram(1 << 20, 512, false)), 512);
    match_and_miscompare(&one(ram(1 << 20, 4096, false)), 4096);
}

#[test]
fn match_and_miscompare_file() {
    let f = TempFile::new("caw", 1 << 20);
    let cfg = BackstoreConfig {
        kind: BackstoreKind::File {
            path: f.0.clone(),
            cache: Default::default(),
        },
        block_size: 512,
        read_only: false,
    };
    let t = target_with(cfg, 1 << 20);
    let n = nexus(&t, INI_A);
    let cdb = caw_cdb(0, 1);
    let (c, _) = n.plan_command(encode_lun(0), &cdb).unwrap();
    assert!(n.runs_blocking(&c));
    assert!(n.is_blocking(encode_lun(0), &cdb));
    match_and_miscompare(&n, 512);
}

#[test]
fn plan_moves_both_halves_without_zero_copy() {
    let n = one(ram(1 << 20, 512, false));
    let p = n.plan(encode_lun(0), &caw_cdb(3, 4)).unwrap();
    assert_eq!((p.dir, p.len), (DataDir::Out, 2 * 4 * 512));
    assert!(p.direct.is_none());
    // FUA and DPO are accepted.
    let mut c = caw_cdb(3, 1);
    c[1] = 0x18;
    assert!(exec(&n, &c, &[0; 1024]).is_good());
}

#[test]
fn zero_blocks_is_not_an_error() {
    let n = one(ram(1 << 20, 512, false));
    let p = n.plan(encode_lun(0), &caw_cdb(5, 0)).unwrap();
    assert_eq!((p.dir, p.len), (DataDir::None, 0));
    assert!(exec(&n, &caw_cdb(5, 0), &[]).is_good());
    // It is no CAW: writes keep zero copy.
    let mut w = [0u8; 16];
    w[0] = 0x8a;
    w[13] = 1;
    assert!(n.plan(encode_lun(0), &w).unwrap().direct.is_some());
}

#[test]
fn too_many_blocks_is_invalid_field() {
    // 4 KiB transfers of 512-byte blocks: both halves fit for up to 4.
    let n = nexus(&target_with(ram(1 << 20, 512, false), 4096), INI_A);
    assert!(exec(&n, &caw_cdb(0, 4), &[0; 4096]).is_good());
    let c = exec(&n, &caw_cdb(0, 5), &[]);
    assert_eq!(c.sense, Some(Sense::invalid_field_in_cdb_at(13, None)));
    // VPD B0h MAXIMUM COMPARE AND WRITE LENGTH says so.
    assert_eq!(vpd_b0(&n)[5], 4);
    // Default 1 MiB: the one-byte field's 255.
    assert_eq!(vpd_b0(&one(ram(1 << 20, 512, false)))[5], 255);
    // Not even one block pair fits: 0, and every CAW is refused.
    let n = nexus(&target_with(ram(1 << 20, 4096, false), 4096), INI_A);
    assert_eq!(vpd_b0(&n)[5], 0);
    let c = exec(&n, &caw_cdb(0, 1), &[]);
    assert_eq!(c.sense, Some(Sense::invalid_field_in_cdb_at(13, None)));
}

fn vpd_b0(n: &Nexus) -> Vec<u8> {
    let cdb = [0x12, 1, 0xb0, 0, 64, 0];
    let buf = DmaBuf::new(64).unwrap();
    let c = n.execute(encode_lun(0), &cdb, &buf, 0, 64);
    assert!(c.is_good());
    let mut v = vec![0u8; 64];
    buf.read(0, &mut v);
    v
}

#[test]
fn lba_out_of_range() {
    let n = one(ram(1 << 20, 512, false));
    let last = (1 << 20) / 512 - 1;
    assert!(exec(&n, &caw_cdb(last, 1), &[0; 1024]).is_good());
    let c = exec(&n, &caw_cdb(last, 2), &[]);
    assert_eq!(c.sense, Some(Sense::lba_out_of_range().with_info(last)));
    let c = exec(&n, &caw_cdb(u64::MAX, 1), &[]);
    assert_eq!(c.sense.unwrap().asc, 0x21);
}

#[test]
fn read_only_is_write_protected() {
    let n = one(ram(1 << 20, 512, true));
    let c = exec(&n, &caw_cdb(0, 1), &[0; 1024]);
    assert_eq!(c.sense, Some(Sense::write_protected()));
    assert_eq!(c.sense.unwrap().key, SenseKey::DataProtect);
}

#[test]
fn wrprotect_is_invalid_field() {
    let n = one(ram(1 << 20, 512, false));
    let mut c = caw_cdb(0, 1);
    c[1] = 0x20;
    let s = exec(&n, &c, &[]).sense.unwrap();
    assert_eq!(s, Sense::invalid_field_in_cdb_at(1, Some(5)));
    // Reserved bytes 10-12.
    let mut c = caw_cdb(0, 1);
    c[11] = 1;
    assert_eq!(exec(&n, &c, &[]).sense.unwrap().asc, 0x24);
}

#[test]
fn short_data_out_writes_nothing() {
    let n = one(ram(1 << 20, 512, false));
    let l = encode_lun(0);
    let buf = DmaBuf::new(1024).unwrap();
    buf.write(512, &[0xee; 512]);
    let c = n.execute(l, &caw_cdb(0, 1), &buf, 0, 1000);
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    assert_eq!(read(&n, 0, 512, 512), vec![0; 512]);
}

#[test]
fn reservation_conflict() {
    let t = target_with(ram(1 << 20, 512, false), 1 << 20);
    let a = nexus(&t, INI_A);
    let b = nexus(&t, INI_B);
    // B registers key 0xb and takes a Write Exclusive reservation.
    let pr_out = |sa: u8, params: &[u8]| {
        let mut c = [0u8; 10];
        c[0] = 0x5f;
        c[1] = sa;
        c[2] = 0x01; // LU_SCOPE, Write Exclusive
        c[5..9].copy_from_slice(&(params.len() as u32).to_be_bytes());
        assert!(exec(&b, &c, params).is_good());
    };
    let mut p = [0u8; 24];
    p[8..16].copy_from_slice(&0xbu64.to_be_bytes());
    pr_out(0, &p);
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&0xbu64.to_be_bytes());
    pr_out(1, &p);
    let c = exec(&a, &caw_cdb(0, 1), &[0; 1024]);
    assert_eq!((c.status, c.sense), (ScsiStatus::RESERVATION_CONFLICT, None));
    // The holder may.
    assert!(exec(&b, &caw_cdb(0, 1), &[0; 1024]).is_good());
}

#[test]
fn first_caw_ends_zero_copy_writes() {
    let n = one(ram(1 << 20, 512, false));
    let mut w = [0u8; 16];
    w[0] = 0x8a;
    w[13] = 1;
    let mut r = w;
    r[0] = 0x88;
    assert!(n.plan(encode_lun(0), &w).unwrap().direct.is_some());
    n.plan(encode_lun(0), &caw_cdb(0, 1)).unwrap();
    assert!(n.plan(encode_lun(0), &w).unwrap().direct.is_none());
    // Reads keep it.
    assert!(n.plan(encode_lun(0), &r).unwrap().direct.is_some());
}

#[test]
fn reported_as_supported() {
    let n = one(ram(1 << 20, 512, false));
    // REPORT SUPPORTED OPERATION CODES, one command (option 1).
    let cdb = [0xa3, 0x0c, 0x01, 0x89, 0, 0, 0, 0, 0, 64, 0, 0];
    let buf = DmaBuf::new(64).unwrap();
    let c = n.execute(encode_lun(0), &cdb, &buf, 0, 64);
    assert!(c.is_good());
    let mut v = vec![0u8; c.data_in_len as usize];
    buf.read(0, &mut v);
    assert_eq!(v[1] & 0x07, 0x03, "SUPPORT: as in a standard");
    assert_eq!(&v[2..4], &[0, 16]);
    assert_eq!(v[4], 0x89);
    assert_eq!(v[5], 0x1a, "DPO, FUA, FUA_NV; no WRPROTECT");
    assert_eq!(
        &v[14..18],
        &[0, 0, 0, 0xff],
        "reserved 10-12, NUMBER OF LOGICAL BLOCKS 13"
    );
}
