//! Cases: flow control, tags, task management, logout, a vanishing peer.

use super::*;

// ----- flow control, tags, task management --------------------------------

/// REQUEST LIMIT + 1 requests without waiting for any response: 128 WRITEs
/// of 1 MiB (their data still being fetched: 128 MiB of RDMA READs, at
/// most 4 outstanding) then a TEST UNIT READY.
/// SRP r16a 5.6 / SAM-5 5.3: the request beyond the limit is answered
/// TASK SET FULL; the others GOOD; every credit comes back.
pub(super) fn credit_overrun(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let limit = h.c.rsp.req_lim_delta as usize;
    if limit + 2 > LAYOUT.recv_slots || limit + 1 > LAYOUT.max_send_wr as usize {
        return Err(format!("request limit {limit} too large for this test").into());
    }
    let (sent0, in0) = (h.sent, h.credits_in);
    let mut tags = Vec::new();
    for i in 0..limit {
        let d = h.direct(OUT_OFF, MIB as u32);
        tags.push(h.cmd_q(
            &rw10(0x2a, (i as u32 % 64) * 2048, 2048),
            DataDesc::Direct(d),
            DataDesc::None,
            true,
        )?);
    }
    let extra = h.cmd_q(&[0; 6], DataDesc::None, DataDesc::None, true)?;
    // One chain: the requests leave back to back, long before 128 MiB of
    // data can have been fetched.
    h.flush()?;
    let (mut good, mut full) = (0, Vec::new());
    for _ in 0..=limit {
        match h.next(LONG)? {
            Got::Rsp(r) if r.status == GOOD && tags.contains(&r.tag) => good += 1,
            Got::Rsp(r) if r.status == TASK_SET_FULL => full.push(r.tag),
            g => return Err(format!("after {good} GOOD: {g:?}").into()),
        }
    }
    if good != limit || full != [extra] {
        return Err(
            format!("{good} GOOD of {limit}, TASK SET FULL for {full:x?} (extra tag {extra:#x})").into(),
        );
    }
    h.alive()?;
    // The request beyond the limit held no credit: all others come back.
    let (sent, back) = (h.sent - sent0, h.credits_in - in0);
    if sent - 1 != back {
        return Err(format!("{sent} requests (one over the limit), {back} credits returned").into());
    }
    h.close()?;
    Ok(format!(
        "{limit} GOOD, request {} TASK SET FULL, all credits back",
        limit + 1
    ))
}

/// Two WRITEs of 64 KiB in flight with the same tag. SAM-5 5.10: a target
/// that detects an overlapped command aborts the task set and answers
/// CHECK CONDITION, OVERLAPPED COMMANDS ATTEMPTED (4Eh/00h); detection is
/// optional, so two GOOD answers are also correct. Either way: exactly two
/// answers, and the channel lives.
pub(super) fn dup_tags(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    for lba in [20480u32, 20608] {
        let cdb = rw10(0x2a, lba, 128);
        let d = h.direct(OUT_OFF, 65536);
        let cmd = Cmd::new(Tag(tag), h.lun, &cdb).with_data_out(DataDesc::Direct(d));
        let mut iu = [0u8; 128];
        let n = cmd.emit(&mut iu)?;
        h.send_iu(&iu[..n])?;
    }
    let mut answers = Vec::new();
    for _ in 0..2 {
        match h.next(LONG)? {
            Got::Rsp(r) if r.tag == tag => answers.push((r.status, r.sense)),
            g => return Err(format!("after {} answers: {g:?}", answers.len()).into()),
        }
    }
    let overlapped =
        |a: &(u8, Option<(u8, u8, u8)>)| a.0 == CHECK_CONDITION && a.1.map(|s| s.1) == Some(0x4e);
    if !answers.iter().all(|a| a.0 == GOOD || overlapped(a)) {
        return Err(format!("answers: {answers:x?}").into());
    }
    if let Got::Rsp(r) = h.next(Duration::from_secs(1))? {
        return Err(format!("a third answer: {r:?}").into());
    }
    h.alive()?;
    h.close()?;
    Ok(format!("two answers: {answers:x?}"))
}

