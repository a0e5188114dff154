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

// SRP_CMD: srp_cmd_tests.rs.
#[path = "srp_cmd_tests.rs"]
mod cmd;

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

// Layout tables: srp_layout_tests.rs.
#[path = "srp_layout_tests.rs"]
mod layout;
pub(crate) use layout::{emit_over_junk, head};

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
