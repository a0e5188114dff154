//! Cases: IU lengths, IU types and reserved fields, data lengths against
//! the descriptors.

use super::*;

// ----- IU length -------------------------------------------------------

/// A zero-length SEND: no IU type at all. SRP r16a 6.6: SRP_T_LOGOUT
/// reason 2 (invalid IU type), then the channel ends.
pub(super) fn empty_iu(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let off = LAYOUT.send_off();
    h.c.send(off, 0)?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_CMD of 20 bytes (has a tag, not the 48-byte header). SRP r16a 6.8 /
/// SAM-5: a malformed command is answered CHECK CONDITION, ILLEGAL
/// REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT; the channel lives.
pub(super) fn short_cmd(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    let iu = raw_cmd(tag, h.lun, 0, 0, 0, &[0; 6]);
    h.send_iu(&iu[..20])?;
    h.rsp(tag)?
        .expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
    h.alive()?;
    h.close()?;
    Ok("20-byte SRP_CMD: CHECK CONDITION 5/0e/03, channel alive".into())
}

/// SRP_CMD of 8 bytes: no tag to answer. SRP r16a 6.6: the target logs
/// the channel out (srptd: SRP_T_LOGOUT reason 2, invalid IU type).
pub(super) fn short_iu_no_tag(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let iu = raw_cmd(0x77, h.lun, 0, 0, 0, &[0; 6]);
    h.send_iu(&iu[..8])?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_TSK_MGMT of 24 bytes (48 needed): logged out, reason 2.
pub(super) fn short_tsk_mgmt(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let mut iu = [0u8; TaskMgmt::LEN];
    TaskMgmt {
        tag: Tag(0x55),
        sol_not: 0,
        lun: h.lun,
        function: TmFunction::ABORT_TASK,
        task_tag: Tag(0x99),
    }
    .emit(&mut iu)?;
    h.send_iu(&iu[..24])?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_TSK_MGMT of 200 bytes (longer than its type, within the negotiated
/// IU length): the trailing bytes are ignored (srp.h sizes are minimums)
/// and the ABORT TASK of a task that does not exist is FUNCTION COMPLETE
/// (SAM-5 7.2).
pub(super) fn long_tsk_mgmt(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    let mut iu = [0xa5u8; 200];
    TaskMgmt {
        tag: Tag(tag),
        sol_not: 0,
        lun: h.lun,
        function: TmFunction::ABORT_TASK,
        task_tag: Tag(0x9999),
    }
    .emit(&mut iu)?;
    h.send_iu(&iu)?;
    let r = h.rsp(tag)?;
    if r.rsp_code != Some(Rsp::TM_COMPLETE) {
        return Err(format!("200-byte SRP_TSK_MGMT: {r:?}").into());
    }
    h.alive()?;
    h.close()?;
    Ok("200-byte ABORT TASK: TM_COMPLETE".into())
}

/// An IU longer than the negotiated MAXIMUM INITIATOR TO TARGET IU LENGTH
/// (SRP r16a 6.3: the initiator shall not send one). It does not fit the
/// target's receive buffer: an RC receive error, fatal to the connection
/// (IB 9.7.5.2.4/10.8.3.3); the channel ends, srptd lives on.
pub(super) fn iu_over_max(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    let mut iu = raw_cmd(tag, h.lun, 0, 0, 0, &[0; 6]);
    iu.resize(IT_IU_LEN as usize + 1024, 0);
    h.send_iu(&iu)?;
    let how = h.expect_gone("IU over max_it_iu_len")?;
    h.close()?;
    Ok(format!(
        "{}-byte IU with max {IT_IU_LEN}: {how}",
        IT_IU_LEN + 1024
    ))
}

// ----- IU types and reserved fields -------------------------------------

/// Opcode 0x7f: SRP r16a 6.6, SRP_T_LOGOUT reason 2 (invalid IU type).
pub(super) fn unknown_iu_type(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let mut iu = [0u8; 64];
    iu[0] = 0x7f;
    iu[8..16].copy_from_slice(&0x42u64.to_be_bytes());
    h.send_iu(&iu)?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_RSP (a target-to-initiator IU) sent to the target: invalid IU type.
pub(super) fn target_iu_type(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let mut iu = [0u8; 64];
    Rsp::scsi(Tag(0x43), 1, 0, &[]).emit(&mut iu)?;
    h.send_iu(&iu[..Rsp::HEADER_LEN])?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// Every reserved bit of an SRP_CMD (bytes 2-4, 16-19, 28, 30, bits 7:3
/// of 29, bits 1:0 of 31) and of an SRP_TSK_MGMT set. SPC-4 2.4 / SAM-5:
/// a recipient is not required to check reserved fields; srptd ignores
/// them, so TEST UNIT READY is GOOD and ABORT TASK is FUNCTION COMPLETE.
pub(super) fn reserved_bits(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    let mut iu = raw_cmd(tag, h.lun, 0, 0, 0, &[0; 6]);
    for i in [2, 3, 4, 16, 17, 18, 19, 28, 30] {
        iu[i] = 0xff;
    }
    iu[29] = 0xf8;
    iu[31] = 0x03;
    h.send_iu(&iu)?;
    let r = h.rsp(tag)?;
    if r.status != GOOD {
        return Err(format!("TUR with reserved bits: {r:?}").into());
    }
    let tag = h.next_tag();
    let mut iu = [0u8; TaskMgmt::LEN];
    TaskMgmt {
        tag: Tag(tag),
        sol_not: 0,
        lun: h.lun,
        function: TmFunction::ABORT_TASK,
        task_tag: Tag(0x5555),
    }
    .emit(&mut iu)?;
    for i in [2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 28, 29, 31, 40, 41, 47] {
        iu[i] = 0xff;
    }
    h.send_iu(&iu)?;
    let r = h.rsp(tag)?;
    if r.rsp_code != Some(Rsp::TM_COMPLETE) {
        return Err(format!("ABORT TASK with reserved bits: {r:?}").into());
    }
    h.alive()?;
    h.close()?;
    Ok("TUR GOOD, ABORT TASK TM_COMPLETE".into())
}

/// DATA-IN format 0xf (reserved) and 3 (immediate: data-out only, SRP-2):
/// SRP r16a 6.8; srptd answers CHECK CONDITION, INVALID FIELD IN COMMAND
/// IU (rather than logging out with reason 7), and the channel lives.
pub(super) fn bad_desc_format(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    for fmt in [0x0f, 0x03, 0x50] {
        let tag = h.next_tag();
        let mut iu = raw_cmd(tag, h.lun, fmt, 0, 0, &rw10(0x28, 0, 1));
        iu.extend_from_slice(&desc_bytes(&h.direct(IN_OFF, 512)));
        h.send_iu(&iu)?;
        h.rsp(tag)?
            .expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)
            .map_err(|e| format!("buffer format {fmt:#04x}: {e}"))?;
    }
    h.alive()?;
    h.close()?;
    Ok("formats 0x0f, 0x03, 0x50: CHECK CONDITION 5/0e/03".into())
}

// ----- data lengths against descriptors ---------------------------------

/// READ(10) of 8 blocks with no data-in descriptor. SRP r16a 6.9: DIOVER
/// with the whole 4096 bytes as residual; CHECK CONDITION (srptd).
pub(super) fn diover(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let t = h.cmd(&rw10(0x28, 0, 8), DataDesc::None, DataDesc::None)?;
    let r = h.rsp(t)?;
    r.expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
    if r.flags & Rsp::DIOVER == 0 || r.di_res != 4096 {
        return Err(format!("expected DIOVER 4096: {r:?}").into());
    }
    h.alive()?;
    h.close()?;
    Ok("DIOVER 4096, CHECK CONDITION".into())
}

/// WRITE(10) of 8 blocks with a 2048-byte data-out buffer. SRP r16a 6.9:
/// DOOVER residual 2048; refused whole (CHECK CONDITION), LUN unchanged.
pub(super) fn doover(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let lba = 4096;
    // Known contents first.
    h.c.buf.write(OUT_OFF, &[0x11; 4096]);
    let d = h.direct(OUT_OFF, 4096);
    let t = h.cmd(&rw10(0x2a, lba, 8), DataDesc::Direct(d), DataDesc::None)?;
    let r = h.rsp(t)?;
    if r.status != GOOD {
        return Err(format!("WRITE: {r:?}").into());
    }
    h.c.buf.write(OUT_OFF, &[0x22; 4096]);
    let d = h.direct(OUT_OFF, 2048);
    let t = h.cmd(&rw10(0x2a, lba, 8), DataDesc::Direct(d), DataDesc::None)?;
    let r = h.rsp(t)?;
    r.expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
    if r.flags & Rsp::DOOVER == 0 || r.do_res != 2048 {
        return Err(format!("expected DOOVER 2048: {r:?}").into());
    }
    let d = h.direct(IN_OFF, 4096);
    let t = h.cmd(&rw10(0x28, lba, 8), DataDesc::None, DataDesc::Direct(d))?;
    let r = h.rsp(t)?;
    let mut back = vec![0u8; 4096];
    h.c.buf.read(IN_OFF, &mut back);
    if r.status != GOOD || back.iter().any(|&b| b != 0x11) {
        return Err(format!("refused WRITE changed the LUN (or READ failed: {r:?})").into());
    }
    h.close()?;
    Ok("DOOVER 2048, CHECK CONDITION, nothing written".into())
}

/// READ(10) of 1 block into a 4096-byte buffer: GOOD, DIUNDER 3584 (SRP
/// r16a 6.9, SAM-5 5.4.3 residual).
pub(super) fn diunder(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let d = h.direct(IN_OFF, 4096);
    let t = h.cmd(&rw10(0x28, 0, 1), DataDesc::None, DataDesc::Direct(d))?;
    let r = h.rsp(t)?;
    if r.status != GOOD || r.flags & Rsp::DIUNDER == 0 || r.di_res != 3584 {
        return Err(format!("expected GOOD DIUNDER 3584: {r:?}").into());
    }
    h.close()?;
    Ok("GOOD, DIUNDER 3584".into())
}

/// Indirect data-in whose DATA-IN DESCRIPTOR COUNT (4) says more
/// descriptors than the IU holds (1): the table points past the end of
/// the IU. CHECK CONDITION, INVALID FIELD IN COMMAND IU.
pub(super) fn indirect_count(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    let mut iu = raw_cmd(tag, h.lun, BUF_FMT_INDIRECT_NIBBLE, 0, 4, &rw10(0x28, 0, 8));
    let table = h.direct(TABLE_OFF, 4 * 16);
    iu.extend_from_slice(&desc_bytes(&table));
    iu.extend_from_slice(&4096u32.to_be_bytes());
    iu.extend_from_slice(&desc_bytes(&h.direct(IN_OFF, 1024)));
    h.send_iu(&iu)?;
    h.rsp(tag)?
        .expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
    h.alive()?;
    h.close()?;
    Ok("count 4 with 1 descriptor in the IU: CHECK CONDITION 5/0e/03".into())
}

/// External table (count 0 in the IU) whose length, 40, is not a whole
/// number of 16-byte descriptors; and one of 5000 descriptors (srptd's
/// maximum is 4096). CHECK CONDITION, INVALID FIELD IN COMMAND IU.
pub(super) fn indirect_table_len(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    for len in [40u32, 5000 * 16] {
        let tag = h.next_tag();
        let mut iu = raw_cmd(tag, h.lun, BUF_FMT_INDIRECT_NIBBLE, 0, 0, &rw10(0x28, 0, 8));
        iu.extend_from_slice(&desc_bytes(&h.direct(TABLE_OFF, len)));
        iu.extend_from_slice(&4096u32.to_be_bytes());
        h.send_iu(&iu)?;
        h.rsp(tag)?
            .expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)
            .map_err(|e| format!("table length {len}: {e}"))?;
    }
    h.alive()?;
    h.close()?;
    Ok("table lengths 40 and 80000: CHECK CONDITION 5/0e/03".into())
}

/// In-IU table of two 2048-byte descriptors whose TOTAL LENGTH says 8192
/// (SRP r16a 6.8: the sum of the descriptor lengths). For an external
/// table srptd refuses this (INVALID FIELD IN COMMAND IU); in the IU it
/// must either refuse it the same way or move exactly the 4096 bytes the
/// descriptors describe, never more.
pub(super) fn indirect_total_len(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    // Pattern at LBA 8192 and a guard after the two buffers.
    h.c.buf.write(OUT_OFF, &[0x33; 4096]);
    let d = h.direct(OUT_OFF, 4096);
    let t = h.cmd(&rw10(0x2a, 8192, 8), DataDesc::Direct(d), DataDesc::None)?;
    if h.rsp(t)?.status != GOOD {
        return Err("WRITE failed".into());
    }
    h.c.buf.write(IN_OFF, &[0u8; 8192]);
    let tag = h.next_tag();
    let mut iu = raw_cmd(tag, h.lun, BUF_FMT_INDIRECT_NIBBLE, 0, 2, &rw10(0x28, 8192, 8));
    iu.extend_from_slice(&desc_bytes(&h.direct(TABLE_OFF, 32)));
    iu.extend_from_slice(&8192u32.to_be_bytes());
    iu.extend_from_slice(&desc_bytes(&h.direct(IN_OFF, 2048)));
    iu.extend_from_slice(&desc_bytes(&h.direct(IN_OFF + 2048, 2048)));
    h.send_iu(&iu)?;
    let r = h.rsp(tag)?;
    let mut back = vec![0u8; 8192];
    h.c.buf.read(IN_OFF, &mut back);
    let how = if r.status == GOOD {
        if back[..4096].iter().any(|&b| b != 0x33) || back[4096..].iter().any(|&b| b != 0) {
            return Err(format!("data-in outside the descriptors or wrong: {r:?}").into());
        }
        format!(
            "GOOD, 4096 bytes into the descriptors (flags {:#x}, di_res {})",
            r.flags, r.di_res
        )
    } else {
        r.expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
        "CHECK CONDITION 5/0e/03".to_string()
    };
    h.alive()?;
    h.close()?;
    Ok(how)
}

/// External table (2 descriptors, none in the IU) with a wrong R_Key: the
/// target's RDMA READ of the table gets a remote access error, fatal to
/// the RC connection (IB 9.7.5.2.4): the channel ends, srptd lives on.
pub(super) fn ext_table_bad_rkey(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let tag = h.next_tag();
    let mut iu = raw_cmd(tag, h.lun, BUF_FMT_INDIRECT_NIBBLE, 0, 0, &rw10(0x28, 0, 8));
    let mut table = h.direct(TABLE_OFF, 32);
    table.rkey ^= 0x00ab_cd00;
    let entries = [h.direct(IN_OFF, 2048), h.direct(IN_OFF + 2048, 2048)];
    for (i, e) in entries.iter().enumerate() {
        h.c.buf.write(TABLE_OFF + 16 * i, &desc_bytes(e));
    }
    iu.extend_from_slice(&desc_bytes(&table));
    iu.extend_from_slice(&4096u32.to_be_bytes());
    h.send_iu(&iu)?;
    let how = h.expect_gone("external table with a bad R_Key")?;
    h.close()?;
    Ok(format!("no SRP_RSP, {how}"))
}

/// External table whose descriptors sum (4096) differs from TOTAL LENGTH
/// (8192): CHECK CONDITION, INVALID FIELD IN COMMAND IU (srptd, after the
/// fetch); then a correct external table works.
pub(super) fn ext_table_bad_len(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let entries = [h.direct(IN_OFF, 2048), h.direct(IN_OFF + 2048, 2048)];
    for (i, e) in entries.iter().enumerate() {
        h.c.buf.write(TABLE_OFF + 16 * i, &desc_bytes(e));
    }
    for (total, ok) in [(8192u32, false), (4096, true)] {
        let tag = h.next_tag();
        let mut iu = raw_cmd(tag, h.lun, BUF_FMT_INDIRECT_NIBBLE, 0, 0, &rw10(0x28, 0, 8));
        iu.extend_from_slice(&desc_bytes(&h.direct(TABLE_OFF, 32)));
        iu.extend_from_slice(&total.to_be_bytes());
        h.send_iu(&iu)?;
        let r = h.rsp(tag)?;
        if ok {
            if r.status != GOOD || r.flags & (Rsp::DIOVER | Rsp::DIUNDER) != 0 {
                return Err(format!("correct external table: {r:?}").into());
            }
        } else {
            r.expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
        }
    }
    h.close()?;
    Ok("TOTAL LENGTH 8192 for 4096: CHECK CONDITION 5/0e/03; correct table GOOD".into())
}

/// Immediate data descriptor of 4096 bytes in an IU that ends 100 bytes
/// after the immediate data offset: the data would lie outside the IU.
/// CHECK CONDITION, INVALID FIELD IN COMMAND IU; nothing written.
pub(super) fn imm_beyond_iu(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    if h.c.rsp.rsp_flags & LoginResponse::IMMED_SUPPORTED == 0 {
        return Err("srptd did not grant immediate data".into());
    }
    h.alive()?;
    let tag = h.next_tag();
    let cdb = rw10(0x2a, 12288, 8);
    let cmd = Cmd::new(Tag(tag), h.lun, &cdb).with_data_out(DataDesc::Immediate(ImmediateDesc {
        len: 4096,
        desc_end: 0,
    }));
    let mut iu = vec![0u8; IMM_OFFSET as usize + 100];
    let n = cmd.emit(&mut iu)?;
    if n > IMM_OFFSET as usize {
        return Err("descriptor past the immediate data offset".into());
    }
    h.send_iu(&iu)?;
    h.rsp(tag)?
        .expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
    h.alive()?;
    h.close()?;
    Ok("4096 immediate bytes announced, 100 sent: CHECK CONDITION 5/0e/03".into())
}

/// Immediate data on a channel that did not negotiate it (SRP-2): CHECK
/// CONDITION, INVALID FIELD IN COMMAND IU.
pub(super) fn imm_not_negotiated(x: &mut Ctx) -> Res<String> {
    let mut o = x.opts();
    o.flags = LoginRequest::MULTI;
    let mut h = x.login_opts(o)?;
    if h.c.rsp.rsp_flags & LoginResponse::IMMED_SUPPORTED != 0 {
        return Err("immediate data granted without being requested".into());
    }
    h.alive()?;
    let tag = h.next_tag();
    let cdb = rw10(0x2a, 12288, 1);
    let cmd = Cmd::new(Tag(tag), h.lun, &cdb).with_data_out(DataDesc::Immediate(ImmediateDesc {
        len: 512,
        desc_end: 0,
    }));
    let mut iu = vec![0u8; IMM_OFFSET as usize + 512];
    let n = cmd.emit_with_immediate(&mut iu, IMM_OFFSET as usize, &[0x44; 512])?;
    h.send_iu(&iu[..n])?;
    h.rsp(tag)?
        .expect_check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CMD_IU)?;
    h.alive()?;
    h.close()?;
    Ok("immediate data without IMMED_SUPPORTED: CHECK CONDITION 5/0e/03".into())
}