/// ABORT TASK of a tag never used: FUNCTION COMPLETE (SAM-5 7.2); an
/// unknown function (0x33) and CLEAR ACA (no ACA: SAM-5 7.4): SRP r16a
/// 6.9 RSP_CODE 04h, task management function not supported.
pub(super) fn tmf_unknown_tag(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    for (func, task, want) in [
        (TmFunction::ABORT_TASK.0, 0xdead_beef_u64, Rsp::TM_COMPLETE),
        (0x33, 0, Rsp::TM_NOT_SUPPORTED),
        (TmFunction::CLEAR_ACA.0, 0, Rsp::TM_NOT_SUPPORTED),
    ] {
        let t = h.tmf(func, task)?;
        let r = h.rsp(t)?;
        if r.rsp_code != Some(want) || r.flags & Rsp::RSPVALID == 0 {
            return Err(format!("function {func:#x}: expected code {want}, got {r:?}").into());
        }
    }
    h.alive()?;
    h.close()?;
    Ok("ABORT TASK unknown tag: 0 (complete); 0x33, CLEAR ACA: 4 (not supported)".into())
}

/// Four WRITEs of 1 MiB in flight, SRP_I_LOGOUT, then at once a TEST UNIT
/// READY and an ABORT TASK. SRP r16a 6.5: the channel is gone after
/// SRP_I_LOGOUT; the requests after it are not answered (those before it
/// may be, while the target winds the channel down).
pub(super) fn after_logout(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let mut before = Vec::new();
    for i in 0..4u32 {
        let d = h.direct(OUT_OFF, MIB as u32);
        before.push(h.cmd(
            &rw10(0x2a, 49152 + i * 2048, 2048),
            DataDesc::Direct(d),
            DataDesc::None,
        )?);
    }
    let mut iu = [0u8; ILogout::LEN];
    ILogout { tag: Tag(0x10) }.emit(&mut iu)?;
    h.send_iu(&iu)?;
    let _ = h.cmd(&[0; 6], DataDesc::None, DataDesc::None);
    let _ = h.tmf(TmFunction::ABORT_TASK.0, 1);
    let mut early = 0;
    let how = loop {
        match h.next(LONG)? {
            Got::Rsp(r) if before.contains(&r.tag) => early += 1,
            Got::Disconnected => break "disconnected".to_string(),
            Got::SendFailed(s) => break format!("send failed ({s})"),
            g => {
                return Err(format!("IUs after SRP_I_LOGOUT: expected the channel to end, got {g:?}").into())
            }
        }
    };
    h.close()?;
    Ok(format!(
        "{early} of 4 earlier WRITEs answered, nothing after the logout, {how}"
    ))
}

/// A LUN with no logical unit (LUN 7). SPC-4 6.6.2 / SAM-5 5.9.5: INQUIRY
/// is GOOD with peripheral qualifier 011b, device type 1Fh (byte 0 7Fh);
/// TEST UNIT READY is CHECK CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT
/// SUPPORTED (25h/00h).
pub(super) fn unknown_lun(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    h.lun = lun_bytes(7);
    h.c.buf.write(IN_OFF, &[0xee; 96]);
    let d = h.direct(IN_OFF, 96);
    let t = h.cmd(&[0x12, 0, 0, 0, 96, 0], DataDesc::None, DataDesc::Direct(d))?;
    let r = h.rsp(t)?;
    let mut b0 = [0u8; 1];
    h.c.buf.read(IN_OFF, &mut b0);
    if r.status != GOOD || b0[0] != 0x7f {
        return Err(format!("INQUIRY on LUN 7: byte 0 {:#04x}, {r:?}", b0[0]).into());
    }
    let r = h.tur()?;
    r.expect_check(ILLEGAL_REQUEST, (0x25, 0x00))?;
    h.close()?;
    Ok("INQUIRY byte 0 0x7f; TUR CHECK CONDITION 5/25/00".into())
}

/// WRITE whose data-out buffer and READ whose data-in buffer have a wrong
/// R_Key: the target's RDMA READ / WRITE gets a remote access error, fatal
/// to the RC connection (IB 9.7.5.2.4): no SRP_RSP, the channel ends.
pub(super) fn bad_rkey_data(x: &mut Ctx) -> Res<String> {
    let mut how = Vec::new();
    for write in [true, false] {
        let mut h = x.login()?;
        h.alive()?;
        let mut d = h.direct(if write { OUT_OFF } else { IN_OFF }, 65536);
        d.rkey ^= 0x0012_3400;
        if write {
            h.cmd(&rw10(0x2a, 53248, 128), DataDesc::Direct(d), DataDesc::None)?;
        } else {
            h.cmd(&rw10(0x28, 53248, 128), DataDesc::None, DataDesc::Direct(d))?;
        }
        how.push(format!(
            "{}: {}",
            if write { "WRITE" } else { "READ" },
            h.expect_gone("data buffer with a bad R_Key")?
        ));
        h.close()?;
    }
    Ok(how.join(", "))
}

