//! The EXTENDED COPY parameter list parser, the segment checks, the copy
//! loop and the copy status of `xcopy.rs`.

use std::sync::Arc;

use super::*;
use crate::scsi::backstore::RamBackstore;
use crate::scsi::sense::FieldPointer;

const NAA_A: [u8; 16] = [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const NAA_B: [u8; 16] = [0x6f; 16];

/// What sg_xcopy sends: list identifier 1, LIST ID USAGE 10b, the source
/// and destination CSCD descriptors, one segment.
fn sg_xcopy_list() -> CopyList {
    CopyList {
        list_id: 1,
        usage: ListIdUsage::Discard,
        cscds: vec![Cscd::naa(NAA_A, 512), Cscd::naa(NAA_B, 512)],
        segments: vec![Segment::blocks(0, 1, 128, 0, 64)],
    }
}

fn parse_err(p: &[u8]) -> Sense {
    CopyList::parse(p).expect_err("malformed list accepted")
}

/// `(key, asc, ascq)` and the parameter list field pointer.
fn code(s: &Sense) -> (SenseKey, u8, u8) {
    (s.key, s.asc, s.ascq)
}

fn list_ptr(byte: usize, bit: Option<u8>) -> Option<FieldPointer> {
    Some(FieldPointer {
        in_cdb: false,
        segment: false,
        byte: byte as u16,
        bit,
    })
}

/// The sense (code and field pointer) for the list `good` with
/// `edit` applied to its bytes from `from` on.
fn edited(good: &[u8], from: usize, edit: &dyn Fn(&mut [u8])) -> ((SenseKey, u8, u8), Option<FieldPointer>) {
    let mut p = good.to_vec();
    edit(&mut p[from..]);
    let s = parse_err(&p);
    (code(&s), s.field)
}

const INVALID: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x26, 0x00);
const LENGTH: (SenseKey, u8, u8) = (SenseKey::IllegalRequest, 0x1a, 0x00);

#[test]
fn parses_what_sg_xcopy_sends() {
    let l = sg_xcopy_list();
    let p = l.emit();
    assert_eq!(p.len(), 16 + 2 * 32 + 28);
    assert_eq!(&p[..4], &[1, 0x10, 0, 64]);
    assert_eq!(&p[8..12], &[0, 0, 0, 28]);
    // The CSCD descriptor as sg_xcopy builds it from VPD page 83h.
    assert_eq!(&p[16..24], &[0xe4, 0, 0, 0, 0x01, 0x03, 0, 16]);
    assert_eq!(&p[16 + 29..16 + 32], &[0, 2, 0]);
    let got = CopyList::parse(&p).unwrap();
    assert_eq!(got.emit(), p);
    assert_eq!(got.id(), Some(1));
    assert_eq!((got.cscds[1].at, got.segments[0].at), (48, 80));
    assert_eq!(
        got.segments[0],
        Segment {
            at: 80,
            ..l.segments[0]
        }
    );
    // Trailing bytes past the descriptors are ignored.
    let mut longer = p.clone();
    longer.extend_from_slice(&[0xff; 8]);
    assert!(CopyList::parse(&longer).is_ok());
    // NOLIST: no list identifier.
    let nolist = CopyList {
        list_id: 0,
        usage: ListIdUsage::NoList,
        ..l
    };
    assert_eq!(CopyList::parse(&nolist.emit()).unwrap().id(), None);
}

