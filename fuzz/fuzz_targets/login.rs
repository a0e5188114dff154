//! Login negotiation on fuzzed SRP_LOGIN_REQs (IB CM form and RDMA/CM
//! form) against fuzzed target limits, over the whole range of IU lengths
//! and immediate data offsets.
//!
//! Oracles: the verdict is exactly the one SRP r16a 6.2/6.4 prescribes (an
//! independent model of the checks, in the same order, picks the reject
//! reason); an SRP_LOGIN_RSP is within the limits, echoes the tag and
//! re-parses; an SRP_LOGIN_REJ re-parses. An accepted login then carries a
//! channel, driven by the simulated initiator, through an immediate-data
//! WRITE of the largest size the negotiated IU holds and a READ that must
//! return it.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use srptd::proto::{negotiate, LoginLimits, MultiChannel, TargetPortId};
use srptd::wire::{
    LoginReject, LoginRequest, LoginResponse, RejectReason, BUF_FMT_DIRECT, BUF_FMT_INDIRECT,
};

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

/// The verdict SRP r16a 6.4 and srptd's limits prescribe, or None to accept.
fn expected_reject(r: &LoginRequest, t: TargetPortId, l: &LoginLimits, allowed: bool, existing: u32) -> Option<RejectReason> {
    if r.req_it_iu_len > l.max_it_iu_len {
        return Some(RejectReason::IT_IU_LENGTH_TOO_LARGE);
    }
    if r.req_it_iu_len < 64 {
        return Some(RejectReason::UNABLE_ESTABLISH_CHANNEL);
    }
    if r.target_port_id != t.to_bytes() {
        return Some(RejectReason::UNABLE_ASSOCIATE_CHANNEL);
    }
    if r.req_buf_fmt & (BUF_FMT_DIRECT | BUF_FMT_INDIRECT) == 0 {
        return Some(RejectReason::UNSUPPORTED_DESCRIPTOR_FORMAT);
    }
    if !allowed {
        return Some(RejectReason::UNABLE_ESTABLISH_CHANNEL);
    }
    match r.req_flags & 3 {
        0 => None,
        1 if existing >= l.max_channels_per_nexus => Some(RejectReason::CHANNEL_LIMIT_REACHED),
        1 => None,
        _ => Some(RejectReason::MULTICHANNEL_UNSUPPORTED),
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 12 {
        return;
    }
    let (ctl, iu) = input.split_at(12);
    let limits = LoginLimits {
        max_it_iu_len: 64 + u32_at(ctl, 0) % (128 << 10),
        max_ti_iu_len: 64 + u32::from(ctl[4]) * 4,
        queue_depth: 1 + u32::from(ctl[5] % 128),
        immediate_data: ctl[6] & 1 != 0,
        max_channels_per_nexus: u32::from(ctl[6] >> 1 & 7),
    };
    let allowed = ctl[7] & 1 != 0;
    let existing = u32::from(ctl[7] >> 1 & 7);
    let flags = ctl[8];
    let req = if flags & 1 != 0 {
        LoginRequest::parse_rdma_cm(iu)
    } else {
        LoginRequest::parse(iu)
    };
    let Ok(mut req) = req else { return };
    // Mostly address the right port, else nearly every input is rejected
    // for the port alone.
    if flags & 2 == 0 {
        req.target_port_id = TARGET_PORT.to_bytes();
    }
    // The IU length and offset: fuzzed, or near the interesting edges.
    if flags & 4 != 0 {
        req.req_it_iu_len = 40 + u32::from(u16::from_be_bytes([ctl[9], ctl[10]])) % 8300;
        req.imm_data_offset = u16::from(ctl[11]) + 20;
    }

    let got = negotiate(&req, TARGET_PORT, &limits, allowed, existing);
    let want = expected_reject(&req, TARGET_PORT, &limits, allowed, existing);
    let acc = match (got, want) {
        (Err(rej), Some(reason)) => {
            assert_eq!(rej.reason, reason, "{req:?} {limits:?}");
            assert_eq!(rej.tag, req.tag);
            let mut b = [0u8; 32];
            let n = rej.emit(&mut b).unwrap();
            assert_eq!(LoginReject::parse(&b[..n]), Ok(rej));
            return;
        }
        (Ok(acc), None) => acc,
        (got, want) => panic!("negotiate({req:?}, {limits:?}, {allowed}, {existing}) = {got:?}, expected reject {want:?}"),
    };
    let rsp = &acc.response;
    assert!(acc.it_iu_len >= 64 && acc.it_iu_len <= limits.max_it_iu_len);
    assert_eq!(acc.it_iu_len, req.req_it_iu_len, "the initiator's length is granted as asked");
    assert_eq!(rsp.max_it_iu_len, acc.it_iu_len);
    assert_eq!(rsp.max_ti_iu_len, limits.max_ti_iu_len);
    assert_eq!(rsp.req_lim_delta, limits.queue_depth);
    assert_eq!(rsp.tag, req.tag);
    assert_eq!(rsp.buf_fmt & !(BUF_FMT_DIRECT | BUF_FMT_INDIRECT), 0);
    match acc.imm_data_offset {
        Some(off) => {
            assert!(limits.immediate_data && req.req_flags & LoginRequest::IMMED_REQUESTED != 0);
            assert!(off == req.imm_data_offset && off >= 52 && u32::from(off) < acc.it_iu_len);
            assert_ne!(rsp.rsp_flags & LoginResponse::IMMED_SUPPORTED, 0);
        }
        None => assert_eq!(rsp.rsp_flags & LoginResponse::IMMED_SUPPORTED, 0),
    }
    let expect_mc = if req.req_flags & 3 == 0 { MultiChannel::TerminateOthers } else { MultiChannel::Keep };
    assert_eq!(acc.multichannel, expect_mc);
    let mut b = [0u8; 64];
    let n = rsp.emit(&mut b).unwrap();
    assert_eq!(LoginResponse::parse(&b[..n]).as_ref(), Ok(rsp));

    // The negotiated channel works at its limits. Only for initiators the
    // target's access list admits and responses our sim can parse.
    if flags & 8 == 0 || !allowed || limits.max_ti_iu_len < 68 {
        return;
    }
    let t = target_with("ram:256K,bs=512");
    let mut req = req;
    req.initiator_port_id = INITIATOR;
    let Ok(mut sim) = Sim::login_req(&t, None, &req, &limits, |c| c.max_ti_iu_len = limits.max_ti_iu_len) else {
        panic!("accepted once, rejected on the second negotiation");
    };
    // Clear the power-on unit attention.
    if sim.req_lim < 2 {
        return;
    }
    let (r, _) = sim.command(0, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, 2);
    let Some(off) = acc.imm_data_offset else { return };
    // Data of whole blocks fills what the IU holds past the offset.
    let room = (acc.it_iu_len - u32::from(off)) / 512 * 512;
    let len = room.min(64 << 10);
    if len == 0 {
        return;
    }
    let data = pattern(len as usize, u64::from(flags));
    let r = sim.write(0, 8, &data, 512, Layout::Immediate);
    assert_eq!(r.status, 0, "immediate WRITE of {len} bytes at offset {off}, IU length {}: {r:?}", acc.it_iu_len);
    let (r, back) = sim.read(0, 8, len, 512, Layout::Direct);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(back == data, "READ after an immediate-data WRITE at offset {off} returned other data");
});
