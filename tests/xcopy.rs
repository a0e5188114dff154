//! EXTENDED COPY(LID1) and RECEIVE COPY RESULTS through whole SRP
//! channels: copies within one LUN and between LUNs (RAM and file, 512
//! and 4096-byte blocks) read back equal; a read-only destination, an
//! unknown or hidden designator, overlong lists, a segment beyond the
//! capacity and another initiator's reservation are refused with nothing
//! written.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{Access, LunConfig, Target, TargetConfig};
use srptd::scsi::xcopy::{self, CopyList, Cscd, ListIdUsage, Segment};

const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const RESERVATION_CONFLICT: u8 = 0x18;

/// Initiator A sees LUNs 0-3, LUN 3 read-only; only B sees LUN 4.
const A: [u8; 16] = [0xa1; 16];
const B: [u8; 16] = [0xb2; 16];

/// LUN 0: RAM, 512-byte blocks; 1: file, 512; 2: RAM, 4096; 3: RAM
/// read-only for A; 4: RAM for B only. 8 MiB each.
const LUNS: u16 = 5;
const LUN_BYTES: u64 = 8 << 20;

struct World {
    t: Arc<Target>,
    _file: TempPath,
}

struct TempPath(std::path::PathBuf);
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn world(test: &str) -> World {
    let path = std::env::temp_dir().join(format!("srptd-xcopy-{}-{test}", std::process::id()));
    std::fs::File::create(&path).unwrap().set_len(LUN_BYTES).unwrap();
    let spec = |s: &str| BackstoreConfig::parse(s, "lun").unwrap();
    let mut luns = vec![
        LunConfig::new(0, spec("ram:8M,bs=512")),
        LunConfig::new(1, spec(&format!("file:{},bs=512", path.display()))),
        LunConfig::new(2, spec("ram:8M,bs=4096")),
        LunConfig::new(3, spec("ram:8M,bs=512")),
        LunConfig::new(4, spec("ram:8M,bs=512")),
    ];
    luns[3].read_only_for = HashSet::from([A]);
    luns[4].access = Some(Access::Only(HashSet::from([B])));
    let t = Target::new(TargetConfig {
        luns,
        ..TargetConfig::default()
    })
    .unwrap();
    World {
        t,
        _file: TempPath(path),
    }
}

/// Logs `ini` in and takes the power-on unit attention of each LUN.
fn login(t: &Arc<Target>, ini: [u8; 16]) -> Sim {
    let mut s = Sim::login_as(t, ini, 16);
    for lun in 0..LUNS {
        s.command(lun, &[0; 6], None, 0, Layout::Direct);
    }
    s
}

/// The NAA designator and block size of each LUN.
fn cscd(t: &Target, lun: u16) -> Cscd {
    let i = t.luns().into_iter().find(|l| l.lun == lun).unwrap();
    Cscd::naa(i.naa, i.block_size)
}

fn xcopy_cdb(len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

/// Sends EXTENDED COPY with `list` to `lun`.
fn xcopy(s: &mut Sim, lun: u16, list: &[u8]) -> Response {
    let cdb = xcopy_cdb(list.len() as u32);
    s.command(lun, &cdb, Some(list), 0, Layout::Direct).0
}

/// A NOLIST copy of `segments` among the CSCD descriptors of `luns`.
fn list(t: &Target, luns: &[u16], segments: Vec<Segment>) -> Vec<u8> {
    CopyList {
        list_id: 0,
        usage: ListIdUsage::NoList,
        cscds: luns.iter().map(|&l| cscd(t, l)).collect(),
        segments,
    }
    .emit()
}

fn receive_copy_results(s: &mut Sim, lun: u16, sa: u8, list_id: u8) -> (Response, Vec<u8>) {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&256u32.to_be_bytes());
    s.command(lun, &c, None, 256, Layout::Direct)
}

fn ok(r: &Response) {
    assert_eq!(r.status, GOOD, "sense {:02x?}", r.sense);
}