#[test]
fn each_malformed_header_field_is_pointed_at() {
    let good = sg_xcopy_list().emit();
    let case = |edit: &dyn Fn(&mut [u8])| edited(&good, 0, edit);
    assert_eq!(code(&parse_err(&good[..15])), LENGTH);
    assert_eq!(code(&parse_err(&[])), LENGTH);
    assert_eq!(case(&|p| p[1] |= 0x80), (INVALID, list_ptr(1, Some(7))));
    assert_eq!(case(&|p| p[1] |= 0x40), (INVALID, list_ptr(1, Some(6))));
    // LIST ID USAGE 01b is reserved.
    assert_eq!(case(&|p| p[1] = 0x08), (INVALID, list_ptr(1, Some(4))));
    // NOLIST with a list identifier.
    assert_eq!(case(&|p| p[1] = 0x18), (INVALID, list_ptr(0, None)));
    assert_eq!(case(&|p| p[6] = 0x21), (INVALID, list_ptr(6, Some(5))));
    // Inline data is not supported (MAXIMUM INLINE DATA LENGTH 0).
    assert_eq!(case(&|p| p[15] = 4), (INVALID, list_ptr(12, None)));
    // More descriptors than OPERATING PARAMETERS allows.
    let many_cscds = ((MAX_CSCD_DESCRIPTORS + 1) * 32).to_be_bytes();
    let (c, f) = case(&|p| p[2..4].copy_from_slice(&many_cscds));
    assert_eq!(
        (c, f),
        ((SenseKey::IllegalRequest, 0x26, 0x06), list_ptr(2, None))
    );
    let many_segs = (u32::from(MAX_SEGMENT_DESCRIPTORS + 1) * 28).to_be_bytes();
    let (c, f) = case(&|p| p[8..12].copy_from_slice(&many_segs));
    assert_eq!(
        (c, f),
        ((SenseKey::IllegalRequest, 0x26, 0x08), list_ptr(8, None))
    );
    // Lists the parameter list length cuts short.
    assert_eq!(code(&parse_err(&good[..good.len() - 1])), LENGTH);
    assert_eq!(case(&|p| p[11] = 56).0, LENGTH);
}

#[test]
fn each_malformed_cscd_field_is_pointed_at() {
    let good = sg_xcopy_list().emit();
    // Fields of the second CSCD descriptor (at 48).
    let case = |edit: &dyn Fn(&mut [u8])| edited(&good, 48, edit);
    let (c, f) = case(&|d| d[0] = 0xe5);
    assert_eq!(
        (c, f),
        ((SenseKey::IllegalRequest, 0x26, 0x07), list_ptr(48, None))
    );
    // NUL (a null device) and peripheral device types but 00h.
    assert_eq!(case(&|d| d[1] = 0x20), (INVALID, list_ptr(49, Some(5))));
    assert_eq!(case(&|d| d[1] = 0x01), (INVALID, list_ptr(49, Some(0))));
    assert_eq!(case(&|d| d[1] = 0x0e), (INVALID, list_ptr(49, Some(3))));
    // CODE SET other than binary, ASSOCIATION other than the LU.
    assert_eq!(case(&|d| d[4] = 0x02), (INVALID, list_ptr(52, Some(3))));
    assert_eq!(case(&|d| d[5] = 0x13), (INVALID, list_ptr(53, Some(5))));
    assert_eq!(case(&|d| d[7] = 21), (INVALID, list_ptr(55, None)));
    // PROTOCOL IDENTIFIER and PIV as VPD page 83h has them are ignored;
    // LU ID TYPE too.
    let mut p = good.clone();
    p[48 + 4] |= 0x90;
    p[48 + 5] |= 0x80;
    p[48 + 1] |= 0xc0;
    assert_eq!(CopyList::parse(&p).unwrap().cscds[1].naa, Some(NAA_B));
    // A designator other than a 16-byte NAA one names no LUN.
    p[48 + 7] = 8;
    assert_eq!(CopyList::parse(&p).unwrap().cscds[1].naa, None);
    // A CSCD descriptor list length that is not whole descriptors.
    let mut p = good.clone();
    p[3] = 40;
    p.truncate(16 + 40);
    p[8..12].fill(0);
    p[48] = 0xe4;
    assert_eq!(
        (code(&parse_err(&p)), parse_err(&p).field),
        (INVALID, list_ptr(2, None))
    );
}

