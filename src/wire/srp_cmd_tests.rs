//! SRP_CMD tests: descriptor formats, immediate data, truncation, bad
//! formats, emit. A child of `srp_tests.rs` (shares its helpers).

use super::*;

/// The 48-byte SRP_CMD header with the given BUFFER FORMAT, counts,
/// ADDITIONAL CDB LENGTH byte and (first 16 bytes of the) CDB.
fn cmd_header(buf_fmt: u8, out_cnt: u8, in_cnt: u8, add_cdb: u8, cdb16: [u8; 16]) -> Vec<u8> {
    #[rustfmt::skip]
    let mut h = vec![
        0x02, 0x00, 0, 0, 0, buf_fmt, out_cnt, in_cnt,
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0, 0, 0,
        0x00, 0x01, 0, 0, 0, 0, 0, 0,
        0, 0x00, 0, add_cdb,
    ];
    h.extend_from_slice(&cdb16);
    h
}

const READ10: [u8; 16] = [0x28, 0, 0, 0, 0, 0x10, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0];
const WRITE10: [u8; 16] = [0x2a, 0, 0, 0, 0, 0x10, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0];

fn desc(va: u64, rkey: u32, len: u32) -> Vec<u8> {
    cat(&[&va.to_be_bytes(), &rkey.to_be_bytes(), &len.to_be_bytes()])
}

/// Parse, check that re-emitting gives the same bytes, return the view.
fn roundtrip(iu: &[u8]) -> Cmd<'_> {
    let c = Cmd::parse(iu).unwrap();
    assert_eq!(emitted(|b| c.emit(b)), iu);
    assert!(matches!(Iu::parse(iu), Ok(Iu::Cmd(x)) if x == c));
    c
}

#[test]
fn cmd_direct_data_in() {
    #[rustfmt::skip]
    let iu: [u8; 64] = [
        0x02, 0x00, 0, 0, 0, 0x01, 0x00, 0x00,          // fmt: in direct
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0, 0, 0,
        0x00, 0x01, 0, 0, 0, 0, 0, 0,
        0, 0x00, 0, 0x00,                               // simple, no add cdb
        0x28, 0, 0, 0, 0, 0x10, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0x00, 0x7f, 0x00, 0x12, 0x34, 0x50, 0x00, // va
        0x00, 0x00, 0xab, 0xcd,                         // rkey
        0x00, 0x00, 0x10, 0x00,                         // len 4096
    ];
    let c = roundtrip(&iu);
    assert_eq!(c.tag, TAGV);
    assert_eq!(c.lun, LUN1);
    assert_eq!(c.sol_not, 0);
    assert_eq!(c.task_attr, Cmd::TASK_ATTR_SIMPLE);
    assert_eq!(c.cdb, READ10);
    assert_eq!(c.data_out_format, DescFormat::None);
    assert_eq!(c.data_in_format, DescFormat::Direct);
    assert_eq!((c.data_out_desc_cnt, c.data_in_desc_cnt), (0, 0));
    assert_eq!(c.data_out, DataDesc::None);
    let d = DirectDesc {
        va: 0x7f00_1234_5000,
        rkey: 0xabcd,
        len: 4096,
    };
    assert_eq!(c.data_in, DataDesc::Direct(d));
    assert_eq!(c.data_in.data_len(), 4096);
    // The builder produces the same bytes.
    let b = Cmd::new(TAGV, LUN1, &READ10).with_data_in(DataDesc::Direct(d));
    assert_eq!(b, c);
    // A direct descriptor's count is ignored (other initiators send 1).
    let mut one = iu;
    one[7] = 1;
    assert_eq!(Cmd::parse(&one).unwrap().data_in, DataDesc::Direct(d));
    // Truncated descriptor.
    assert_eq!(
        Cmd::parse(&iu[..63]),
        Err(WireError::TooShort {
            what: "SRP_CMD data-in descriptor",
            need: 64,
            have: 63
        })
    );
}

#[test]
fn cmd_direct_data_out() {
    let iu = cat(&[&cmd_header(0x10, 0, 0, 0, WRITE10), &desc(0x1000, 7, 4096)]);
    let c = roundtrip(&iu);
    assert_eq!(c.data_out_format, DescFormat::Direct);
    assert_eq!(c.data_in_format, DescFormat::None);
    assert_eq!(
        c.data_out,
        DataDesc::Direct(DirectDesc {
            va: 0x1000,
            rkey: 7,
            len: 4096
        })
    );
    assert_eq!(c.data_in, DataDesc::None);
}