fn check(r: &Response) -> (u8, u8, u8) {
    assert_eq!(r.status, CHECK_CONDITION, "status");
    r.sense_key_asc().unwrap()
}

fn bs(lun: u16) -> u32 {
    if lun == 2 {
        4096
    } else {
        512
    }
}

fn write(s: &mut Sim, lun: u16, lba: u64, data: &[u8]) {
    // At most 1 MiB (MAXIMUM TRANSFER LENGTH) a command.
    for (i, c) in data.chunks(1 << 20).enumerate() {
        let at = lba + (i << 20) as u64 / u64::from(bs(lun));
        ok(&s.write(lun, at, c, bs(lun), Layout::Direct));
    }
}

fn read(s: &mut Sim, lun: u16, lba: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut at = lba;
    while v.len() < len {
        let n = (len - v.len()).min(1 << 20);
        let (r, d) = s.read(lun, at, n as u32, bs(lun), Layout::Direct);
        ok(&r);
        v.extend_from_slice(&d);
        at += n as u64 / u64::from(bs(lun));
    }
    v
}

#[test]
fn inquiry_3pc_and_operating_parameters() {
    let w = world("inq");
    let mut s = login(&w.t, A);
    let (r, d) = s.command(0, &[0x12, 0, 0, 0, 96, 0], None, 96, Layout::Direct);
    ok(&r);
    assert_eq!(d[5] & 0x08, 0x08, "3PC");
    let (r, d) = receive_copy_results(&mut s, 1, 0x03, 0);
    ok(&r);
    assert_eq!(d.len(), 46);
    assert_eq!(u16::from_be_bytes([d[8], d[9]]), xcopy::MAX_CSCD_DESCRIPTORS);
    assert_eq!(&d[43..], &[2, 0x02, 0xe4]);
    // REPORT SUPPORTED OPERATION CODES, one command: 83h/00h supported.
    let rsoc = [0xa3, 0x0c, 0x02, 0x83, 0, 0, 0, 0, 0, 64, 0, 0];
    let (r, d) = s.command(0, &rsoc, None, 64, Layout::Direct);
    ok(&r);
    assert_eq!(d[1] & 7, 3);
    // LID4 is not: INVALID FIELD IN CDB at SERVICE ACTION.
    let mut cdb = xcopy_cdb(0);
    cdb[1] = 0x01;
    let (r, _) = s.command(0, &cdb, None, 0, Layout::Direct);
    assert_eq!(check(&r), (0x5, 0x24, 0x00));
    assert_eq!(&r.sense[15..18], &[0xc0 | 0x08 | 4, 0, 1]);
    // A PARAMETER LIST LENGTH of 0 copies nothing and is not an error.
    ok(&xcopy(&mut s, 0, &[]));
}

#[test]
fn copies_within_one_lun() {
    let w = world("within");
    let mut s = login(&w.t, A);
    let mut want = pattern(1 << 20, 1);
    write(&mut s, 0, 0, &want);
    // Apart, then overlapping both ways (each as a memmove).
    let segs = vec![
        Segment::blocks(0, 0, 256, 0, 1024),
        Segment::blocks(0, 0, 300, 100, 150),
        Segment::blocks(0, 0, 300, 500, 450),
    ];
    for seg in &segs {
        let (src, dst, n) = (
            seg.src_lba as usize * 512,
            seg.dst_lba as usize * 512,
            512 * seg.blocks as usize,
        );
        want.copy_within(src..src + n, dst);
    }
    ok(&xcopy(&mut s, 0, &list(&w.t, &[0], segs)));
    assert!(read(&mut s, 0, 0, 1 << 20) == want);
}

