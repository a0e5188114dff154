//! A hostile SRP initiator: logs in to srptd over RDMA/CM and sends
//! malformed, inconsistent or badly timed IUs, one case per class, and
//! checks the answer the SRP r16a / SAM-5 / SPC-4 specs (and srptd's
//! documented choice where they leave one) give. Run by
//! tests/vm/srptd-hostile.sh while the kernel initiator verifies data on
//! another I_T nexus.
//!
//! Every case logs in with its own initiator port identifier (MULTI) and
//! works on LUN 1 only (`--lun`), so LUN 0 stays the kernel's.
//!
//!   srp_hostile --dest IP:PORT --id-ext <16 hex> --ioc-guid <16 hex>
//!       [--case NAME]... [--skip NAME]... [--list]
//!
//! Prints `case NAME: PASS (...)` or `case NAME: FAIL: ...` per case and a
//! summary `srp_hostile: pass N fail N skip N`; exits non-zero on any FAIL.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use srptd::rdma::CmEventKind;
use srptd::wire::{
    AerRsp, Cmd, CredRsp, DataDesc, DirectDesc, ILogout, ImmediateDesc, LoginRequest, LoginResponse, Opcode,
    RejectReason, Rsp, TLogout, Tag, TaskMgmt, TmFunction, BUF_FMT_DIRECT, BUF_FMT_INDIRECT,
};

mod common;
use common::{Conn, Layout, Login, Res, SEND_WR};

#[derive(Parser, Debug)]
#[command(about = "Hostile SRP initiator: malformed IUs and logins against srptd")]
struct Args {
    #[arg(long)]
    dest: SocketAddr,
    #[arg(long)]
    id_ext: String,
    #[arg(long)]
    ioc_guid: String,
    /// LUN the cases use (never the kernel initiator's).
    #[arg(long, default_value_t = 1)]
    lun: u16,
    /// Run only these cases (default: all).
    #[arg(long = "case")]
    cases: Vec<String>,
    /// Skip these cases (printed as SKIP).
    #[arg(long = "skip")]
    skip: Vec<String>,
    /// Run each selected case this many times.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
}

/// Negotiated request IU length of the hostile channels.
const IT_IU_LEN: u32 = 1024;
const IMM_OFFSET: u16 = 68;
const RECV_LEN: usize = 512;
const SEND_SLOT: usize = 4096;
const SEND_SLOTS: usize = 160;
const MIB: usize = 1 << 20;
const LAYOUT: Layout = Layout {
    recv_slots: 160,
    recv_len: RECV_LEN,
    send_len: SEND_SLOTS * SEND_SLOT,
    data_len: 2 * MIB + 4096,
    max_send_wr: 192,
};
/// Data-out source (1 MiB), data-in destination (1 MiB), table area.
const OUT_OFF: usize = LAYOUT.data_off();
const IN_OFF: usize = OUT_OFF + MIB;
const TABLE_OFF: usize = IN_OFF + MIB;
const LONG: Duration = Duration::from_secs(30);

// SCSI status (SAM-5 5.3) and sense (SPC-4 4.5.6).
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const TASK_ABORTED: u8 = 0x40;
const TASK_SET_FULL: u8 = 0x28;
const ILLEGAL_REQUEST: u8 = 0x5;
const UNIT_ATTENTION: u8 = 0x6;
/// INVALID FIELD IN COMMAND INFORMATION UNIT (SAM-5 / SPC-4: 0Eh/03h).
const INVALID_FIELD_IN_CMD_IU: (u8, u8) = (0x0e, 0x03);

/// An SRP_RSP, owned.
#[derive(Debug, Clone)]
#[allow(dead_code, reason = "read through Debug")]
struct R {
    tag: u64,
    delta: u32,
    flags: u8,
    status: u8,
    do_res: u32,
    di_res: u32,
    /// (key, asc, ascq) from fixed-format sense.
    sense: Option<(u8, u8, u8)>,
    rsp_code: Option<u8>,
}