#[test]
fn cmd_indirect_complete_in_iu() {
    // As ib_srp builds it for a 2-entry S/G list: table_desc.len = 2*16,
    // len = total, data_in_desc_cnt = 2, both descriptors in the IU.
    let iu = cat(&[
        &cmd_header(0x02, 0, 2, 0, READ10),
        &desc(0x1000_0000, 0x11, 32),
        &0x3000u32.to_be_bytes(),
        &desc(0xa000, 0x22, 0x1000),
        &desc(0xb000, 0x22, 0x2000),
    ]);
    assert_eq!(iu.len(), 100);
    let c = roundtrip(&iu);
    assert_eq!(c.data_in_format, DescFormat::Indirect);
    assert_eq!(c.data_in_desc_cnt, 2);
    let DataDesc::Indirect(ind) = c.data_in else {
        panic!("not indirect: {:?}", c.data_in)
    };
    assert_eq!(
        ind.table,
        DirectDesc {
            va: 0x1000_0000,
            rkey: 0x11,
            len: 32
        }
    );
    assert_eq!(ind.total_len, 0x3000);
    assert_eq!(ind.in_iu_count(), 2);
    assert_eq!(ind.total_count(), 2);
    assert!(ind.is_complete_in_iu());
    assert_eq!(ind.in_iu(1).unwrap().va, 0xb000);
    assert_eq!(ind.in_iu(2), None);
    let lens: Vec<u32> = ind.iter().map(|d| d.len).collect();
    assert_eq!(lens, [0x1000, 0x2000]);
    assert_eq!(ind.iter().len(), 2);
}

#[test]
fn cmd_indirect_external_table() {
    // ib_srp with allow_ext_sg: 3 descriptors, only cmd_sg_cnt = 1 in
    // the IU; table_desc covers all 3 (48 bytes) in initiator memory.
    let table = cat(&[
        &desc(0xa000, 0x22, 0x1000),
        &desc(0xc000, 0x22, 0x1000),
        &desc(0xe000, 0x22, 0x1000),
    ]);
    let iu = cat(&[
        &cmd_header(0x20, 1, 0, 0, WRITE10),
        &desc(0x5000_0000, 0x33, 48),
        &0x3000u32.to_be_bytes(),
        &table[..16],
    ]);
    let c = roundtrip(&iu);
    assert_eq!(c.data_out_format, DescFormat::Indirect);
    assert_eq!(c.data_out_desc_cnt, 1);
    let DataDesc::Indirect(ind) = c.data_out else {
        panic!()
    };
    assert_eq!(ind.in_iu_count(), 1);
    assert_eq!(ind.total_count(), 3);
    assert!(!ind.is_complete_in_iu());
    assert_eq!(ind.table.len, 48);
    assert_eq!(ind.table.va, 0x5000_0000);
    // The table fetched by RDMA READ.
    let all: Vec<DirectDesc> = DirectDesc::parse_table(&table).unwrap().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], ind.in_iu(0).unwrap());
    assert_eq!(all[2].va, 0xe000);
    assert_eq!(DirectDesc::table_get(&table, 1).unwrap().va, 0xc000);
    assert_eq!(DirectDesc::table_get(&table, 3), None);
    assert_eq!(
        DirectDesc::parse_table(&table[..47]).err(),
        Some(WireError::BadIndirectTableLength(47))
    );
    // Zero descriptors in the IU, everything external, is also valid.
    let iu0 = cat(&[
        &cmd_header(0x20, 0, 0, 0, WRITE10),
        &desc(0x5000_0000, 0x33, 48),
        &0x3000u32.to_be_bytes(),
    ]);
    let c0 = roundtrip(&iu0);
    let DataDesc::Indirect(ind0) = c0.data_out else {
        panic!()
    };
    assert_eq!((ind0.in_iu_count(), ind0.total_count()), (0, 3));
}

#[test]
fn cmd_indirect_errors() {
    // More descriptors in the IU than the table holds.
    let iu = cat(&[
        &cmd_header(0x02, 0, 2, 0, READ10),
        &desc(0x1000, 1, 16),
        &0x2000u32.to_be_bytes(),
        &desc(0xa000, 2, 0x1000),
        &desc(0xb000, 2, 0x1000),
    ]);
    assert_eq!(
        Cmd::parse(&iu),
        Err(WireError::DescriptorCountMismatch { in_iu: 2, total: 1 })
    );
    // Table length not a multiple of 16.
    let iu = cat(&[
        &cmd_header(0x02, 0, 1, 0, READ10),
        &desc(0x1000, 1, 20),
        &0x1000u32.to_be_bytes(),
        &desc(0xa000, 2, 0x1000),
    ]);
    assert_eq!(Cmd::parse(&iu), Err(WireError::BadIndirectTableLength(20)));
    // The count runs past the end of the IU.
    let iu = cat(&[
        &cmd_header(0x02, 0, 255, 0, READ10),
        &desc(0x1000, 1, 255 * 16),
        &0x1000u32.to_be_bytes(),
        &desc(0xa000, 2, 0x1000),
    ]);
    assert_eq!(
        Cmd::parse(&iu),
        Err(WireError::TooShort {
            what: "SRP_CMD data-in descriptor",
            need: 48 + 20 + 255 * 16,
            have: 84
        })
    );
}