#[test]
fn copies_between_ram_and_file_luns() {
    let w = world("between");
    let mut s = login(&w.t, A);
    let data = pattern(4 << 20, 2);
    write(&mut s, 0, 0, &data);
    // RAM to file: 4 MiB in two segments (of several 1 MiB chunks), sent
    // to the source LUN.
    let segs = vec![
        Segment::blocks(0, 1, 6144, 0, 4096),
        Segment::blocks(0, 1, 2048, 6144, 10240),
    ];
    ok(&xcopy(&mut s, 0, &list(&w.t, &[0, 1], segs)));
    assert!(read(&mut s, 1, 4096, 4 << 20) == data);
    assert!(
        read(&mut s, 1, 0, 1 << 20) == vec![0u8; 1 << 20],
        "nothing before the range"
    );
    // File back to RAM, sent to the destination LUN.
    let segs = vec![Segment::blocks(0, 1, 2048, 4096, 8192)];
    ok(&xcopy(&mut s, 0, &list(&w.t, &[1, 0], segs)));
    assert!(read(&mut s, 0, 8192, 1 << 20) == data[..1 << 20]);
    // RAM 512-byte blocks to RAM 4096-byte blocks, and back with DC = 1
    // (NUMBER OF BLOCKS counts the destination's blocks).
    let segs = vec![Segment::blocks(0, 1, 64, 8, 2)];
    ok(&xcopy(&mut s, 2, &list(&w.t, &[0, 2], segs)));
    assert!(read(&mut s, 2, 2, 8 * 4096) == data[8 * 512..72 * 512]);
    let back = Segment {
        dc: true,
        ..Segment::blocks(0, 1, 64, 2, 2000)
    };
    ok(&xcopy(&mut s, 2, &list(&w.t, &[2, 0], vec![back])));
    assert!(read(&mut s, 0, 2000, 8 * 4096) == data[8 * 512..72 * 512]);
    // Not whole blocks of both: UNEXPECTED INEXACT SEGMENT.
    let r = xcopy(
        &mut s,
        2,
        &list(&w.t, &[0, 2], vec![Segment::blocks(0, 1, 9, 0, 0)]),
    );
    assert_eq!(check(&r), (0xa, 0x26, 0x0a));
}

#[test]
fn copy_status_of_a_list_identifier() {
    let w = world("status");
    let mut s = login(&w.t, A);
    let l = CopyList {
        list_id: 7,
        usage: ListIdUsage::Hold,
        cscds: vec![cscd(&w.t, 0), cscd(&w.t, 1)],
        segments: vec![
            Segment::blocks(0, 1, 2048, 0, 0),
            Segment::blocks(0, 1, 8, 0, 4096),
        ],
    };
    // Not known before it runs.
    let (r, _) = receive_copy_results(&mut s, 0, 0x00, 7);
    assert_eq!(check(&r), (0x5, 0x24, 0x00));
    ok(&xcopy(&mut s, 0, &l.emit()));
    let (r, d) = receive_copy_results(&mut s, 0, 0x00, 7);
    ok(&r);
    // Completed without errors, 2 segments, 1 MiB + 4 KiB in bytes.
    assert_eq!(d, [0, 0, 0, 8, 0x01, 0, 2, 0, 0, 0x10, 0x10, 0]);
    // A failed copy: completed with errors, no segment processed (the
    // list is checked whole before the first runs).
    let bad = CopyList {
        segments: vec![
            Segment::blocks(0, 1, 8, 0, 0),
            Segment::blocks(0, 1, 8, 0, 1 << 40),
        ],
        ..l
    };
    assert_eq!(check(&xcopy(&mut s, 0, &bad.emit())).0, 0xa);
    let (_, d) = receive_copy_results(&mut s, 0, 0x00, 7);
    assert_eq!(&d[4..12], &[0x02, 0, 0, 0, 0, 0, 0, 0]);
    // List identifiers are per I_T nexus.
    let mut b = login(&w.t, B);
    let (r, _) = receive_copy_results(&mut b, 0, 0x00, 7);
    assert_eq!(check(&r), (0x5, 0x24, 0x00));
}