impl R {
    fn expect_check(&self, key: u8, asc: (u8, u8)) -> Res<()> {
        if self.status != CHECK_CONDITION || self.sense != Some((key, asc.0, asc.1)) {
            return Err(format!(
                "expected CHECK CONDITION {key:#x}/{:#04x}/{:#04x}, got {self:?}",
                asc.0, asc.1
            )
            .into());
        }
        Ok(())
    }
}

/// What came back.
#[derive(Debug)]
enum Got {
    Rsp(R),
    TLogout(u32),
    /// Another IU type (raw opcode).
    #[allow(dead_code, reason = "read through Debug")]
    Other(u8),
    /// A send failed (the connection broke).
    SendFailed(String),
    Disconnected,
    Timeout,
}

/// A hostile channel.
struct H {
    c: Box<Conn>,
    tag: u64,
    lun: [u8; 8],
    slot: usize,
    /// Sum of REQUEST LIMIT DELTAs received (login included).
    credits_in: u64,
    /// Requests sent.
    sent: u64,
    disconnected: bool,
    /// Sends queued by `queue_iu`.
    queued: Vec<(usize, usize)>,
}

fn lun_bytes(lun: u16) -> [u8; 8] {
    // SAM-5 4.7 peripheral device addressing, as ib_srp builds it.
    let mut l = [0u8; 8];
    l[..2].copy_from_slice(&lun.to_be_bytes());
    l
}

impl H {
    fn next_tag(&mut self) -> u64 {
        self.tag += 1;
        self.tag
    }

    /// Sends `iu` from the next send slot (a request: counted for credits
    /// when `request`).
    fn send_iu(&mut self, iu: &[u8]) -> Res<()> {
        if iu.len() > SEND_SLOT {
            return Err("IU longer than a send slot".into());
        }
        let off = LAYOUT.send_off() + self.slot * SEND_SLOT;
        self.slot = (self.slot + 1) % SEND_SLOTS;
        self.c.buf.write(off, iu);
        self.c.send(off, iu.len())?;
        self.sent += 1;
        Ok(())
    }

    /// Like `send_iu`, but only queued: `flush` posts the queue as one
    /// chain.
    fn queue_iu(&mut self, iu: &[u8]) -> Res<()> {
        let off = LAYOUT.send_off() + self.slot * SEND_SLOT;
        self.slot = (self.slot + 1) % SEND_SLOTS;
        self.c.buf.write(off, iu);
        self.queued.push((off, iu.len()));
        self.sent += 1;
        Ok(())
    }

    fn flush(&mut self) -> Res<()> {
        let q = std::mem::take(&mut self.queued);
        self.c.send_chain(&q)?;
        Ok(())
    }