#[test]
fn cmd_truncated_descriptors() {
    // The indirect descriptor header (table descriptor and total
    // length) is checked as a whole: need counts up to its end.
    let iu = cat(&[&cmd_header(0x02, 0, 0, 0, READ10), &desc(0x1000, 1, 16)]);
    for cut in [48, 50, 64, 67] {
        assert_eq!(
            Cmd::parse(&iu[..cut.min(iu.len())]),
            Err(WireError::TooShort {
                what: "SRP_CMD data-in descriptor",
                need: 68,
                have: cut.min(iu.len())
            })
        );
    }
    // A cut immediate descriptor.
    let iu = cat(&[&cmd_header(0x30, 0, 0, 0, WRITE10), &[0, 0]]);
    assert_eq!(
        Cmd::parse(&iu),
        Err(WireError::TooShort {
            what: "SRP_CMD data-out descriptor",
            need: 52,
            have: 50
        })
    );
}

#[test]
fn cmd_immediate_as_linux_sends_it() {
    // ib_srp: fmt = SRP_DATA_DESC_IMM << 4, counts 0, srp_imm_buf right
    // after the CDB, data at SRP_IMM_DATA_OFFSET = 68. Bytes 52..68 are
    // not cleared by ib_srp (memset covers only sizeof(struct srp_cmd)).
    let data = [0xd0u8, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7];
    let iu = cat(&[
        &cmd_header(0x30, 0, 0, 0, WRITE10),
        &8u32.to_be_bytes(),
        &[0xee; 16],
        &data,
    ]);
    assert_eq!(iu.len(), 76);
    let c = Cmd::parse(&iu).unwrap();
    assert_eq!(c.data_out_format, DescFormat::Immediate);
    assert_eq!(c.data_in, DataDesc::None);
    let DataDesc::Immediate(imm) = c.data_out else {
        panic!()
    };
    assert_eq!(imm, ImmediateDesc { len: 8, desc_end: 52 });
    assert_eq!(imm.data(&iu, 68).unwrap(), data);
    // Offset checks the protocol layer relies on.
    assert_eq!(
        imm.data(&iu, 48),
        Err(WireError::ImmediateDataOverlap {
            desc_end: 52,
            imm_data_offset: 48
        })
    );
    assert_eq!(
        imm.data(&iu[..75], 68),
        Err(WireError::TooShort {
            what: "SRP_CMD immediate data",
            need: 76,
            have: 75
        })
    );
    // The builder writes the same layout (with a zero gap).
    let b = Cmd::new(TAGV, LUN1, &WRITE10)
        .with_data_out(DataDesc::Immediate(ImmediateDesc { len: 8, desc_end: 0 }));
    let mut out = [0xa5u8; 100];
    assert_eq!(b.emit_with_immediate(&mut out, 68, &data), Ok(76));
    assert_eq!(&out[..52], &iu[..52]);
    assert_eq!(&out[52..68], &[0u8; 16]);
    assert_eq!(&out[68..76], &data);
    assert_eq!(out[76], 0xa5);
    assert_eq!(
        b.emit_with_immediate(&mut out, 50, &data),
        Err(WireError::ImmediateDataOverlap {
            desc_end: 52,
            imm_data_offset: 50
        })
    );
    assert_eq!(
        b.emit_with_immediate(&mut out[..75], 68, &data),
        Err(WireError::BufferTooSmall { need: 76, have: 75 })
    );
    assert!(b.emit_with_immediate(&mut out, 68, &data[..7]).is_err());
}

