//! Every SRP IU parser on arbitrary bytes: dispatch on the opcode, then
//! check that whatever parses re-emits and re-parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srptd::wire::{
    AerReq, AerRsp, CredReq, CredRsp, DirectDesc, ILogout, Iu, LoginReject, LoginRequest, LoginResponse, Rsp,
    TLogout, TaskMgmt,
};

fn reparse(iu: &Iu<'_>) {
    let mut buf = vec![0u8; 8192];
    let n = match iu {
        Iu::LoginReq(x) => x.emit(&mut buf),
        Iu::TskMgmt(x) => x.emit(&mut buf),
        Iu::Cmd(x) => x.emit(&mut buf),
        Iu::ILogout(x) => x.emit(&mut buf),
        Iu::LoginRsp(x) => x.emit(&mut buf),
        Iu::Rsp(x) => x.emit(&mut buf),
        Iu::LoginRej(x) => x.emit(&mut buf),
        Iu::TLogout(x) => x.emit(&mut buf),
        Iu::CredReq(x) => x.emit(&mut buf),
        Iu::AerReq(x) => x.emit(&mut buf),
        Iu::CredRsp(x) => x.emit(&mut buf),
        Iu::AerRsp(x) => x.emit(&mut buf),
    };
    // Inputs larger than the scratch buffer may legitimately not fit.
    let Ok(n) = n else { return };
    let again = Iu::parse(&buf[..n]).expect("emitted IU must parse");
    match (iu, again) {
        // emit() normalises RSPVALID/SNSVALID from the data lengths.
        (Iu::Rsp(a), Iu::Rsp(b)) => {
            assert_eq!(
                (a.sense, a.resp_data, a.status, a.tag),
                (b.sense, b.resp_data, b.status, b.tag)
            )
        }
        (a, b) => assert_eq!(*a, b),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(iu) = Iu::parse(data) {
        reparse(&iu);
    }
    // Every parser, whatever the opcode, must return without panicking.
    let _ = LoginRequest::parse(data);
    if let Ok(l) = LoginRequest::parse_rdma_cm(data) {
        let mut b = [0u8; LoginRequest::RDMA_CM_LEN];
        l.emit_rdma_cm(&mut b).unwrap();
        assert_eq!(LoginRequest::parse_rdma_cm(&b), Ok(l));
    }
    let _ = LoginResponse::parse(data);
    let _ = LoginReject::parse(data);
    let _ = ILogout::parse(data);
    let _ = TLogout::parse(data);
    let _ = CredReq::parse(data);
    let _ = CredRsp::parse(data);
    let _ = AerReq::parse(data);
    let _ = AerRsp::parse(data);
    let _ = TaskMgmt::parse(data);
    let _ = Rsp::parse(data);
    if let Ok(table) = DirectDesc::parse_table(data) {
        assert_eq!(table.count(), data.len() / DirectDesc::LEN);
    }
});