/// 500 SRP_CRED_RSP and SRP_AER_RSP the target never asked for (SRP r16a
/// 6.11, 6.13: they answer target requests and use no credit). More than
/// the target's receive ring: a slot lost per IU would stall the channel.
/// srptd ignores them (SRP_T_LOGOUT reason 3, unexpected initiator
/// response, would also be allowed); the channel must keep working.
pub(super) fn cred_rsp_flood(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    for i in 0..500u64 {
        let mut iu = [0u8; 16];
        if i % 2 == 0 {
            CredRsp { tag: Tag(0xc000 + i) }.emit(&mut iu)?;
        } else {
            AerRsp { tag: Tag(0xc000 + i) }.emit(&mut iu)?;
        }
        h.send_iu(&iu)?;
        h.sent -= 1; // not requests: no credit
        if i % 100 == 99 {
            // Let the send queue drain.
            h.alive()?;
        }
    }
    match h.next(Duration::from_secs(1))? {
        Got::Timeout => {}
        Got::TLogout(r) if r == TLogout::UNEXPECTED_RESPONSE => {
            h.expect_gone("after SRP_T_LOGOUT")?;
            return Ok("SRP_T_LOGOUT reason 3".into());
        }
        g => return Err(format!("after 500 unsolicited responses: {g:?}").into()),
    }
    let (sent0, in0) = (h.sent, h.credits_in);
    for _ in 0..200 {
        h.alive()?;
    }
    if h.sent - sent0 != h.credits_in - in0 {
        return Err("credits lost after the flood".into());
    }
    h.close()?;
    Ok("500 unsolicited responses ignored; 200 commands after them GOOD".into())
}

/// LOGICAL UNIT RESET from one I_T nexus. SAM-5 7.7 / 5.14: a unit
/// attention (29h, BUS DEVICE RESET FUNCTION OCCURRED) for every I_T
/// nexus: another nexus's next command on that LUN gets it, and only that
/// command.
pub(super) fn lun_reset_nexus(x: &mut Ctx) -> Res<String> {
    let mut a = x.login()?;
    let mut b = x.login()?;
    a.alive()?;
    b.alive()?;
    let t = b.tmf(TmFunction::LUN_RESET.0, 0)?;
    let r = b.rsp(t)?;
    if r.rsp_code != Some(Rsp::TM_COMPLETE) {
        return Err(format!("LUN RESET: {r:?}").into());
    }
    let r = a.tur()?;
    if r.status != CHECK_CONDITION || r.sense.map(|s| (s.0, s.1)) != Some((UNIT_ATTENTION, 0x29)) {
        return Err(format!("other nexus after LUN RESET: {r:?}").into());
    }
    let asc = r.sense.map_or(0, |s| s.2);
    let r = a.tur()?;
    if r.status != GOOD {
        return Err(format!("other nexus, second command after LUN RESET: {r:?}").into());
    }
    a.close()?;
    b.close()?;
    Ok(format!(
        "other nexus: UNIT ATTENTION 6/29/{asc:02x} once, then GOOD"
    ))
}

/// A SINGLE RDMA CHANNEL login from an initiator port whose existing
/// channel has 4 WRITEs of 1 MiB in flight. SRP r16a 6.2/6.3: the new
/// login is accepted with MULTI-CHANNEL RESULT 1 (existing channels
/// terminated); the old channel ends (SRP_T_LOGOUT reason 4 first, or just
/// the disconnect); the new one works.
pub(super) fn single_takeover(x: &mut Ctx) -> Res<String> {
    let mut a = x.login()?;
    a.alive()?;
    for i in 0..4u32 {
        let d = a.direct(OUT_OFF, MIB as u32);
        a.cmd_q(
            &rw10(0x2a, 57344 + i * 2048, 2048),
            DataDesc::Direct(d),
            DataDesc::None,
            true,
        )?;
    }
    a.flush()?;
    // Same initiator port as `a`.
    x.n -= 1;
    let mut o = x.opts();
    o.flags = LoginRequest::SINGLE;
    let mut b = x.login_opts(o)?;
    x.n += 1;
    let result = b.c.rsp.multichannel_result();
    if result != LoginResponse::TERMINATED {
        return Err(format!("SINGLE login: MULTI-CHANNEL RESULT {result}, expected 1").into());
    }
    let mut how = String::new();
    loop {
        match a.next(LONG)? {
            Got::Rsp(_) => how.push_str("an answer, "),
            Got::TLogout(4) => how.push_str("SRP_T_LOGOUT 4, "),
            Got::Disconnected => {
                how.push_str("disconnected");
                break;
            }
            Got::SendFailed(s) => {
                how.push_str(&format!("send failed ({s})"));
                break;
            }
            g => return Err(format!("old channel: {g:?}").into()),
        }
    }
    b.alive()?;
    a.close()?;
    b.close()?;
    Ok(format!("result 1; old channel: {how}; new channel works"))
}

