//! Cases: logins with extreme or inconsistent limits, channel limits.

use super::*;

// ----- logins ---------------------------------------------------------------

/// SRP_LOGIN_REJ reasons (SRP r16a 6.4 table 10) for extreme or
/// inconsistent requests; accepted corner cases answer what 6.3 says.
pub(super) fn login_limits(x: &mut Ctx) -> Res<String> {
    let mut done = Vec::new();
    let mut o = x.opts();
    o.it_iu_len = 32;
    done.push(x.expect_reject(o, RejectReason::UNABLE_ESTABLISH_CHANNEL, "max_it_iu_len 32")?);
    let mut o = x.opts();
    o.it_iu_len = 0xffff_ffff;
    done.push(x.expect_reject(o, RejectReason::IT_IU_LENGTH_TOO_LARGE, "max_it_iu_len 4G-1")?);
    let mut o = x.opts();
    o.buf_fmt = 0;
    done.push(x.expect_reject(o, RejectReason::UNSUPPORTED_DESCRIPTOR_FORMAT, "buffer formats 0")?);
    let mut o = x.opts();
    o.buf_fmt = 0x0008;
    done.push(x.expect_reject(
        o,
        RejectReason::UNSUPPORTED_DESCRIPTOR_FORMAT,
        "buffer formats 0x0008",
    )?);
    for action in [2u8, 3] {
        let mut o = x.opts();
        o.flags = action;
        done.push(x.expect_reject(
            o,
            RejectReason::MULTICHANNEL_UNSUPPORTED,
            &format!("multichannel {action}"),
        )?);
    }
    let mut o = x.opts();
    let mut wrong = x.target;
    wrong[15] ^= 0x5a;
    o.target = Some(wrong);
    done.push(x.expect_reject(o, RejectReason::UNABLE_ASSOCIATE_CHANNEL, "wrong target port id")?);
    // Not an SRP_LOGIN_REQ at all (opcode 2): unable to establish.
    let mut o = x.opts();
    let mut raw = vec![0u8; LoginRequest::RDMA_CM_LEN];
    LoginRequest {
        tag: Tag(1),
        req_it_iu_len: IT_IU_LEN,
        req_buf_fmt: BUF_FMT_DIRECT,
        req_flags: LoginRequest::MULTI,
        imm_data_offset: 0,
        initiator_port_id: [7; 16],
        target_port_id: x.target,
    }
    .emit_rdma_cm(&mut raw)?;
    raw[11] = Opcode::CMD.0;
    o.raw = Some(raw.clone());
    done.push(x.expect_reject(o, RejectReason::UNABLE_ESTABLISH_CHANNEL, "opcode 2 in the login")?);
    // 20 bytes: RDMA/CM pads the private data with zeros to 56, so the
    // TARGET PORT IDENTIFIER reads as zero: unable to associate.
    let mut o = x.opts();
    raw[11] = Opcode::LOGIN_REQ.0;
    raw.truncate(20);
    o.raw = Some(raw);
    done.push(x.expect_reject(o, RejectReason::UNABLE_ASSOCIATE_CHANNEL, "20-byte private data")?);
    // Accepted corners: the smallest IU length (64) works for a TUR;
    // immediate data offset past the IU length: no immediate data.
    let mut o = x.opts();
    o.it_iu_len = 64;
    let mut h = x.login_opts(o)?;
    if h.c.rsp.max_it_iu_len != 64 {
        return Err(format!("max_it_iu_len 64 granted as {}", h.c.rsp.max_it_iu_len).into());
    }
    h.alive()?;
    h.close()?;
    let mut o = x.opts();
    o.imm_off = 2000;
    let h = x.login_opts(o)?;
    if h.c.rsp.rsp_flags & LoginResponse::IMMED_SUPPORTED != 0 {
        return Err("immediate data granted at offset 2000 of a 1024-byte IU".into());
    }
    h.close()?;
    done.push("it_iu_len 64 accepted and works; imm offset 2000: no immediate data".into());
    Ok(done.join("; "))
}

/// 65 MULTIPLE INDEPENDENT RDMA CHANNELS logins from one initiator port,
/// all held. srptd allows 64 channels per I_T nexus: SRP r16a 6.4, the
/// 65th is rejected with 0x00010006 (channel limit reached); a login that
/// cannot get the memory it needs earlier must be rejected with
/// 0x00010001 (insufficient resources), never accepted half-way or
/// answered by srptd dying. All are then logged out and a new login works.
pub(super) fn channel_limit(x: &mut Ctx) -> Res<String> {
    const SMALL: Layout = Layout {
        recv_slots: 2,
        recv_len: 512,
        send_len: 512,
        data_len: 0,
        max_send_wr: 2,
    };
    let port = x.port_id();
    let mut held = Vec::new();
    let mut rejects = Vec::new();
    for i in 0..65u32 {
        let req = LoginRequest {
            tag: Tag(u64::from(i)),
            req_it_iu_len: IT_IU_LEN,
            req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            req_flags: LoginRequest::MULTI,
            imm_data_offset: 0,
            initiator_port_id: port,
            target_port_id: x.target,
        };
        let mut pdata = vec![0u8; LoginRequest::RDMA_CM_LEN];
        req.emit_rdma_cm(&mut pdata)?;
        match common::login(x.dest, SMALL, |_| pdata)? {
            Login::Accepted(c) => {
                if !rejects.is_empty() {
                    return Err(format!("login {i} accepted after rejects {rejects:x?}").into());
                }
                held.push(c);
            }
            Login::Rejected(r) => rejects.push(r.reason.0),
        }
    }
    let n = held.len();
    for c in held {
        let _ = c.id.disconnect();
        let _ = c.ch.wait_event(Duration::from_secs(5));
    }
    let want = if n == 64 {
        vec![RejectReason::CHANNEL_LIMIT_REACHED.0]
    } else {
        vec![RejectReason::INSUFFICIENT_RESOURCES.0; 65 - n]
    };
    if rejects != want {
        return Err(format!("{n} accepted, then rejects {rejects:#010x?}, expected {want:#010x?}").into());
    }
    let mut h = x.login()?;
    h.alive()?;
    h.close()?;
    Ok(format!(
        "{n} channels accepted, then {:#010x}; a new login works",
        rejects[0]
    ))
}