    /// The next IU, connection event or timeout. Successful send
    /// completions are skipped.
    fn next(&mut self, timeout: Duration) -> Res<Got> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_millis(50));
            if let Some(wc) = self.c.next_wc(slice)? {
                if wc.wr_id & SEND_WR != 0 {
                    if wc.is_success() {
                        continue;
                    }
                    return Ok(Got::SendFailed(format!("{}", wc.status)));
                }
                if !wc.is_success() {
                    // Flushed receives once the QP is in error.
                    if self.disconnected {
                        return Ok(Got::Disconnected);
                    }
                    continue;
                }
                let slot = wc.wr_id as usize;
                let iu = self.c.recv_bytes(slot, wc.byte_len as usize);
                self.c.post_recv(slot)?;
                return self.decode(&iu);
            }
            if !self.disconnected {
                if let Some(ev) = self.c.ch.wait_event(Duration::ZERO)? {
                    if matches!(ev.kind, CmEventKind::Disconnected) {
                        self.disconnected = true;
                        // IUs still in the CQ come first; then Disconnected.
                        continue;
                    }
                }
            } else if self.c.next_wc(Duration::ZERO)?.is_none() {
                return Ok(Got::Disconnected);
            }
            if left.is_zero() {
                return Ok(Got::Timeout);
            }
        }
    }

    fn decode(&mut self, iu: &[u8]) -> Res<Got> {
        let op = iu.first().copied().unwrap_or(0xff);
        if op == Opcode::T_LOGOUT.0 {
            return Ok(Got::TLogout(TLogout::parse(iu)?.reason));
        }
        if op != Opcode::RSP.0 {
            return Ok(Got::Other(op));
        }
        let r = Rsp::parse(iu)?;
        self.credits_in += u64::from(r.req_lim_delta);
        let sense = (r.sense.len() >= 14).then(|| (r.sense[2] & 0x0f, r.sense[12], r.sense[13]));
        Ok(Got::Rsp(R {
            tag: r.tag.0,
            delta: r.req_lim_delta,
            flags: r.flags,
            status: r.status,
            do_res: r.data_out_res_cnt,
            di_res: r.data_in_res_cnt,
            sense,
            rsp_code: r.response_code(),
        }))
    }

    /// The next IU must be the SRP_RSP of `tag`.
    fn rsp(&mut self, tag: u64) -> Res<R> {
        match self.next(LONG)? {
            Got::Rsp(r) if r.tag == tag => Ok(r),
            g => Err(format!("expected SRP_RSP for tag {tag:#x}, got {g:?}").into()),
        }
    }

    /// The target logs the channel out with `reason` (SRP_T_LOGOUT) and
    /// disconnects.
    fn expect_t_logout(&mut self, reason: u32) -> Res<String> {
        match self.next(LONG)? {
            Got::TLogout(r) if r == reason => {}
            g => return Err(format!("expected SRP_T_LOGOUT reason {reason}, got {g:?}").into()),
        }
        self.expect_gone("after SRP_T_LOGOUT")?;
        Ok(format!("SRP_T_LOGOUT reason {reason}, disconnected"))
    }

    /// No response; the connection ends (CM DISCONNECTED or a failed send)
    /// within LONG.
    fn expect_gone(&mut self, what: &str) -> Res<String> {
        match self.next(LONG)? {
            Got::Disconnected => Ok("disconnected".into()),
            Got::SendFailed(s) => Ok(format!("send failed ({s})")),
            g => Err(format!("{what}: expected the channel to end, got {g:?}").into()),
        }
    }

    /// A command on the LUN; returns its tag. `data_out`/`data_in` are
    /// descriptors built by the caller.
    fn cmd(&mut self, cdb: &[u8], out: DataDesc<'_>, inp: DataDesc<'_>) -> Res<u64> {
        self.cmd_q(cdb, out, inp, false)
    }

    /// `cmd`, queued for `flush` when `queue`.
    fn cmd_q(&mut self, cdb: &[u8], out: DataDesc<'_>, inp: DataDesc<'_>, queue: bool) -> Res<u64> {
        let tag = self.next_tag();
        let cmd = Cmd::new(Tag(tag), self.lun, cdb)
            .with_data_out(out)
            .with_data_in(inp);
        let mut iu = vec![0u8; SEND_SLOT];
        let n = cmd.emit(&mut iu)?;
        if queue {
            self.queue_iu(&iu[..n])?;
        } else {
            self.send_iu(&iu[..n])?;
        }
        Ok(tag)
    }

    fn tur(&mut self) -> Res<R> {
        let t = self.cmd(&[0; 6], DataDesc::None, DataDesc::None)?;
        self.rsp(t)
    }

    /// TEST UNIT READY answers GOOD (after at most one UNIT ATTENTION: a
    /// new I_T nexus gets POWER ON OR RESET, SAM-5 5.14).
    fn alive(&mut self) -> Res<()> {
        let r = self.tur()?;
        if r.status == GOOD {
            return Ok(());
        }
        if r.status != CHECK_CONDITION || r.sense.map(|s| s.0) != Some(UNIT_ATTENTION) {
            return Err(format!("TEST UNIT READY: {r:?}").into());
        }
        let r = self.tur()?;
        if r.status != GOOD {
            return Err(format!("TEST UNIT READY after the unit attention: {r:?}").into());
        }
        Ok(())
    }

    fn direct(&self, off: usize, len: u32) -> DirectDesc {
        DirectDesc {
            va: self.c.mr.addr() + off as u64,
            rkey: self.c.mr.rkey(),
            len,
        }
    }

    fn tmf(&mut self, func: u8, task_tag: u64) -> Res<u64> {
        let tag = self.next_tag();
        let t = TaskMgmt {
            tag: Tag(tag),
            sol_not: 0,
            lun: self.lun,
            function: TmFunction(func),
            task_tag: Tag(task_tag),
        };
        let mut iu = [0u8; TaskMgmt::LEN];
        t.emit(&mut iu)?;
        self.send_iu(&iu)?;
        Ok(tag)
    }

    fn close(self) -> Res<()> {
        if !self.disconnected {
            self.c.id.disconnect()?;
            let end = Instant::now() + LONG;
            while Instant::now() < end {
                match self.c.ch.wait_event(Duration::from_millis(200))? {
                    Some(ev) if ev.kind == CmEventKind::Disconnected => break,
                    _ => {}
                }
            }
        }
        let _ = self.c.qp.to_error();
        Ok(())
    }
}

fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

/// Raw SRP_CMD header bytes (SRP r16a 6.8), for IUs the wire types refuse.
fn raw_cmd(tag: u64, lun: [u8; 8], buf_fmt: u8, out_cnt: u8, in_cnt: u8, cdb: &[u8]) -> Vec<u8> {
    let mut iu = vec![0u8; 48];
    iu[0] = Opcode::CMD.0;
    iu[5] = buf_fmt;
    iu[6] = out_cnt;
    iu[7] = in_cnt;
    iu[8..16].copy_from_slice(&tag.to_be_bytes());
    iu[20..28].copy_from_slice(&lun);
    iu[32..32 + cdb.len()].copy_from_slice(cdb);
    iu
}

fn desc_bytes(d: &DirectDesc) -> [u8; 16] {
    let mut b = [0u8; 16];
    d.emit(&mut b).expect("16 bytes");
    b
}

/// Case context: where to log in, and a fresh initiator port id per login.
struct Ctx {
    dest: SocketAddr,
    target: [u8; 16],
    lun: u16,
    n: u32,
}

struct LoginOpts {
    it_iu_len: u32,
    buf_fmt: u16,
    flags: u8,
    imm_off: u16,
    target: Option<[u8; 16]>,
    /// Raw private data instead of an SRP_LOGIN_REQ.
    raw: Option<Vec<u8>>,
}

impl Ctx {
    fn port_id(&mut self) -> [u8; 16] {
        self.n += 1;
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(b"HOSTILE!");
        p[12..].copy_from_slice(&self.n.to_be_bytes());
        p
    }

    fn opts(&self) -> LoginOpts {
        LoginOpts {
            it_iu_len: IT_IU_LEN,
            buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            flags: LoginRequest::MULTI | LoginRequest::IMMED_REQUESTED,
            imm_off: IMM_OFFSET,
            target: None,
            raw: None,
        }
    }

    fn login_with(&mut self, o: LoginOpts) -> Res<Login> {
        let req = LoginRequest {
            tag: Tag(0x484f_5354),
            req_it_iu_len: o.it_iu_len,
            req_buf_fmt: o.buf_fmt,
            req_flags: o.flags,
            imm_data_offset: o.imm_off,
            initiator_port_id: self.port_id(),
            target_port_id: o.target.unwrap_or(self.target),
        };
        let mut pdata = vec![0u8; LoginRequest::RDMA_CM_LEN];
        req.emit_rdma_cm(&mut pdata)?;
        let pdata = o.raw.unwrap_or(pdata);
        common::login(self.dest, LAYOUT, |_| pdata)
    }

    /// A normal hostile login (MULTI, immediate data requested).
    fn login(&mut self) -> Res<H> {
        let o = self.opts();
        self.login_opts(o)
    }

    fn login_opts(&mut self, o: LoginOpts) -> Res<H> {
        match self.login_with(o)? {
            Login::Rejected(r) => Err(format!("login rejected: {:#010x}", r.reason.0).into()),
            Login::Accepted(c) => {
                let credits_in = u64::from(c.rsp.req_lim_delta);
                Ok(H {
                    c,
                    tag: 0x1000,
                    lun: lun_bytes(self.lun),
                    slot: 0,
                    credits_in,
                    sent: 0,
                    disconnected: false,
                    queued: Vec::new(),
                })
            }
        }
    }