/// An unknown IU type and, right behind it in the same burst, a TEST UNIT
/// READY. The target logs the channel out (SRP_T_LOGOUT reason 2,
/// SRP r16a 6.6) at the unknown IU; after its SRP_T_LOGOUT the channel is
/// logged out, so the request behind the bad IU must not be answered:
/// nothing may follow the SRP_T_LOGOUT but the disconnect.
pub(super) fn after_t_logout(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let mut iu = [0u8; 64];
    iu[0] = 0x7f;
    h.queue_iu(&iu)?;
    h.cmd_q(&[0; 6], DataDesc::None, DataDesc::None, true)?;
    h.flush()?;
    match h.next(LONG)? {
        Got::TLogout(r) if r == TLogout::INVALID_IU_TYPE => {}
        g => return Err(format!("expected SRP_T_LOGOUT reason 2, got {g:?}").into()),
    }
    let how = h.expect_gone("after SRP_T_LOGOUT")?;
    h.close()?;
    Ok(format!("SRP_T_LOGOUT 2, nothing after it, {how}"))
}

/// 30 rounds on one channel: 8 WRITEs of 64 KiB, ABORT TASK of four of
/// them, ABORT TASK SET, 8 more WRITEs; then LUN RESET. Every TMF is
/// FUNCTION COMPLETE; each command gets at most one answer: GOOD, or, for
/// a first-batch WRITE the ABORT TASK SET aborted, TASK ABORTED before the
/// function's answer (docs/task-management.md: the issuing nexus's tasks
/// of a task set function are answered; an ABORT TASK's task is not,
/// SAM-5 5.6); the second batch is GOOD; every credit returns (SRP r16a
/// 5.6); after the LUN RESET the next command gets UNIT ATTENTION (SAM-5
/// 5.14, 29h).
pub(super) fn tmf_storm(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let (sent0, in0) = (h.sent, h.credits_in);
    let (mut cmds, mut answered, mut aborted_tmfs) = (0u32, 0u32, 0u32);
    for round in 0..30u32 {
        let mut pending = std::collections::HashSet::new();
        let mut tmfs = Vec::new();
        let mut wtags = Vec::new();
        for i in 0..8u32 {
            let d = h.direct(OUT_OFF, 65536);
            let t = h.cmd(
                &rw10(0x2a, 32768 + i * 128, 128),
                DataDesc::Direct(d),
                DataDesc::None,
            )?;
            wtags.push(t);
            pending.insert(t);
        }
        for &t in wtags.iter().skip(round as usize % 4).step_by(2) {
            tmfs.push(h.tmf(TmFunction::ABORT_TASK.0, t)?);
        }
        tmfs.push(h.tmf(TmFunction::ABORT_TASK_SET.0, 0)?);
        for i in 0..8u32 {
            let d = h.direct(OUT_OFF, 65536);
            let t = h.cmd(
                &rw10(0x2a, 33792 + i * 128, 128),
                DataDesc::Direct(d),
                DataDesc::None,
            )?;
            pending.insert(t);
        }
        cmds += 16;
        // All TMF answers and the second batch's 8 answers must come; the
        // first batch's may or may not.
        let mut tmf_left: std::collections::HashSet<u64> = tmfs.iter().copied().collect();
        let second: Vec<u64> = pending.iter().copied().filter(|t| !wtags.contains(t)).collect();
        let mut second_left: std::collections::HashSet<u64> = second.into_iter().collect();
        while !tmf_left.is_empty() || !second_left.is_empty() {
            match h.next(LONG)? {
                Got::Rsp(r) if tmf_left.remove(&r.tag) => {
                    if r.rsp_code != Some(Rsp::TM_COMPLETE) {
                        return Err(format!("round {round}: TMF answer {r:?}").into());
                    }
                    aborted_tmfs += 1;
                }
                Got::Rsp(r) if pending.remove(&r.tag) => {
                    let second_batch = second_left.remove(&r.tag);
                    // TASK ABORTED only for the ABORT TASK SET's own
                    // tasks, and only before its answer.
                    let set_pending = tmfs.last().is_some_and(|t| tmf_left.contains(t));
                    let aborted_ok = !second_batch && set_pending && r.status == TASK_ABORTED;
                    if r.status != GOOD && !aborted_ok {
                        return Err(format!("round {round}: WRITE answer {r:?}").into());
                    }
                    answered += u32::from(r.status == GOOD);
                }
                g => return Err(format!("round {round}: unexpected {g:?}").into()),
            }
        }
    }
    // Anything late would be a second answer or an answer after abort
    // completion: SAM-5 7.2 says none may come after FUNCTION COMPLETE.
    if let Got::Rsp(r) = h.next(Duration::from_secs(1))? {
        return Err(format!("answer after the storm: {r:?}").into());
    }
    let t = h.tmf(TmFunction::LUN_RESET.0, 0)?;
    let r = h.rsp(t)?;
    if r.rsp_code != Some(Rsp::TM_COMPLETE) {
        return Err(format!("LUN RESET: {r:?}").into());
    }
    let r = h.tur()?;
    if r.status != CHECK_CONDITION || r.sense.map(|s| (s.0, s.1)) != Some((UNIT_ATTENTION, 0x29)) {
        return Err(format!("first command after LUN RESET: {r:?}").into());
    }
    h.alive()?;
    let (sent, back) = (h.sent - sent0, h.credits_in - in0);
    if sent != back {
        return Err(format!("{sent} requests, {back} credits returned").into());
    }
    h.close()?;
    Ok(format!(
        "{cmds} WRITEs ({answered} answered, rest aborted), {aborted_tmfs} TMFs complete, LUN RESET + UA, credits {back}/{sent}"
    ))
}