#[test]
fn read_only_destination_is_write_protected() {
    let w = world("ro");
    let mut s = login(&w.t, A);
    write(&mut s, 0, 0, &pattern(4096, 3));
    let r = xcopy(
        &mut s,
        0,
        &list(&w.t, &[0, 3], vec![Segment::blocks(0, 1, 8, 0, 0)]),
    );
    assert_eq!(check(&r), (0x7, 0x27, 0x00));
    assert!(read(&mut s, 3, 0, 4096) == vec![0u8; 4096]);
    // It may be the source.
    ok(&xcopy(
        &mut s,
        3,
        &list(&w.t, &[3, 0], vec![Segment::blocks(0, 1, 8, 0, 0)]),
    ));
    assert!(read(&mut s, 0, 0, 4096) == vec![0u8; 4096]);
}

#[test]
fn unknown_or_hidden_designator_is_not_reachable() {
    let w = world("unknown");
    let mut s = login(&w.t, A);
    let unknown = Cscd::naa([0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], 512);
    for target in [unknown, cscd(&w.t, 4)] {
        let l = CopyList {
            list_id: 0,
            usage: ListIdUsage::NoList,
            cscds: vec![cscd(&w.t, 0), target],
            segments: vec![Segment::blocks(0, 1, 8, 0, 0)],
        };
        let r = xcopy(&mut s, 0, &l.emit());
        assert_eq!(check(&r), (0xa, 0x0d, 0x02));
        // Segment 0, segment pointer (SD) at DESTINATION CSCD DESCRIPTOR ID.
        assert_eq!(&r.sense[8..12], &[0, 0, 0, 0]);
        assert_eq!(&r.sense[15..18], &[0x80 | 0x20, 0, 6]);
    }
    // B sees LUN 4 and may copy to it.
    let mut b = login(&w.t, B);
    ok(&xcopy(
        &mut b,
        4,
        &list(&w.t, &[0, 4], vec![Segment::blocks(0, 1, 8, 0, 0)]),
    ));
    // A CSCD DESCRIPTOR ID past the list: UNREACHABLE COPY TARGET.
    let r = xcopy(&mut s, 0, &list(&w.t, &[0], vec![Segment::blocks(0, 1, 8, 0, 0)]));
    assert_eq!(check(&r), (0xa, 0x08, 0x04));
}

#[test]
fn overlong_lists_are_refused() {
    let w = world("long");
    let mut s = login(&w.t, A);
    let seg = || Segment::blocks(0, 0, 1, 0, 1);
    let n = usize::from(xcopy::MAX_CSCD_DESCRIPTORS) + 1;
    let r = xcopy(&mut s, 0, &list(&w.t, &vec![0; n], vec![seg()]));
    assert_eq!(check(&r), (0x5, 0x26, 0x06));
    let n = usize::from(xcopy::MAX_SEGMENT_DESCRIPTORS) + 1;
    let r = xcopy(&mut s, 0, &list(&w.t, &[0], vec![seg(); n]));
    assert_eq!(check(&r), (0x5, 0x26, 0x08));
    // Longer than taken in: PARAMETER LIST LENGTH ERROR, no data moved.
    let cdb = xcopy_cdb(xcopy::MAX_PARAMETER_LIST_BYTES + 1);
    let big = vec![0u8; xcopy::MAX_PARAMETER_LIST_BYTES as usize + 1];
    let (r, _) = s.command(0, &cdb, Some(&big), 0, Layout::Direct);
    assert_eq!(check(&r), (0x5, 0x1a, 0x00));
    // Shorter than its own header, or cut short.
    let r = xcopy(&mut s, 0, &[0u8; 8]);
    assert_eq!(check(&r), (0x5, 0x1a, 0x00));
    let l = list(&w.t, &[0], vec![seg()]);
    let r = xcopy(&mut s, 0, &l[..l.len() - 4]);
    assert_eq!(check(&r), (0x5, 0x1a, 0x00));
    // A segment longer than MAXIMUM SEGMENT LENGTH.
    let blocks = (xcopy::MAX_SEGMENT_BYTES / 512 + 1) as u16;
    let r = xcopy(
        &mut s,
        0,
        &list(&w.t, &[0], vec![Segment::blocks(0, 0, blocks, 0, 0)]),
    );
    assert_eq!(check(&r), (0x5, 0x26, 0x00));
    assert_eq!(&r.sense[15..18], &[0x80, 0, 16 + 32 + 10]);
}