    /// Login that must be rejected with `reason` (SRP r16a 6.4).
    fn expect_reject(&mut self, o: LoginOpts, reason: RejectReason, what: &str) -> Res<String> {
        match self.login_with(o)? {
            Login::Rejected(r) if r.reason == reason => Ok(format!("{what}: {:#010x}", reason.0)),
            Login::Rejected(r) => Err(format!(
                "{what}: rejected with {:#010x}, expected {:#010x}",
                r.reason.0, reason.0
            )
            .into()),
            Login::Accepted(c) => {
                let _ = c.id.disconnect();
                Err(format!("{what}: accepted, expected reject {:#010x}", reason.0).into())
            }
        }
    }
}

type CaseFn = fn(&mut Ctx) -> Res<String>;

const CASES: &[(&str, CaseFn)] = &[
    ("empty-iu", empty_iu),
    ("short-cmd", short_cmd),
    ("short-iu-no-tag", short_iu_no_tag),
    ("short-tsk-mgmt", short_tsk_mgmt),
    ("long-tsk-mgmt", long_tsk_mgmt),
    ("iu-over-max", iu_over_max),
    ("unknown-iu-type", unknown_iu_type),
    ("target-iu-type", target_iu_type),
    ("reserved-bits", reserved_bits),
    ("bad-desc-format", bad_desc_format),
    ("diover", diover),
    ("doover", doover),
    ("diunder", diunder),
    ("indirect-count", indirect_count),
    ("indirect-table-len", indirect_table_len),
    ("indirect-total-len", indirect_total_len),
    ("ext-table-bad-rkey", ext_table_bad_rkey),
    ("ext-table-bad-len", ext_table_bad_len),
    ("imm-beyond-iu", imm_beyond_iu),
    ("imm-not-negotiated", imm_not_negotiated),
    ("credit-overrun", credit_overrun),
    ("dup-tags", dup_tags),
    ("tmf-unknown-tag", tmf_unknown_tag),
    ("after-logout", after_logout),
    ("after-t-logout", after_t_logout),
    ("login-limits", login_limits),
    ("channel-limit", channel_limit),
    ("unknown-lun", unknown_lun),
    ("bad-rkey-data", bad_rkey_data),
    ("cred-rsp-flood", cred_rsp_flood),
    ("lun-reset-nexus", lun_reset_nexus),
    ("single-takeover", single_takeover),
    ("tmf-storm", tmf_storm),
    ("vanish", vanish),
];

// ----- IU length -------------------------------------------------------

