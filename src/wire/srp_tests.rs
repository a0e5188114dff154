use super::*;
use proptest::prelude::*;

const TAG: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
pub(super) const TAGV: Tag = Tag(0x1122_3344_5566_7788);
pub(super) const LUN1: Lun = [0x00, 0x01, 0, 0, 0, 0, 0, 0];

/// Emit into a large buffer and return the written prefix.
fn emitted(f: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> Vec<u8> {
    let mut buf = vec![0xa5u8; 1024];
    let n = f(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// -----------------------------------------------------------------
// Login
// -----------------------------------------------------------------

#[rustfmt::skip]
const LOGIN_REQ_IU: [u8; 64] = [
    0x00, 0, 0, 0, 0, 0, 0, 0,                      // opcode, reserved
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // tag
    0x00, 0x00, 0x20, 0x44,                         // req_it_iu_len 8260
    0, 0, 0, 0,                                     // reserved
    0x00, 0x06,                                     // direct | indirect
    0x81,                                           // IMMED | MULTI
    0,                                              // reserved
    0x00, 0x44,                                     // imm_data_offset 68
    0, 0,                                           // reserved
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,            // i port
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30,                   // t port
];

/// `struct srp_login_req_rdma` exactly as ib_srp's srp_send_req() fills
/// it: tag 0 (kzalloc), DIRECT|INDIRECT, SINGLE|IMMED_REQUESTED, opcode
/// 0, it_iu_len = SRP_IMM_DATA_OFFSET + 8 KiB default max immediate data,
/// port ids as initiator_ext + sgid interface id and id_ext + ioc_guid,
/// imm_data_offset = SRP_IMM_DATA_OFFSET = 68.
#[rustfmt::skip]
const LINUX_RDMA_CM_LOGIN: [u8; 56] = [
    0, 0, 0, 0, 0, 0, 0, 0,                         // tag
    0x00, 0x06,                                     // req_buf_fmt
    0x80,                                           // req_flags
    0x00,                                           // opcode
    0x00, 0x00, 0x20, 0x44,                         // req_it_iu_len 8260
    0, 0, 0, 0, 0, 0, 0, 0,                         // initiator_ext
    0x00, 0x02, 0xc9, 0x03, 0x00, 0x0f, 0x12, 0x34, // sgid interface id
    0x00, 0x02, 0xc9, 0x03, 0x00, 0x0f, 0x56, 0x78, // id_ext
    0x00, 0x02, 0xc9, 0x03, 0x00, 0x0f, 0x56, 0x78, // ioc_guid
    0x00, 0x44,                                     // imm_data_offset
    0, 0, 0, 0, 0, 0,                               // reserved
];

#[test]
fn login_req_iu() {
    let l = LoginRequest::parse(&LOGIN_REQ_IU).unwrap();
    assert_eq!(l.tag, TAGV);
    assert_eq!(l.req_it_iu_len, 8260);
    assert_eq!(l.req_buf_fmt, BUF_FMT_DIRECT | BUF_FMT_INDIRECT);
    assert_eq!(l.req_flags, 0x81);
    assert_eq!(l.multichannel_action(), LoginRequest::MULTI);
    assert!(l.immed_requested());
    assert_eq!(l.imm_data_offset, 68);
    assert_eq!(l.initiator_port_id[0], 1);
    assert_eq!(l.initiator_port_id[15], 16);
    assert_eq!(l.target_port_id[0], 0x21);
    assert_eq!(l.target_port_id[15], 0x30);
    assert_eq!(emitted(|b| l.emit(b)), LOGIN_REQ_IU);
    // IB CM private data is 92 bytes: trailing zeros are accepted.
    let mut pd = LOGIN_REQ_IU.to_vec();
    pd.resize(92, 0);
    assert_eq!(LoginRequest::parse(&pd).unwrap(), l);
    assert_eq!(
        LoginRequest::parse(&LOGIN_REQ_IU[..63]),
        Err(WireError::TooShort {
            what: "SRP_LOGIN_REQ",
            need: 64,
            have: 63
        })
    );
    let mut bad = LOGIN_REQ_IU;
    bad[0] = 0x02;
    assert_eq!(
        LoginRequest::parse(&bad),
        Err(WireError::BadOpcode { expected: 0, got: 2 })
    );
    assert_eq!(
        l.emit(&mut [0u8; 63]),
        Err(WireError::BufferTooSmall { need: 64, have: 63 })
    );
}

#[test]
fn login_req_rdma_cm_as_linux_sends_it() {
    let l = LoginRequest::parse_rdma_cm(&LINUX_RDMA_CM_LOGIN).unwrap();
    assert_eq!(l.tag, Tag(0));
    assert_eq!(l.req_it_iu_len, 8260);
    assert_eq!(l.req_buf_fmt, BUF_FMT_DIRECT | BUF_FMT_INDIRECT);
    assert_eq!(l.req_flags, LoginRequest::IMMED_REQUESTED);
    assert_eq!(l.multichannel_action(), LoginRequest::SINGLE);
    assert!(l.immed_requested());
    assert_eq!(l.imm_data_offset, 68);
    assert_eq!(&l.initiator_port_id[..8], &[0; 8]);
    assert_eq!(
        &l.initiator_port_id[8..],
        &[0x00, 0x02, 0xc9, 0x03, 0x00, 0x0f, 0x12, 0x34]
    );
    assert_eq!(
        &l.target_port_id[..8],
        &[0x00, 0x02, 0xc9, 0x03, 0x00, 0x0f, 0x56, 0x78]
    );
    assert_eq!(emitted(|b| l.emit_rdma_cm(b)), LINUX_RDMA_CM_LOGIN);
    // The same login in IU form parses to the same struct.
    let iu = emitted(|b| l.emit(b));
    assert_eq!(iu.len(), LoginRequest::LEN);
    assert_eq!(LoginRequest::parse(&iu).unwrap(), l);
    assert!(matches!(
        LoginRequest::parse_rdma_cm(&LINUX_RDMA_CM_LOGIN[..55]),
        Err(WireError::TooShort { need: 56, .. })
    ));
    let mut bad = LINUX_RDMA_CM_LOGIN;
    bad[11] = 0xc0;
    assert_eq!(
        LoginRequest::parse_rdma_cm(&bad),
        Err(WireError::BadOpcode {
            expected: 0,
            got: 0xc0
        })
    );
}

#[rustfmt::skip]
const LOGIN_RSP_IU: [u8; 52] = [
    0xc0, 0, 0, 0,
    0x00, 0x00, 0x00, 0x80,                         // req_lim_delta 128
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // tag
    0x00, 0x00, 0x20, 0x44,                         // max_it_iu_len 8260
    0x00, 0x00, 0x01, 0x00,                         // max_ti_iu_len 256
    0x00, 0x06,                                     // buf_fmt
    0x82,                                           // IMMED_SUPP | MAINTAINED
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn login_rsp() {
    let r = LoginResponse::parse(&LOGIN_RSP_IU).unwrap();
    assert_eq!(
        r,
        LoginResponse {
            tag: TAGV,
            req_lim_delta: 128,
            max_it_iu_len: 8260,
            max_ti_iu_len: 256,
            buf_fmt: 6,
            rsp_flags: LoginResponse::IMMED_SUPPORTED | LoginResponse::MAINTAINED,
        }
    );
    assert_eq!(r.multichannel_result(), LoginResponse::MAINTAINED);
    assert_eq!(emitted(|b| r.emit(b)), LOGIN_RSP_IU);
    assert!(LoginResponse::parse(&LOGIN_RSP_IU[..51]).is_err());
}

#[rustfmt::skip]
const LOGIN_REJ_IU: [u8; 32] = [
    0xc2, 0, 0, 0,
    0x00, 0x01, 0x00, 0x02,                         // IT IU length too large
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
    0, 0, 0, 0, 0, 0, 0, 0,
    0x00, 0x06,
    0, 0, 0, 0, 0, 0,
];

#[test]
fn login_rej() {
    let r = LoginReject::parse(&LOGIN_REJ_IU).unwrap();
    assert_eq!(r.tag, TAGV);
    assert_eq!(r.reason, RejectReason::IT_IU_LENGTH_TOO_LARGE);
    assert_eq!(r.buf_fmt, BUF_FMT_DIRECT | BUF_FMT_INDIRECT);
    assert_eq!(emitted(|b| r.emit(b)), LOGIN_REJ_IU);
}

// -----------------------------------------------------------------
// Small IUs
// -----------------------------------------------------------------

#[test]
fn tag_only_ius() {
    for (op, f) in [(0x03u8, 0usize), (0x41, 1), (0x42, 2)] {
        let iu = cat(&[&[op, 0, 0, 0, 0, 0, 0, 0], &TAG]);
        let out = match f {
            0 => {
                let x = ILogout::parse(&iu).unwrap();
                assert_eq!(x.tag, TAGV);
                emitted(|b| x.emit(b))
            }
            1 => {
                let x = CredRsp::parse(&iu).unwrap();
                assert_eq!(x.tag, TAGV);
                emitted(|b| x.emit(b))
            }
            _ => {
                let x = AerRsp::parse(&iu).unwrap();
                assert_eq!(x.tag, TAGV);
                emitted(|b| x.emit(b))
            }
        };
        assert_eq!(out, iu);
        assert_eq!(Iu::parse(&iu).unwrap().tag(), TAGV);
        assert_eq!(Iu::parse(&iu).unwrap().opcode(), Opcode(op));
    }
    assert!(ILogout::parse(&[0x03; 15]).is_err());
}

#[test]
fn t_logout_and_cred_req() {
    #[rustfmt::skip]
    let t = [0x80, 0x01, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    let x = TLogout::parse(&t).unwrap();
    assert_eq!(
        x,
        TLogout {
            tag: TAGV,
            sol_not: SOLNT,
            reason: TLogout::INVALID_IU_TYPE
        }
    );
    assert_eq!(emitted(|b| x.emit(b)), t);

    #[rustfmt::skip]
    let c = [0x81, 0x01, 0, 0, 0, 0, 0, 0x05, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    let x = CredReq::parse(&c).unwrap();
    assert_eq!(
        x,
        CredReq {
            tag: TAGV,
            sol_not: 1,
            req_lim_delta: 5
        }
    );
    assert_eq!(emitted(|b| x.emit(b)), c);
}

#[rustfmt::skip]
const SENSE: [u8; 18] = [
    0x70, 0, 0x06, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0,
];

#[test]
fn aer_req() {
    #[rustfmt::skip]
    let hdr: [u8; 36] = [
        0x82, 0x00, 0, 0,
        0, 0, 0, 1,                                     // req_lim_delta
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0, 0, 0,
        0x00, 0x01, 0, 0, 0, 0, 0, 0,                   // lun
        0, 0, 0, 18,                                    // sense length
        0, 0, 0, 0,
    ];
    let iu = cat(&[&hdr, &SENSE]);
    let x = AerReq::parse(&iu).unwrap();
    assert_eq!(x.tag, TAGV);
    assert_eq!(x.sol_not, 0);
    assert_eq!(x.req_lim_delta, 1);
    assert_eq!(x.lun, LUN1);
    assert_eq!(x.sense, SENSE);
    assert_eq!(emitted(|b| x.emit(b)), iu);
    assert_eq!(
        AerReq::parse(&iu[..50]),
        Err(WireError::TooShort {
            what: "SRP_AER_REQ sense data",
            need: 54,
            have: 50
        })
    );
}

#[test]
fn task_mgmt() {
    #[rustfmt::skip]
    let iu: [u8; 48] = [
        0x01, 0x02, 0, 0, 0, 0, 0, 0,
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0, 0, 0,
        0x00, 0x01, 0, 0, 0, 0, 0, 0,                   // lun
        0, 0,
        0x01,                                           // ABORT TASK
        0,
        0, 0, 0, 0, 0, 0, 0x10, 0x01,                   // task tag
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let x = TaskMgmt::parse(&iu).unwrap();
    assert_eq!(
        x,
        TaskMgmt {
            tag: TAGV,
            sol_not: SCSOLNT,
            lun: LUN1,
            function: TmFunction::ABORT_TASK,
            task_tag: Tag(0x1001),
        }
    );
    assert_eq!(emitted(|b| x.emit(b)), iu);
    // Unknown function codes survive parsing.
    let mut odd = iu;
    odd[30] = 0x7e;
    assert_eq!(TaskMgmt::parse(&odd).unwrap().function, TmFunction(0x7e));
}

// -----------------------------------------------------------------
// SRP_RSP
// -----------------------------------------------------------------

#[test]
fn rsp_task_mgmt() {
    #[rustfmt::skip]
    let want: [u8; 40] = [
        0xc1, 0, 0, 0,
        0, 0, 0, 1,
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0,
        0x01,                                           // RSPVALID
        0x00,                                           // status
        0, 0, 0, 0,
        0, 0, 0, 0,
        0, 0, 0, 0,                                     // sense len
        0, 0, 0, 4,                                     // resp data len
        0, 0, 0, 0x04,                                  // not supported
    ];
    let r = Rsp::task_mgmt(TAGV, 1, Rsp::TM_NOT_SUPPORTED);
    assert_eq!(emitted(|b| r.emit(b)), want);
    let p = Rsp::parse(&want).unwrap();
    assert_eq!(p, r);
    assert_eq!(p.response_code(), Some(Rsp::TM_NOT_SUPPORTED));
    assert_eq!(Rsp::task_mgmt(TAGV, 1, 0xff).resp_data, &[0, 0, 0, 0xff][..]);
}

#[test]
fn rsp_scsi_with_sense_and_residual() {
    #[rustfmt::skip]
    let hdr: [u8; 36] = [
        0xc1, 0, 0, 0,
        0, 0, 0, 2,
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0,
        0x22,                                           // SNSVALID | DIUNDER
        0x02,                                           // CHECK CONDITION
        0, 0, 0, 0,
        0, 0, 0x02, 0x00,                               // data-in residual
        0, 0, 0, 18,
        0, 0, 0, 0,
    ];
    let want = cat(&[&hdr, &SENSE]);
    let mut r = Rsp::scsi(TAGV, 2, 0x02, &SENSE);
    r.flags |= Rsp::DIUNDER;
    r.data_in_res_cnt = 0x200;
    assert_eq!(emitted(|b| r.emit(b)), want);
    assert_eq!(Rsp::parse(&want).unwrap(), r);
    assert_eq!(r.emitted_len(), 54);
    assert_eq!(
        r.emit(&mut [0u8; 53]),
        Err(WireError::BufferTooSmall { need: 54, have: 53 })
    );
}

#[test]
fn rsp_response_data_precedes_sense() {
    let resp = [0u8, 0, 0, 5];
    let r = Rsp {
        tag: TAGV,
        sol_not: SOLNT,
        req_lim_delta: 0,
        // Inconsistent VALID bits are corrected on emit.
        flags: Rsp::SNSVALID,
        status: 0,
        data_out_res_cnt: 0,
        data_in_res_cnt: 0,
        sense: &SENSE,
        resp_data: &resp,
    };
    let b = emitted(|b| r.emit(b));
    assert_eq!(b[18], Rsp::RSPVALID | Rsp::SNSVALID);
    assert_eq!(&b[36..40], &resp);
    assert_eq!(&b[40..], &SENSE);
    let p = Rsp::parse(&b).unwrap();
    assert_eq!(p.resp_data, resp);
    assert_eq!(p.sense, SENSE);
    // Lengths running past the IU are errors, not panics.
    let mut short = b.clone();
    short.truncate(50);
    assert!(matches!(
        Rsp::parse(&short),
        Err(WireError::TooShort {
            what: "SRP_RSP sense data",
            ..
        })
    ));
    let mut huge = b;
    huge[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(Rsp::parse(&huge).is_err());
}

// -----------------------------------------------------------------
// SRP_CMD
// -----------------------------------------------------------------

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

#[test]
fn peek_and_dispatch() {
    assert_eq!(peek_opcode(&[0xc1]), Ok(Opcode::RSP));
    assert_eq!(peek_opcode(&[0x04]), Err(WireError::UnknownOpcode(4)));
    assert!(matches!(
        peek_opcode(&[]),
        Err(WireError::TooShort { need: 1, have: 0, .. })
    ));
    assert_eq!(Opcode::AER_REQ.name(), Some("SRP_AER_REQ"));
    assert!(!Opcode(0xff).is_known());
    assert!(matches!(Iu::parse(&LOGIN_REQ_IU), Ok(Iu::LoginReq(_))));
    assert!(matches!(Iu::parse(&LOGIN_RSP_IU), Ok(Iu::LoginRsp(_))));
    assert!(matches!(Iu::parse(&LOGIN_REJ_IU), Ok(Iu::LoginRej(_))));
}

// -----------------------------------------------------------------
// Layout tables: for each IU, a static byte array in which every
// non-reserved field is non-zero, read field by field through the
// table (deconstruct), written field by field into zeros (construct),
// parsed, and emitted.
// -----------------------------------------------------------------

/// The first `N` bytes of a test array.
pub(super) fn head<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.first_chunk().unwrap()
}

/// Emit `f`'s IU into a buffer of 0xa5 bytes; returns the buffer and
/// the length written.
pub(super) fn emit_over_junk(f: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> (Vec<u8>, usize) {
    let mut buf = vec![0xa5u8; 512];
    let n = f(&mut buf).unwrap();
    (buf, n)
}

mod login_req_layout {
    use super::*;
    use crate::wire::srp::login_req as f;
    use crate::wire::{get, get_be16, get_be32, get_be64, get_u8, set, set_be16, set_be32, set_be64, set_u8};

    fn repr() -> LoginRequest {
        LoginRequest {
            tag: TAGV,
            req_it_iu_len: 8260,
            req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            req_flags: LoginRequest::IMMED_REQUESTED | LoginRequest::MULTI,
            imm_data_offset: 68,
            initiator_port_id: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            target_port_id: [
                0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
                0x30,
            ],
        }
    }

    #[test]
    fn deconstruct() {
        let b = &LOGIN_REQ_IU;
        assert_eq!(get_u8(b, f::OPCODE), Opcode::LOGIN_REQ.0);
        assert_eq!(get_be64(b, f::TAG), TAGV.0);
        assert_eq!(get_be32(b, f::REQ_IT_IU_LEN), 8260);
        assert_eq!(get_be16(b, f::REQ_BUF_FMT), 0x0006);
        assert_eq!(get_u8(b, f::REQ_FLAGS), 0x81);
        assert_eq!(get_be16(b, f::IMM_DATA_OFFSET), 68);
        assert_eq!(get::<16, 64>(b, f::INITIATOR_PORT_ID), repr().initiator_port_id);
        assert_eq!(get::<16, 64>(b, f::TARGET_PORT_ID), repr().target_port_id);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::LOGIN_REQ.0);
        set_be64(&mut b, f::TAG, TAGV.0);
        set_be32(&mut b, f::REQ_IT_IU_LEN, 8260);
        set_be16(&mut b, f::REQ_BUF_FMT, 0x0006);
        set_u8(&mut b, f::REQ_FLAGS, 0x81);
        set_be16(&mut b, f::IMM_DATA_OFFSET, 68);
        set(&mut b, f::INITIATOR_PORT_ID, &repr().initiator_port_id);
        set(&mut b, f::TARGET_PORT_ID, &repr().target_port_id);
        assert_eq!(b, LOGIN_REQ_IU);
    }

    #[test]
    fn parse() {
        assert_eq!(LoginRequest::parse(&LOGIN_REQ_IU), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!(&b[..n], LOGIN_REQ_IU);
        assert_eq!(b[n], 0xa5);
    }
}

mod login_req_rdma_layout {
    use super::*;
    use crate::wire::srp::login_req_rdma as f;
    use crate::wire::{get, get_be16, get_be32, get_be64, get_u8, set, set_be16, set_be32, set_be64, set_u8};

    #[rustfmt::skip]
    const BYTES: [u8; 56] = [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // tag
        0x00, 0x02,                                     // req_buf_fmt: direct
        0x81,                                           // IMMED | MULTI
        0x00,                                           // opcode
        0x00, 0x00, 0x10, 0x44,                         // req_it_iu_len 4164
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
        0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30,
        0x00, 0x44,                                     // imm_data_offset
        0, 0, 0, 0, 0, 0,
    ];

    fn repr() -> LoginRequest {
        LoginRequest {
            tag: TAGV,
            req_it_iu_len: 4164,
            req_buf_fmt: BUF_FMT_DIRECT,
            req_flags: 0x81,
            imm_data_offset: 68,
            initiator_port_id: *head(&BYTES[16..]),
            target_port_id: *head(&BYTES[32..]),
        }
    }

    #[test]
    fn deconstruct() {
        let b = &BYTES;
        assert_eq!(get_be64(b, f::TAG), TAGV.0);
        assert_eq!(get_be16(b, f::REQ_BUF_FMT), BUF_FMT_DIRECT);
        assert_eq!(get_u8(b, f::REQ_FLAGS), 0x81);
        assert_eq!(get_u8(b, f::OPCODE), Opcode::LOGIN_REQ.0);
        assert_eq!(get_be32(b, f::REQ_IT_IU_LEN), 4164);
        assert_eq!(get::<16, 56>(b, f::INITIATOR_PORT_ID)[0], 1);
        assert_eq!(get::<16, 56>(b, f::TARGET_PORT_ID)[15], 0x30);
        assert_eq!(get_be16(b, f::IMM_DATA_OFFSET), 68);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_be64(&mut b, f::TAG, TAGV.0);
        set_be16(&mut b, f::REQ_BUF_FMT, BUF_FMT_DIRECT);
        set_u8(&mut b, f::REQ_FLAGS, 0x81);
        set_u8(&mut b, f::OPCODE, Opcode::LOGIN_REQ.0);
        set_be32(&mut b, f::REQ_IT_IU_LEN, 4164);
        set(&mut b, f::INITIATOR_PORT_ID, &repr().initiator_port_id);
        set(&mut b, f::TARGET_PORT_ID, &repr().target_port_id);
        set_be16(&mut b, f::IMM_DATA_OFFSET, 68);
        assert_eq!(b, BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(LoginRequest::parse_rdma_cm(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit_rdma_cm(b));
        assert_eq!(&b[..n], BYTES);
        assert_eq!(b[n], 0xa5);
    }
}

mod login_rsp_layout {
    use super::*;
    use crate::wire::srp::login_rsp as f;
    use crate::wire::{get_be16, get_be32, get_be64, get_u8, set_be16, set_be32, set_be64, set_u8};

    fn repr() -> LoginResponse {
        LoginResponse {
            tag: TAGV,
            req_lim_delta: 128,
            max_it_iu_len: 8260,
            max_ti_iu_len: 256,
            buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            rsp_flags: LoginResponse::IMMED_SUPPORTED | LoginResponse::MAINTAINED,
        }
    }

    #[test]
    fn deconstruct() {
        let b = &LOGIN_RSP_IU;
        assert_eq!(get_u8(b, f::OPCODE), Opcode::LOGIN_RSP.0);
        assert_eq!(get_be32(b, f::REQ_LIM_DELTA), 128);
        assert_eq!(get_be64(b, f::TAG), TAGV.0);
        assert_eq!(get_be32(b, f::MAX_IT_IU_LEN), 8260);
        assert_eq!(get_be32(b, f::MAX_TI_IU_LEN), 256);
        assert_eq!(get_be16(b, f::BUF_FMT), 0x0006);
        assert_eq!(get_u8(b, f::RSP_FLAGS), 0x82);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::LOGIN_RSP.0);
        set_be32(&mut b, f::REQ_LIM_DELTA, 128);
        set_be64(&mut b, f::TAG, TAGV.0);
        set_be32(&mut b, f::MAX_IT_IU_LEN, 8260);
        set_be32(&mut b, f::MAX_TI_IU_LEN, 256);
        set_be16(&mut b, f::BUF_FMT, 0x0006);
        set_u8(&mut b, f::RSP_FLAGS, 0x82);
        assert_eq!(b, LOGIN_RSP_IU);
    }

    #[test]
    fn parse() {
        assert_eq!(LoginResponse::parse(&LOGIN_RSP_IU), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!(&b[..n], LOGIN_RSP_IU);
        assert_eq!(b[n], 0xa5);
    }
}

mod login_rej_layout {
    use super::*;
    use crate::wire::srp::login_rej as f;
    use crate::wire::{get_be16, get_be32, get_be64, get_u8, set_be16, set_be32, set_be64, set_u8};

    fn repr() -> LoginReject {
        LoginReject {
            tag: TAGV,
            reason: RejectReason::IT_IU_LENGTH_TOO_LARGE,
            buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
        }
    }

    #[test]
    fn deconstruct() {
        let b = &LOGIN_REJ_IU;
        assert_eq!(get_u8(b, f::OPCODE), Opcode::LOGIN_REJ.0);
        assert_eq!(get_be32(b, f::REASON), 0x0001_0002);
        assert_eq!(get_be64(b, f::TAG), TAGV.0);
        assert_eq!(get_be16(b, f::BUF_FMT), 0x0006);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::LOGIN_REJ.0);
        set_be32(&mut b, f::REASON, 0x0001_0002);
        set_be64(&mut b, f::TAG, TAGV.0);
        set_be16(&mut b, f::BUF_FMT, 0x0006);
        assert_eq!(b, LOGIN_REJ_IU);
    }

    #[test]
    fn parse() {
        assert_eq!(LoginReject::parse(&LOGIN_REJ_IU), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!(&b[..n], LOGIN_REJ_IU);
        assert_eq!(b[n], 0xa5);
    }
}

/// SRP_I_LOGOUT, SRP_CRED_RSP and SRP_AER_RSP share one layout.
mod tag_only_layout {
    use super::*;
    use crate::wire::srp::tag_only as f;
    use crate::wire::{get_be64, get_u8, set_be64, set_u8};

    #[rustfmt::skip]
    const I_LOGOUT: [u8; 16] = [0x03, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    fn with_opcode(op: Opcode) -> [u8; 16] {
        let mut b = I_LOGOUT;
        b[0] = op.0;
        b
    }

    #[test]
    fn deconstruct() {
        assert_eq!(get_u8(&I_LOGOUT, f::OPCODE), Opcode::I_LOGOUT.0);
        assert_eq!(get_be64(&I_LOGOUT, f::TAG), TAGV.0);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::I_LOGOUT.0);
        set_be64(&mut b, f::TAG, TAGV.0);
        assert_eq!(b, I_LOGOUT);
    }

    #[test]
    fn parse() {
        assert_eq!(ILogout::parse(&I_LOGOUT), Ok(ILogout { tag: TAGV }));
        assert_eq!(
            CredRsp::parse(&with_opcode(Opcode::CRED_RSP)),
            Ok(CredRsp { tag: TAGV })
        );
        assert_eq!(
            AerRsp::parse(&with_opcode(Opcode::AER_RSP)),
            Ok(AerRsp { tag: TAGV })
        );
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| ILogout { tag: TAGV }.emit(b));
        assert_eq!((&b[..n], b[n]), (&I_LOGOUT[..], 0xa5));
        let (b, n) = emit_over_junk(|b| CredRsp { tag: TAGV }.emit(b));
        assert_eq!(&b[..n], with_opcode(Opcode::CRED_RSP));
        let (b, n) = emit_over_junk(|b| AerRsp { tag: TAGV }.emit(b));
        assert_eq!(&b[..n], with_opcode(Opcode::AER_RSP));
    }
}

mod t_logout_layout {
    use super::*;
    use crate::wire::srp::t_logout as f;
    use crate::wire::{get_be32, get_be64, get_u8, set_be32, set_be64, set_u8};

    #[rustfmt::skip]
    const BYTES: [u8; 16] = [0x80, 0x01, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    fn repr() -> TLogout {
        TLogout {
            tag: TAGV,
            sol_not: SOLNT,
            reason: TLogout::INVALID_IU_TYPE,
        }
    }

    #[test]
    fn deconstruct() {
        assert_eq!(get_u8(&BYTES, f::OPCODE), Opcode::T_LOGOUT.0);
        assert_eq!(get_u8(&BYTES, f::SOL_NOT), SOLNT);
        assert_eq!(get_be32(&BYTES, f::REASON), TLogout::INVALID_IU_TYPE);
        assert_eq!(get_be64(&BYTES, f::TAG), TAGV.0);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::T_LOGOUT.0);
        set_u8(&mut b, f::SOL_NOT, SOLNT);
        set_be32(&mut b, f::REASON, TLogout::INVALID_IU_TYPE);
        set_be64(&mut b, f::TAG, TAGV.0);
        assert_eq!(b, BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(TLogout::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

mod cred_req_layout {
    use super::*;
    use crate::wire::srp::cred_req as f;
    use crate::wire::{get_be32, get_be64, get_u8, set_be32, set_be64, set_u8};

    #[rustfmt::skip]
    const BYTES: [u8; 16] = [0x81, 0x01, 0, 0, 0, 0, 0, 0x05, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    fn repr() -> CredReq {
        CredReq {
            tag: TAGV,
            sol_not: SOLNT,
            req_lim_delta: 5,
        }
    }

    #[test]
    fn deconstruct() {
        assert_eq!(get_u8(&BYTES, f::OPCODE), Opcode::CRED_REQ.0);
        assert_eq!(get_u8(&BYTES, f::SOL_NOT), SOLNT);
        assert_eq!(get_be32(&BYTES, f::REQ_LIM_DELTA), 5);
        assert_eq!(get_be64(&BYTES, f::TAG), TAGV.0);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::CRED_REQ.0);
        set_u8(&mut b, f::SOL_NOT, SOLNT);
        set_be32(&mut b, f::REQ_LIM_DELTA, 5);
        set_be64(&mut b, f::TAG, TAGV.0);
        assert_eq!(b, BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(CredReq::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

mod aer_req_layout {
    use super::*;
    use crate::wire::srp::aer_req as f;
    use crate::wire::{get, get_be32, get_be64, get_u8, set, set_be32, set_be64, set_u8};

    #[rustfmt::skip]
    const BYTES: [u8; 36 + 18] = [
        0x82, 0x01, 0, 0,
        0, 0, 0, 0x03,                                  // req_lim_delta
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0, 0, 0,
        0x00, 0x01, 0, 0, 0, 0, 0, 0,                   // lun
        0, 0, 0, 18,                                    // sense length
        0, 0, 0, 0,
        // sense data
        0x70, 0, 0x06, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0,
    ];

    fn repr() -> AerReq<'static> {
        AerReq {
            tag: TAGV,
            sol_not: SOLNT,
            req_lim_delta: 3,
            lun: LUN1,
            sense: &SENSE,
        }
    }

    #[test]
    fn deconstruct() {
        let b = head::<{ f::LEN }>(&BYTES);
        assert_eq!(get_u8(b, f::OPCODE), Opcode::AER_REQ.0);
        assert_eq!(get_u8(b, f::SOL_NOT), SOLNT);
        assert_eq!(get_be32(b, f::REQ_LIM_DELTA), 3);
        assert_eq!(get_be64(b, f::TAG), TAGV.0);
        assert_eq!(get::<8, 36>(b, f::LUN), LUN1);
        assert_eq!(get_be32(b, f::SENSE_DATA_LEN), 18);
        assert_eq!(BYTES[f::LEN..], SENSE);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::AER_REQ.0);
        set_u8(&mut b, f::SOL_NOT, SOLNT);
        set_be32(&mut b, f::REQ_LIM_DELTA, 3);
        set_be64(&mut b, f::TAG, TAGV.0);
        set(&mut b, f::LUN, &LUN1);
        set_be32(&mut b, f::SENSE_DATA_LEN, 18);
        assert_eq!(cat(&[&b, &SENSE]), BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(AerReq::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

mod tsk_mgmt_layout {
    use super::*;
    use crate::wire::srp::tsk_mgmt as f;
    use crate::wire::{get, get_be64, get_u8, set, set_be64, set_u8};

    #[rustfmt::skip]
    const BYTES: [u8; 48] = [
        0x01, 0x06, 0, 0, 0, 0, 0, 0,                   // SCSOLNT | UCSOLNT
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0, 0, 0,
        0x00, 0x01, 0, 0, 0, 0, 0, 0,                   // lun
        0, 0,
        0x08,                                           // LUN RESET
        0,
        0, 0, 0, 0, 0, 0, 0x10, 0x01,                   // task tag
        0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn repr() -> TaskMgmt {
        TaskMgmt {
            tag: TAGV,
            sol_not: SCSOLNT | UCSOLNT,
            lun: LUN1,
            function: TmFunction::LUN_RESET,
            task_tag: Tag(0x1001),
        }
    }

    #[test]
    fn deconstruct() {
        assert_eq!(get_u8(&BYTES, f::OPCODE), Opcode::TSK_MGMT.0);
        assert_eq!(get_u8(&BYTES, f::SOL_NOT), SCSOLNT | UCSOLNT);
        assert_eq!(get_be64(&BYTES, f::TAG), TAGV.0);
        assert_eq!(get::<8, 48>(&BYTES, f::LUN), LUN1);
        assert_eq!(get_u8(&BYTES, f::FUNCTION), TmFunction::LUN_RESET.0);
        assert_eq!(get_be64(&BYTES, f::TASK_TAG), 0x1001);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::TSK_MGMT.0);
        set_u8(&mut b, f::SOL_NOT, SCSOLNT | UCSOLNT);
        set_be64(&mut b, f::TAG, TAGV.0);
        set(&mut b, f::LUN, &LUN1);
        set_u8(&mut b, f::FUNCTION, TmFunction::LUN_RESET.0);
        set_be64(&mut b, f::TASK_TAG, 0x1001);
        assert_eq!(b, BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(TaskMgmt::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

mod rsp_layout {
    use super::*;
    use crate::wire::srp::rsp as f;
    use crate::wire::{get_be32, get_be64, get_u8, set_be32, set_be64, set_u8};

    const RESP: [u8; 4] = [0, 0, 0, Rsp::TM_FAILED];

    #[rustfmt::skip]
    const BYTES: [u8; 36 + 4 + 18] = [
        0xc1, 0x01, 0, 0,                               // SOLNT
        0, 0, 0, 0x02,                                  // req_lim_delta
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0, 0,
        0x2b,                                           // DIUNDER|DOUNDER|SNSVALID|RSPVALID
        0x02,                                           // CHECK CONDITION
        0, 0, 0x01, 0x00,                               // data-out residual
        0, 0, 0x02, 0x00,                               // data-in residual
        0, 0, 0, 18,                                    // sense len
        0, 0, 0, 4,                                     // resp data len
        0, 0, 0, 0x05,                                  // response data
        // sense data
        0x70, 0, 0x06, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0,
    ];

    fn repr() -> Rsp<'static> {
        Rsp {
            tag: TAGV,
            sol_not: SOLNT,
            req_lim_delta: 2,
            flags: Rsp::DIUNDER | Rsp::DOUNDER | Rsp::SNSVALID | Rsp::RSPVALID,
            status: 0x02,
            data_out_res_cnt: 0x100,
            data_in_res_cnt: 0x200,
            sense: &SENSE,
            resp_data: &RESP,
        }
    }

    #[test]
    fn deconstruct() {
        let b = head::<{ f::LEN }>(&BYTES);
        assert_eq!(get_u8(b, f::OPCODE), Opcode::RSP.0);
        assert_eq!(get_u8(b, f::SOL_NOT), SOLNT);
        assert_eq!(get_be32(b, f::REQ_LIM_DELTA), 2);
        assert_eq!(get_be64(b, f::TAG), TAGV.0);
        assert_eq!(get_u8(b, f::FLAGS), 0x2b);
        assert_eq!(get_u8(b, f::STATUS), 0x02);
        assert_eq!(get_be32(b, f::DATA_OUT_RES_CNT), 0x100);
        assert_eq!(get_be32(b, f::DATA_IN_RES_CNT), 0x200);
        assert_eq!(get_be32(b, f::SENSE_DATA_LEN), 18);
        assert_eq!(get_be32(b, f::RESP_DATA_LEN), 4);
        assert_eq!(BYTES[f::LEN..f::LEN + 4], RESP);
        assert_eq!(BYTES[f::LEN + 4..], SENSE);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::OPCODE, Opcode::RSP.0);
        set_u8(&mut b, f::SOL_NOT, SOLNT);
        set_be32(&mut b, f::REQ_LIM_DELTA, 2);
        set_be64(&mut b, f::TAG, TAGV.0);
        set_u8(&mut b, f::FLAGS, 0x2b);
        set_u8(&mut b, f::STATUS, 0x02);
        set_be32(&mut b, f::DATA_OUT_RES_CNT, 0x100);
        set_be32(&mut b, f::DATA_IN_RES_CNT, 0x200);
        set_be32(&mut b, f::SENSE_DATA_LEN, 18);
        set_be32(&mut b, f::RESP_DATA_LEN, 4);
        assert_eq!(cat(&[&b, &RESP, &SENSE]), BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(Rsp::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

// -----------------------------------------------------------------
// Property tests
// -----------------------------------------------------------------

const OPCODES: [u8; 12] = [
    0x00, 0x01, 0x02, 0x03, 0xc0, 0xc1, 0xc2, 0x80, 0x81, 0x82, 0x41, 0x42,
];

fn all_parsers(b: &[u8]) {
    let _ = peek_opcode(b);
    let _ = Iu::parse(b);
    let _ = LoginRequest::parse(b);
    let _ = LoginRequest::parse_rdma_cm(b);
    let _ = LoginResponse::parse(b);
    let _ = LoginReject::parse(b);
    let _ = ILogout::parse(b);
    let _ = TLogout::parse(b);
    let _ = CredReq::parse(b);
    let _ = CredRsp::parse(b);
    let _ = AerReq::parse(b);
    let _ = AerRsp::parse(b);
    let _ = TaskMgmt::parse(b);
    let _ = Rsp::parse(b);
    let _ = DirectDesc::parse(b);
    if let Ok(it) = DirectDesc::parse_table(b) {
        assert_eq!(it.count(), b.len() / 16);
    }
    if let Ok(c) = Cmd::parse(b) {
        // Whatever parses can be re-emitted to the same bytes it came
        // from (up to the end of the descriptors), and its views are
        // usable.
        let n = c.emitted_len();
        assert!(n <= b.len());
        let mut out = vec![0u8; n];
        assert_eq!(c.emit(&mut out), Ok(n));
        let mut expect = b[..n].to_vec();
        // Reserved bytes and the reserved low bits of ADDITIONAL CDB
        // LENGTH are written as zero.
        for i in [2, 3, 4, 16, 17, 18, 19, 28, 30] {
            expect[i] = 0;
        }
        expect[31] &= 0xfc;
        assert_eq!(out, expect);
        for d in [c.data_out, c.data_in] {
            match d {
                DataDesc::Indirect(i) => {
                    assert!(i.in_iu_count() <= i.total_count());
                    assert_eq!(i.iter().count(), i.in_iu_count());
                }
                DataDesc::Immediate(i) => {
                    let _ = i.data(b, 68);
                    let _ = i.data(b, usize::MAX);
                }
                _ => {}
            }
        }
    }
}

fn arb_direct() -> impl Strategy<Value = DirectDesc> {
    (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(va, rkey, len)| DirectDesc { va, rkey, len })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        all_parsers(&b);
    }

    #[test]
    fn random_ius_with_valid_opcode_never_panic(
        op in prop::sample::select(OPCODES.to_vec()),
        fmt in any::<u8>(),
        cnt in (0u8..4, 0u8..4),
        add in any::<u8>(),
        mut b in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        // Steer random input into the deep SRP_CMD paths.
        b.resize(b.len().max(48), 0);
        b[0] = op;
        b[5] = fmt & 0x33;
        b[6] = cnt.0;
        b[7] = cnt.1;
        b[31] = add & 0x1c;
        all_parsers(&b);
        b[5] = fmt;
        all_parsers(&b);
    }

    #[test]
    fn login_req_roundtrip(
        tag in any::<u64>(), it in any::<u32>(), fmt in any::<u16>(), flags in any::<u8>(),
        off in any::<u16>(), ip in any::<[u8; 16]>(), tp in any::<[u8; 16]>(),
    ) {
        let l = LoginRequest {
            tag: Tag(tag), req_it_iu_len: it, req_buf_fmt: fmt, req_flags: flags,
            imm_data_offset: off, initiator_port_id: ip, target_port_id: tp,
        };
        let mut b = [0u8; 64];
        prop_assert_eq!(l.emit(&mut b), Ok(64));
        prop_assert_eq!(LoginRequest::parse(&b), Ok(l));
        let mut b = [0u8; 56];
        prop_assert_eq!(l.emit_rdma_cm(&mut b), Ok(56));
        prop_assert_eq!(LoginRequest::parse_rdma_cm(&b), Ok(l));
    }

    #[test]
    fn login_rsp_rej_roundtrip(
        tag in any::<u64>(), a in any::<u32>(), b2 in any::<u32>(), c in any::<u32>(),
        fmt in any::<u16>(), flags in any::<u8>(),
    ) {
        let r = LoginResponse {
            tag: Tag(tag), req_lim_delta: a, max_it_iu_len: b2, max_ti_iu_len: c,
            buf_fmt: fmt, rsp_flags: flags,
        };
        let mut b = [0u8; 52];
        prop_assert_eq!(r.emit(&mut b), Ok(52));
        prop_assert_eq!(LoginResponse::parse(&b), Ok(r));
        let j = LoginReject { tag: Tag(tag), reason: RejectReason(a), buf_fmt: fmt };
        let mut b = [0u8; 32];
        prop_assert_eq!(j.emit(&mut b), Ok(32));
        prop_assert_eq!(LoginReject::parse(&b), Ok(j));
    }

    #[test]
    fn small_ius_roundtrip(
        tag in any::<u64>(), task in any::<u64>(), sol in any::<u8>(), v in any::<u32>(),
        lun in any::<[u8; 8]>(), f in any::<u8>(),
        sense in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let tag = Tag(tag);
        let mut b = [0u8; 128];
        let x = ILogout { tag };
        x.emit(&mut b).unwrap();
        prop_assert_eq!(ILogout::parse(&b), Ok(x));
        let x = CredRsp { tag };
        x.emit(&mut b).unwrap();
        prop_assert_eq!(CredRsp::parse(&b), Ok(x));
        let x = AerRsp { tag };
        x.emit(&mut b).unwrap();
        prop_assert_eq!(AerRsp::parse(&b), Ok(x));
        let x = TLogout { tag, sol_not: sol, reason: v };
        x.emit(&mut b).unwrap();
        prop_assert_eq!(TLogout::parse(&b), Ok(x));
        let x = CredReq { tag, sol_not: sol, req_lim_delta: v };
        x.emit(&mut b).unwrap();
        prop_assert_eq!(CredReq::parse(&b), Ok(x));
        let x = TaskMgmt { tag, sol_not: sol, lun, function: TmFunction(f), task_tag: Tag(task) };
        prop_assert_eq!(x.emit(&mut b), Ok(48));
        prop_assert_eq!(TaskMgmt::parse(&b), Ok(x));
        let x = AerReq { tag, sol_not: sol, req_lim_delta: v, lun, sense: &sense };
        let n = x.emit(&mut b).unwrap();
        prop_assert_eq!(n, 36 + sense.len());
        prop_assert_eq!(AerReq::parse(&b[..n]), Ok(x));
    }

    #[test]
    fn rsp_roundtrip(
        tag in any::<u64>(), sol in any::<u8>(), lim in any::<u32>(), flags in any::<u8>(),
        status in any::<u8>(), ro in any::<u32>(), ri in any::<u32>(),
        sense in prop::collection::vec(any::<u8>(), 0..96),
        resp in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let r = Rsp {
            tag: Tag(tag), sol_not: sol, req_lim_delta: lim, flags, status,
            data_out_res_cnt: ro, data_in_res_cnt: ri, sense: &sense, resp_data: &resp,
        };
        let mut b = [0u8; 256];
        let n = r.emit(&mut b).unwrap();
        prop_assert_eq!(n, r.emitted_len());
        let p = Rsp::parse(&b[..n]).unwrap();
        let mut want = r;
        want.flags = flags & !(Rsp::RSPVALID | Rsp::SNSVALID)
            | if resp.is_empty() { 0 } else { Rsp::RSPVALID }
            | if sense.is_empty() { 0 } else { Rsp::SNSVALID };
        prop_assert_eq!(p, want);
    }

    #[test]
    fn cmd_roundtrip(
        tag in any::<u64>(), sol in any::<u8>(), lun in any::<[u8; 8]>(), attr in any::<u8>(),
        cdb_words in 0usize..=63, cdb_seed in any::<u8>(),
        out_kind in 0u8..4, in_kind in 0u8..3,
        d1 in arb_direct(), d2 in arb_direct(), t1 in arb_direct(), t2 in arb_direct(),
        tot1 in any::<u32>(), tot2 in any::<u32>(), imm_len in any::<u32>(),
        part1 in prop::collection::vec(any::<u8>(), 0..5).prop_map(|v| v.len()),
        extra1 in 0u32..1000, part2 in 0usize..5, extra2 in 0u32..1000,
        table_bytes in prop::collection::vec(any::<u8>(), 160),
    ) {
        let cdb: Vec<u8> = (0..16 + 4 * cdb_words).map(|i| (i as u8) ^ cdb_seed).collect();
        let mut t1 = t1;
        t1.len = 16 * (part1 as u32 + extra1);
        let mut t2 = t2;
        t2.len = 16 * (part2 as u32 + extra2);
        let out = match out_kind {
            0 => DataDesc::None,
            1 => DataDesc::Direct(d1),
            2 => DataDesc::Indirect(IndirectDesc {
                table: t1, total_len: tot1, partial: &table_bytes[..16 * part1],
            }),
            _ => DataDesc::Immediate(ImmediateDesc { len: imm_len, desc_end: 0 }),
        };
        let inn = match in_kind {
            0 => DataDesc::None,
            1 => DataDesc::Direct(d2),
            _ => DataDesc::Indirect(IndirectDesc {
                table: t2, total_len: tot2, partial: &table_bytes[80..80 + 16 * part2],
            }),
        };
        let mut c = Cmd::new(Tag(tag), lun, &cdb).with_data_out(out).with_data_in(inn);
        c.sol_not = sol;
        c.task_attr = attr;
        let mut b = vec![0u8; 2048];
        let n = c.emit(&mut b).unwrap();
        prop_assert_eq!(n, c.emitted_len());
        let p = Cmd::parse(&b[..n]).unwrap();
        // desc_end is computed by parse; fix it up in the expectation.
        if let DataDesc::Immediate(i) = &mut c.data_out {
            i.desc_end = 48 + 4 * cdb_words + 4;
        }
        prop_assert_eq!(p, c);
        let mut b2 = vec![0u8; n];
        prop_assert_eq!(p.emit(&mut b2), Ok(n));
        prop_assert_eq!(&b2[..], &b[..n]);
    }
}
