//! Layout-table tests of the SRP IUs other than SRP_CMD (each field read,
//! written, parsed and emitted through its table), and helpers the other
//! wire tests share. A child of `srp_tests.rs`.

use super::*;

// -----------------------------------------------------------------
// Layout tables: for each IU, a static byte array in which every
// non-reserved field is non-zero, read field by field through the
// table (deconstruct), written field by field into zeros (construct),
// parsed, and emitted.
// -----------------------------------------------------------------

/// The first `N` bytes of a test array.
pub(crate) fn head<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.first_chunk().unwrap()
}

/// Emit `f`'s IU into a buffer of 0xa5 bytes; returns the buffer and
/// the length written.
pub(crate) fn emit_over_junk(f: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> (Vec<u8>, usize) {
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