#[test]
fn segment_beyond_capacity_writes_nothing() {
    let w = world("range");
    let mut s = login(&w.t, A);
    let blocks = LUN_BYTES / 512;
    write(&mut s, 0, 0, &pattern(8192, 4));
    // The first segment is good, the second ends past LUN 1: neither runs.
    let segs = vec![
        Segment::blocks(0, 1, 16, 0, 0),
        Segment::blocks(0, 1, 16, 0, blocks - 8),
    ];
    let r = xcopy(&mut s, 0, &list(&w.t, &[0, 1], segs));
    assert_eq!(check(&r), (0xa, 0x21, 0x00));
    assert_eq!(&r.sense[8..12], &[0, 0, 0, 1], "segment 1");
    assert_eq!(&r.sense[15..18], &[0x80 | 0x20, 0, 20], "DESTINATION LBA");
    assert!(read(&mut s, 1, 0, 8192) == vec![0u8; 8192]);
    // Source past the end too.
    let r = xcopy(
        &mut s,
        0,
        &list(&w.t, &[0, 1], vec![Segment::blocks(0, 1, 1, blocks, 0)]),
    );
    assert_eq!(&r.sense[15..18], &[0x80 | 0x20, 0, 12], "SOURCE LBA");
    // Up to the last block is fine.
    ok(&xcopy(
        &mut s,
        0,
        &list(&w.t, &[0, 1], vec![Segment::blocks(0, 1, 16, 0, blocks - 16)]),
    ));
    assert!(read(&mut s, 1, blocks - 16, 8192) == pattern(8192, 4));
}

fn pr_out(s: &mut Sim, lun: u16, sa: u8, rtype: u8, key: u64, sa_key: u64) -> Response {
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    let cdb = [0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
    s.command(lun, &cdb, Some(&p), 0, Layout::Direct).0
}

#[test]
fn another_initiators_reservation_conflicts() {
    let w = world("pr");
    let mut a = login(&w.t, A);
    let mut b = login(&w.t, B);
    // B holds WRITE EXCLUSIVE on LUN 1: A may read it, not write it.
    ok(&pr_out(&mut b, 1, 0, 0, 0, 0xb));
    ok(&pr_out(&mut b, 1, 1, 1, 0xb, 0));
    let to_1 = list(&w.t, &[0, 1], vec![Segment::blocks(0, 1, 8, 0, 0)]);
    let r = xcopy(&mut a, 0, &to_1);
    assert_eq!(r.status, RESERVATION_CONFLICT);
    ok(&xcopy(
        &mut a,
        0,
        &list(&w.t, &[1, 0], vec![Segment::blocks(0, 1, 8, 0, 0)]),
    ));
    // Addressed to LUN 1 itself: the command conflicts there.
    let r = xcopy(
        &mut a,
        1,
        &list(&w.t, &[1, 0], vec![Segment::blocks(0, 1, 8, 0, 0)]),
    );
    assert_eq!(r.status, RESERVATION_CONFLICT);
    // The holder copies.
    ok(&xcopy(&mut b, 0, &to_1));
    // EXCLUSIVE ACCESS on LUN 0 by B: A may not even read it.
    ok(&pr_out(&mut b, 0, 0, 0, 0, 0xb));
    ok(&pr_out(&mut b, 0, 1, 3, 0xb, 0));
    let r = xcopy(
        &mut a,
        2,
        &list(&w.t, &[0, 2], vec![Segment::blocks(0, 1, 8, 0, 0)]),
    );
    assert_eq!(r.status, RESERVATION_CONFLICT);
}