#[test]
fn cmd_immediate_with_32_byte_cdb() {
    // SRP_IMM_DATA_OFFSET is chosen so that a 32-byte CDB still fits:
    // 48 + 16 additional CDB bytes + 4-byte descriptor = 68.
    let mut cdb = [0u8; 32];
    cdb[0] = 0x7f; // variable-length CDB
    cdb[7] = 0x18;
    cdb[31] = 0x99;
    let mut first = [0u8; 16];
    first.copy_from_slice(&cdb[..16]);
    let data = [1u8, 2, 3, 4];
    // ib_srp writes add_cdb_len as a byte count (16 = 4 words << 2).
    let iu = cat(&[
        &cmd_header(0x30, 0, 0, 16, first),
        &cdb[16..],
        &4u32.to_be_bytes(),
        &data,
    ]);
    let c = roundtrip(&iu[..68]);
    assert_eq!(c.cdb, cdb);
    assert_eq!(c.desc_offset(), 64);
    let DataDesc::Immediate(imm) = c.data_out else {
        panic!()
    };
    assert_eq!(imm.desc_end, 68);
    assert_eq!(imm.data(&iu, 68).unwrap(), data);
    // Reserved bits 1:0 of ADDITIONAL CDB LENGTH are ignored.
    let mut odd = iu.clone();
    odd[31] = 16 | 3;
    assert_eq!(Cmd::parse(&odd).unwrap().cdb, cdb);
    // Additional CDB running past the IU.
    assert!(matches!(
        Cmd::parse(&iu[..60]),
        Err(WireError::TooShort {
            what: "SRP_CMD additional CDB",
            need: 64,
            ..
        })
    ));
}

#[test]
fn cmd_bidirectional_out_before_in() {
    // DATA-OUT (direct) precedes DATA-IN (indirect, 1 in IU).
    let iu = cat(&[
        &cmd_header(0x12, 0, 1, 0, WRITE10),
        &desc(0x1000, 1, 512),
        &desc(0x2000, 2, 16),
        &512u32.to_be_bytes(),
        &desc(0x3000, 3, 512),
    ]);
    let c = roundtrip(&iu);
    assert_eq!(c.data_out.data_len(), 512);
    assert!(matches!(c.data_out, DataDesc::Direct(d) if d.va == 0x1000));
    let DataDesc::Indirect(ind) = c.data_in else {
        panic!()
    };
    assert_eq!(ind.in_iu(0).unwrap().va, 0x3000);
    // Immediate DATA-OUT followed by a DATA-IN descriptor.
    let iu = cat(&[
        &cmd_header(0x31, 0, 0, 0, WRITE10),
        &4u32.to_be_bytes(),
        &desc(0x2000, 2, 64),
    ]);
    let c = roundtrip(&iu);
    assert!(matches!(c.data_out, DataDesc::Immediate(i) if i.desc_end == 52));
    assert!(matches!(c.data_in, DataDesc::Direct(d) if d.va == 0x2000));
}

#[test]
fn cmd_bad_formats() {
    let d = desc(0x1000, 1, 512);
    for fmt in [0x40u8, 0xf0, 0x04, 0x0f, 0x03, 0x33, 0x13] {
        let iu = cat(&[&cmd_header(fmt, 0, 0, 0, READ10), &d, &d]);
        assert_eq!(
            Cmd::parse(&iu),
            Err(WireError::BadDescriptorFormat(fmt)),
            "fmt {fmt:#x}"
        );
    }
    assert!(matches!(
        Cmd::parse(&cmd_header(0, 0, 0, 0, READ10)[..47]),
        Err(WireError::TooShort {
            need: 48,
            have: 47,
            ..
        })
    ));
    assert_eq!(
        Cmd::parse(&[0x01; 48]),
        Err(WireError::BadOpcode { expected: 2, got: 1 })
    );
    // No-data command.
    let none = cmd_header(0, 0, 0, 0, [0; 16]);
    let c = roundtrip(&none);
    assert_eq!((c.data_out, c.data_in), (DataDesc::None, DataDesc::None));
}

#[test]
fn cmd_emit_rejects_inconsistent_views() {
    let mut c = Cmd::new(TAGV, LUN1, &READ10);
    c.data_in_format = DescFormat::Direct;
    assert!(matches!(c.emit(&mut [0; 100]), Err(WireError::InvalidField(_))));
    let c = Cmd::new(TAGV, LUN1, &READ10)
        .with_data_in(DataDesc::Immediate(ImmediateDesc { len: 1, desc_end: 0 }));
    assert!(c.emit(&mut [0; 100]).is_err());
    let long = [0u8; 16 + 256];
    assert!(Cmd::new(TAGV, LUN1, &long).emit(&mut [0; 400]).is_err());
    // A short CDB is zero-padded to 16 bytes.
    let b = emitted(|b| Cmd::new(TAGV, LUN1, &[0x00; 6]).emit(b));
    assert_eq!(b.len(), 48);
    assert_eq!(Cmd::parse(&b).unwrap().cdb, [0; 16]);
}