#[test]
fn each_malformed_segment_field_is_pointed_at() {
    let good = sg_xcopy_list().emit();
    let case = |edit: &dyn Fn(&mut [u8])| edited(&good, 80, edit);
    let (c, f) = case(&|d| d[0] = 0x0a);
    assert_eq!(
        (c, f),
        ((SenseKey::IllegalRequest, 0x26, 0x09), list_ptr(80, None))
    );
    assert_eq!(case(&|d| d[3] = 0x14), (INVALID, list_ptr(82, None)));
    assert_eq!(case(&|d| d[1] = 0x08), (INVALID, list_ptr(81, Some(3))));
    assert_eq!(case(&|d| d[9] = 1), (INVALID, list_ptr(89, Some(0))));
    // DC, CAT and FCO are taken.
    let mut p = good.clone();
    p[81] = 0x07;
    let s = CopyList::parse(&p).unwrap().segments[0];
    assert!(s.dc && s.cat);
    // A segment descriptor list length that is not whole descriptors.
    let mut p = good.clone();
    p[11] = 30;
    p.extend_from_slice(&[0x02, 0]);
    assert_eq!(
        (code(&parse_err(&p)), parse_err(&p).field),
        (INVALID, list_ptr(8, None))
    );
}

#[test]
fn plans_the_parameter_list() {
    assert_eq!(plan(0).unwrap().dir, DataDir::None);
    assert_eq!(plan(16).unwrap().len, 16);
    assert_eq!(
        plan(MAX_PARAMETER_LIST_BYTES).unwrap().len,
        MAX_PARAMETER_LIST_BYTES
    );
    for bad in [1, 15, MAX_PARAMETER_LIST_BYTES + 1, u32::MAX] {
        let s = plan(bad).unwrap_err();
        assert_eq!(code(&s), LENGTH, "{bad}");
        assert_eq!(s.field.map(|f| (f.in_cdb, f.byte)), Some((true, 10)));
    }
}

const FACTS_512: LunFacts = LunFacts {
    block_size: 512,
    num_blocks: 1024,
    readable: true,
    writable: Writable::Yes,
};
const FACTS_4K: LunFacts = LunFacts {
    block_size: 4096,
    num_blocks: 128,
    ..FACTS_512
};

/// The CHECK CONDITION sense of a refused list.
fn refused(list: &CopyList, facts: &[Option<LunFacts>]) -> Sense {
    match check_segments(list, facts) {
        Err(Refusal::Check(s)) => s,
        r => panic!("expected CHECK CONDITION, got {r:?}"),
    }
}

/// COPY ABORTED in segment `seg` with a segment pointer at `byte`.
fn assert_aborted(s: &Sense, asc: (u8, u8), seg: u32, byte: u16) {
    assert_eq!(code(s), (SenseKey::CopyAborted, asc.0, asc.1), "{s}");
    assert_eq!(s.csi, seg);
    let f = s.field.expect("segment pointer");
    assert!(f.segment && !f.in_cdb);
    assert_eq!(f.byte, byte);
}

/// [`sg_xcopy_list`] as parsed (offsets set).
fn parsed() -> CopyList {
    CopyList::parse(&sg_xcopy_list().emit()).unwrap()
}

fn two_segments(second: Segment) -> CopyList {
    let first = Segment::blocks(0, 1, 8, 0, 0);
    CopyList {
        segments: vec![Segment { at: 80, ..first }, Segment { at: 108, ..second }],
        ..parsed()
    }
}

