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

#[path = "../common/mod.rs"]
mod common;
use common::{Conn, Layout, Login, Res, SEND_WR};

mod cases_flow;
mod cases_iu;
mod cases_login;
use cases_flow::*;
use cases_iu::*;
use cases_login::*;

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

/// DATA-IN format "indirect" in the low nibble.
const BUF_FMT_INDIRECT_NIBBLE: u8 = 2;

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