/// The peer vanishes mid-transfer: WRITE(10)s of 1 MiB whose data the
/// target is still fetching (RDMA READs outstanding), READs of 1 MiB
/// (RDMA WRITEs), READs through external tables (table fetches), then the initiator's QP goes to error and everything is
/// destroyed without a logout. srptd must free the channel (checked by
/// the script through its resource counts) and keep serving.
pub(super) fn vanish(x: &mut Ctx) -> Res<String> {
    let mut n = 0;
    for delay_ms in [0u64, 2, 20] {
        for kind in 0..3 {
            let write = kind == 0;
            let mut h = x.login()?;
            h.alive()?;
            if kind == 2 {
                // READs through external tables of 16 x 64 KiB: the table
                // fetch (RDMA READ) is outstanding when the peer goes.
                for j in 0..16 {
                    let e = h.direct(IN_OFF + j * 65536, 65536);
                    h.c.buf.write(TABLE_OFF + 16 * j, &desc_bytes(&e));
                }
            }
            for i in 0..4u32 {
                if kind == 2 {
                    let tag = h.next_tag();
                    let mut iu = raw_cmd(
                        tag,
                        h.lun,
                        BUF_FMT_INDIRECT_NIBBLE,
                        0,
                        0,
                        &rw10(0x28, 40960 + i * 2048, 2048),
                    );
                    iu.extend_from_slice(&desc_bytes(&h.direct(TABLE_OFF, 256)));
                    iu.extend_from_slice(&(MIB as u32).to_be_bytes());
                    h.send_iu(&iu)?;
                } else if write {
                    let d = h.direct(OUT_OFF, MIB as u32);
                    h.cmd(
                        &rw10(0x2a, 40960 + i * 2048, 2048),
                        DataDesc::Direct(d),
                        DataDesc::None,
                    )?;
                } else {
                    let d = h.direct(IN_OFF, MIB as u32);
                    h.cmd(
                        &rw10(0x28, 40960 + i * 2048, 2048),
                        DataDesc::None,
                        DataDesc::Direct(d),
                    )?;
                }
            }
            std::thread::sleep(Duration::from_millis(delay_ms));
            h.c.qp.to_error()?;
            drop(h);
            n += 1;
        }
    }
    // srptd still serves a new login at once.
    let mut h = x.login()?;
    h.alive()?;
    h.close()?;
    Ok(format!("{n} channels dropped mid-transfer; a new login works"))
}