#[test]
fn checks_segments_against_the_luns() {
    let facts = [Some(FACTS_512), Some(FACTS_512)];
    let l = two_segments(Segment::blocks(1, 0, 16, 1000, 8));
    let moves = check_segments(&l, &facts).unwrap();
    assert_eq!(moves.len(), 2);
    let want = Move {
        segment: 1,
        src: 1,
        dst: 0,
        src_lba: 1000,
        dst_lba: 8,
        bytes: 16 * 512,
    };
    assert_eq!(moves[1], want);
    // A CSCD DESCRIPTOR ID beyond the list: UNREACHABLE COPY TARGET.
    let s = refused(&two_segments(Segment::blocks(2, 0, 1, 0, 0)), &facts);
    assert_aborted(&s, (0x08, 0x04), 1, 4);
    let s = refused(&two_segments(Segment::blocks(0, 7, 1, 0, 0)), &facts);
    assert_aborted(&s, (0x08, 0x04), 1, 6);
    // A designator no LUN has: COPY TARGET DEVICE NOT REACHABLE.
    let s = refused(&l, &[Some(FACTS_512), None]);
    assert_aborted(&s, (0x0d, 0x02), 0, 6);
    let s = refused(&l, &[None, Some(FACTS_512)]);
    assert_aborted(&s, (0x0d, 0x02), 0, 4);
    // Beyond the capacity: LOGICAL BLOCK ADDRESS OUT OF RANGE, the LBA in
    // INFORMATION. Up to the last block is in range.
    let s = refused(&two_segments(Segment::blocks(0, 1, 16, 1009, 0)), &facts);
    assert_aborted(&s, (0x21, 0x00), 1, 12);
    assert_eq!(s.info, Some(1009));
    let s = refused(&two_segments(Segment::blocks(0, 1, 16, 0, u64::MAX - 1)), &facts);
    assert_aborted(&s, (0x21, 0x00), 1, 20);
    assert!(check_segments(&two_segments(Segment::blocks(0, 1, 16, 1008, 1008)), &facts).is_ok());
    assert!(check_segments(&two_segments(Segment::blocks(0, 1, 0, 1024, 1024)), &facts).is_ok());
    // Longer than MAXIMUM SEGMENT LENGTH: INVALID FIELD IN PARAMETER LIST
    // at the NUMBER OF BLOCKS of the second segment (at 80 + 28).
    let blocks = (MAX_SEGMENT_BYTES / 512 + 1) as u16;
    let s = refused(&two_segments(Segment::blocks(0, 1, blocks, 0, 0)), &facts);
    assert_eq!((code(&s), s.field), (INVALID, list_ptr(108 + 10, None)));
}

#[test]
fn checks_access_and_block_sizes() {
    let l = parsed();
    let facts = |src: LunFacts, dst: LunFacts| [Some(src), Some(dst)];
    // Reservations of another initiator: the source as a READ, the
    // destination as a WRITE.
    let unreadable = LunFacts {
        readable: false,
        ..FACTS_512
    };
    let r = check_segments(&l, &facts(unreadable, FACTS_512));
    assert_eq!(r, Err(Refusal::Conflict));
    assert!(check_segments(&l, &facts(FACTS_512, unreadable)).is_ok());
    let conflict = LunFacts {
        writable: Writable::Conflict,
        ..FACTS_512
    };
    assert_eq!(
        check_segments(&l, &facts(FACTS_512, conflict)),
        Err(Refusal::Conflict)
    );
    let ro = LunFacts {
        writable: Writable::Protected,
        ..FACTS_512
    };
    let s = refused(&l, &facts(FACTS_512, ro));
    assert_eq!(code(&s), (SenseKey::DataProtect, 0x27, 0x00));
    assert!(check_segments(&l, &facts(ro, FACTS_512)).is_ok());
    // DISK BLOCK LENGTH must be the LUN's (or 0).
    let s = refused(&l, &facts(FACTS_512, FACTS_4K));
    assert_eq!((code(&s), s.field), (INVALID, list_ptr(48 + 29, None)));
    let mut any = l.clone();
    any.cscds[1].block_len = 0;
    // 128 blocks of 512 bytes are 16 of 4096.
    let m = check_segments(&any, &facts(FACTS_512, FACTS_4K)).unwrap();
    assert_eq!(m[0].bytes, 65536);
    // Inexact: 3 blocks of 512 are not whole 4096-byte blocks.
    any.segments[0].blocks = 3;
    let s = refused(&any, &facts(FACTS_512, FACTS_4K));
    assert_aborted(&s, (0x26, 0x0a), 0, 10);
    // DC: NUMBER OF BLOCKS counts destination blocks.
    any.segments[0].dc = true;
    let m = check_segments(&any, &facts(FACTS_512, FACTS_4K)).unwrap();
    assert_eq!(m[0].bytes, 3 * 4096);
}

fn ram(blocks: u64, bs: u32) -> Disk {
    let store = RamBackstore::new(blocks * u64::from(bs), bs, false).unwrap();
    Disk::new(Arc::new(store), "x".into(), NAA_A, 1 << 20)
}

fn fill(d: &Disk, seed: u8) -> Vec<u8> {
    let n = (d.store().num_blocks() * u64::from(d.store().block_size())) as usize;
    let v: Vec<u8> = (0..n).map(|i| (i / 7) as u8 ^ (i >> 12) as u8 ^ seed).collect();
    d.store().dma_buf().unwrap().write(0, &v);
    v
}