/// A zero-length SEND: no IU type at all. SRP r16a 6.6: SRP_T_LOGOUT
/// reason 2 (invalid IU type), then the channel ends.
fn empty_iu(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let off = LAYOUT.send_off();
    h.c.send(off, 0)?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_CMD of 20 bytes (has a tag, not the 48-byte header). SRP r16a 6.8 /
/// SAM-5: a malformed command is answered CHECK CONDITION, ILLEGAL
/// REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT; the channel lives.
fn short_cmd(x: &mut Ctx) -> Res<String> {
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
fn short_iu_no_tag(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let iu = raw_cmd(0x77, h.lun, 0, 0, 0, &[0; 6]);
    h.send_iu(&iu[..8])?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_TSK_MGMT of 24 bytes (48 needed): logged out, reason 2.
fn short_tsk_mgmt(x: &mut Ctx) -> Res<String> {
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
fn long_tsk_mgmt(x: &mut Ctx) -> Res<String> {
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
fn iu_over_max(x: &mut Ctx) -> Res<String> {
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
fn unknown_iu_type(x: &mut Ctx) -> Res<String> {
    let mut h = x.login()?;
    h.alive()?;
    let mut iu = [0u8; 64];
    iu[0] = 0x7f;
    iu[8..16].copy_from_slice(&0x42u64.to_be_bytes());
    h.send_iu(&iu)?;
    h.expect_t_logout(TLogout::INVALID_IU_TYPE)
}

/// SRP_RSP (a target-to-initiator IU) sent to the target: invalid IU type.
fn target_iu_type(x: &mut Ctx) -> Res<String> {
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
fn reserved_bits(x: &mut Ctx) -> Res<String> {
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
fn bad_desc_format(x: &mut Ctx) -> Res<String> {
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
fn diover(x: &mut Ctx) -> Res<String> {
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
fn doover(x: &mut Ctx) -> Res<String> {
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
fn diunder(x: &mut Ctx) -> Res<String> {
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
fn indirect_count(x: &mut Ctx) -> Res<String> {
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

/// DATA-IN format "indirect" in the low nibble.
const BUF_FMT_INDIRECT_NIBBLE: u8 = 2;

/// External table (count 0 in the IU) whose length, 40, is not a whole
/// number of 16-byte descriptors; and one of 5000 descriptors (srptd's
/// maximum is 4096). CHECK CONDITION, INVALID FIELD IN COMMAND IU.
fn indirect_table_len(x: &mut Ctx) -> Res<String> {
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
fn indirect_total_len(x: &mut Ctx) -> Res<String> {
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
fn ext_table_bad_rkey(x: &mut Ctx) -> Res<String> {
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
fn ext_table_bad_len(x: &mut Ctx) -> Res<String> {
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
fn imm_beyond_iu(x: &mut Ctx) -> Res<String> {
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
fn imm_not_negotiated(x: &mut Ctx) -> Res<String> {
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

// ----- flow control, tags, task management --------------------------------

/// REQUEST LIMIT + 1 requests without waiting for any response: 128 WRITEs
/// of 1 MiB (their data still being fetched: 128 MiB of RDMA READs, at
/// most 4 outstanding) then a TEST UNIT READY.
/// SRP r16a 5.6 / SAM-5 5.3: the request beyond the limit is answered
/// TASK SET FULL; the others GOOD; every credit comes back.
fn credit_overrun(x: &mut Ctx) -> Res<String> {
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
fn dup_tags(x: &mut Ctx) -> Res<String> {
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
fn tmf_unknown_tag(x: &mut Ctx) -> Res<String> {
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
fn after_logout(x: &mut Ctx) -> Res<String> {
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
fn unknown_lun(x: &mut Ctx) -> Res<String> {
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
fn bad_rkey_data(x: &mut Ctx) -> Res<String> {
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
fn cred_rsp_flood(x: &mut Ctx) -> Res<String> {
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
fn lun_reset_nexus(x: &mut Ctx) -> Res<String> {
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
fn single_takeover(x: &mut Ctx) -> Res<String> {
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
fn after_t_logout(x: &mut Ctx) -> Res<String> {
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
fn tmf_storm(x: &mut Ctx) -> Res<String> {
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
fn vanish(x: &mut Ctx) -> Res<String> {
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

// ----- logins ---------------------------------------------------------------

/// SRP_LOGIN_REJ reasons (SRP r16a 6.4 table 10) for extreme or
/// inconsistent requests; accepted corner cases answer what 6.3 says.
fn login_limits(x: &mut Ctx) -> Res<String> {
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
fn channel_limit(x: &mut Ctx) -> Res<String> {
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

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for (name, _) in CASES {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let target = match common::target_port_id(&args.id_ext, &args.ioc_guid) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("srp_hostile: {e}");
            return ExitCode::FAILURE;
        }
    };
    for c in args.cases.iter().chain(&args.skip) {
        if !CASES.iter().any(|(n, _)| n == c) {
            eprintln!("srp_hostile: no case {c:?} (--list)");
            return ExitCode::FAILURE;
        }
    }
    let mut x = Ctx {
        dest: args.dest,
        target,
        lun: args.lun,
        n: std::process::id() << 8,
    };
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (name, f) in CASES {
        if !args.cases.is_empty() && !args.cases.iter().any(|c| c == name) {
            continue;
        }
        if args.skip.iter().any(|c| c == name) {
            println!("case {name}: SKIP");
            skip += 1;
            continue;
        }
        for _ in 0..args.repeat {
            let start = Instant::now();
            match f(&mut x) {
                Ok(what) => {
                    pass += 1;
                    println!("case {name}: PASS ({what}) {:.1?}", start.elapsed());
                }
                Err(e) => {
                    fail += 1;
                    println!("case {name}: FAIL: {e} ({:.1?})", start.elapsed());
                }
            }
        }
    }
    println!("srp_hostile: pass {pass} fail {fail} skip {skip}");
    if fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