fn contents(d: &Disk) -> Vec<u8> {
    let b = d.store().dma_buf().unwrap();
    let mut v = vec![0u8; b.len()];
    b.read(0, &mut v);
    v
}

fn one_move(src: usize, dst: usize, src_lba: u64, dst_lba: u64, bytes: u64) -> Move {
    Move {
        segment: 0,
        src,
        dst,
        src_lba,
        dst_lba,
        bytes,
    }
}

#[test]
fn copies_within_a_lun_as_memmove() {
    // Small chunks: a segment takes several.
    let buf = DmaBuf::new(4096).unwrap();
    for (src, dst, blocks) in [
        (0u64, 40u64, 24u64),
        (40, 0, 24),
        (10, 20, 30),
        (20, 10, 30),
        (5, 5, 9),
    ] {
        let d = ram(128, 512);
        let mut want = fill(&d, 3);
        let (s, t, n) = (src as usize * 512, dst as usize * 512, blocks as usize * 512);
        want.copy_within(s..s + n, t);
        let mut p = Progress::default();
        let m = [one_move(0, 0, src, dst, blocks * 512)];
        run_moves(&m, &[Some(&d)], &buf, &mut p, &mut |_| {}).unwrap();
        assert!(contents(&d) == want, "{src} -> {dst} x {blocks}");
        assert_eq!(
            p,
            Progress {
                segments: 1,
                bytes: blocks * 512
            }
        );
    }
}

#[test]
fn copies_between_block_sizes() {
    let buf = DmaBuf::new(8192).unwrap();
    let (a, b) = (ram(256, 512), ram(64, 4096));
    let va = fill(&a, 1);
    let mut vb = fill(&b, 2);
    // 48 blocks of 512 from LBA 8 to LBA 3 of 4096, then 2 blocks of 4096
    // back to LBA 200; each step after a segment.
    let moves = [
        one_move(0, 1, 8, 3, 48 * 512),
        Move {
            segment: 1,
            ..one_move(1, 0, 60, 200, 2 * 4096)
        },
    ];
    let mut steps = Vec::new();
    let mut p = Progress::default();
    run_moves(&moves, &[Some(&a), Some(&b)], &buf, &mut p, &mut |p| {
        steps.push(*p)
    })
    .unwrap();
    vb[3 * 4096..3 * 4096 + 48 * 512].copy_from_slice(&va[8 * 512..56 * 512]);
    let mut va2 = va.clone();
    va2[200 * 512..200 * 512 + 8192].copy_from_slice(&vb[60 * 4096..62 * 4096]);
    assert!(contents(&b) == vb);
    assert!(contents(&a) == va2);
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[1],
        Progress {
            segments: 2,
            bytes: 48 * 512 + 8192
        }
    );
}

#[test]
fn a_failed_write_is_copy_aborted_with_the_residual() {
    let buf = DmaBuf::new(4096).unwrap();
    let a = ram(64, 512);
    // The destination is smaller than the range checked against it
    // (it shrank): the write past its end fails after 8 blocks.
    let b = ram(8, 512);
    let mut p = Progress::default();
    let m = [Move {
        segment: 3,
        ..one_move(0, 1, 0, 0, 16 * 512)
    }];
    let s = run_moves(&m, &[Some(&a), Some(&b)], &buf, &mut p, &mut |_| {}).unwrap_err();
    assert_eq!(s.key, SenseKey::CopyAborted);
    assert_eq!(s.csi, 3);
    assert_eq!(s.info, Some(8), "8 destination blocks not written");
    assert_eq!(
        p,
        Progress {
            segments: 0,
            bytes: 4096
        }
    );
}

#[test]
fn copy_status_per_list_identifier() {
    let mgr = CopyManager::default();
    let r = CopyResults::default();
    // Unknown list identifier: INVALID FIELD IN CDB at LIST IDENTIFIER.
    let s = r.receive(0, 5).unwrap_err();
    assert_eq!(
        (s.asc, s.field.map(|f| (f.in_cdb, f.byte))),
        (0x24, Some((true, 2)))
    );
    let run = r.begin(&mgr, 5).unwrap();
    assert_eq!(&r.receive(0, 5).unwrap()[4..8], &[0, 0, 0, 0], "running");
    assert_eq!(r.begin(&mgr, 5).unwrap_err(), operation_in_progress());
    run.update(&Progress {
        segments: 1,
        bytes: 512,
    });
    assert_eq!(&r.receive(0, 5).unwrap()[4..12], &[0, 0, 1, 0, 0, 0, 2, 0]);
    run.finish(
        true,
        &Progress {
            segments: 2,
            bytes: 1024,
        },
    );
    let d = r.receive(0, 5).unwrap();
    assert_eq!(d, [0, 0, 0, 8, 0x01, 0, 2, 0, 0, 0, 4, 0]);
    // Reused: the old status goes.
    let run = r.begin(&mgr, 5).unwrap();
    drop(run);
    assert_eq!(
        r.status(5).unwrap().state,
        CopyState::Failed,
        "dropped unfinished"
    );
    assert_eq!(mgr.running.load(Ordering::Relaxed), 0);
    // At most MAX_CONCURRENT_COPIES running per I_T nexus.
    let runs: Vec<_> = (0..MAX_CONCURRENT_COPIES)
        .map(|i| r.begin(&mgr, 100 + i).unwrap())
        .collect();
    assert_eq!(r.begin(&mgr, 99).unwrap_err(), insufficient_resources());
    // And TOTAL_CONCURRENT_COPIES over the target.
    let others: Vec<_> = (0..TOTAL_CONCURRENT_COPIES)
        .map(|_| CopyResults::default())
        .collect();
    let mut more = Vec::new();
    for o in &others {
        match o.begin(&mgr, 1) {
            Ok(run) => more.push(run),
            Err(e) => assert_eq!(e, insufficient_resources()),
        }
    }
    assert_eq!(more.len() + runs.len(), usize::from(TOTAL_CONCURRENT_COPIES));
    drop(more);
    drop(runs);
    assert_eq!(mgr.running.load(Ordering::Relaxed), 0);
    // The last HELD_STATUSES are kept.
    for id in 0..=255u8 {
        r.begin(&mgr, id).unwrap().finish(false, &Progress::default());
    }
    assert!(r.status(255 - HELD_STATUSES as u8).is_none());
    assert_eq!(
        r.status(255 - HELD_STATUSES as u8 + 1).unwrap().state,
        CopyState::Failed
    );
}

#[test]
fn transfer_count_units() {
    let st = |bytes| CopyStatus {
        state: CopyState::Done,
        progress: Progress { segments: 1, bytes },
    };
    assert_eq!(
        &copy_status(&st(u64::from(u32::MAX)))[7..],
        &[0, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(&copy_status(&st(5 << 30))[7..], &[1, 0, 0x50, 0, 0]);
    assert_eq!(&copy_status(&st(u64::MAX))[7..], &[4, 0, 0xff, 0xff, 0xff]);
}

#[test]
fn operating_parameters_report_the_limits() {
    let d = CopyResults::default().receive(3, 0).unwrap();
    assert_eq!(d.len(), 46);
    assert_eq!(be32(&d[0..]) as usize, d.len() - 4);
    assert_eq!(d[4] & 1, 1, "SNLID");
    assert_eq!(be16(&d[8..]), MAX_CSCD_DESCRIPTORS);
    assert_eq!(be16(&d[10..]), MAX_SEGMENT_DESCRIPTORS);
    assert_eq!(be32(&d[12..]), 8 * 32 + 8 * 28);
    assert_eq!(be32(&d[16..]), MAX_SEGMENT_BYTES);
    assert_eq!(
        be32(&d[24..]),
        0,
        "HELD DATA LIMIT: sg_xcopy then uses LIST ID USAGE 10b"
    );
    assert_eq!(d[36], MAX_CONCURRENT_COPIES);
    assert_eq!(d[37], 9);
    assert_eq!(&d[43..], &[2, 0x02, 0xe4]);
    assert!(u64::from(MAX_PARAMETER_LIST_BYTES) > 16 + u64::from(be32(&d[12..])));
    assert_eq!(MAX_COPY_BYTES, 8 * (16 << 20));
}
