//! A minimal userspace SRP initiator over RDMA/CM, for end-to-end tests
//! of srptd next to the kernel `ib_srp` (which cannot log in thousands of
//! times quickly, nor twice from the same initiator port).
//!
//! Each login: connect with SRP_LOGIN_REQ (56-byte RDMA/CM form) as private
//! data, check the SRP_LOGIN_RSP (or print the SRP_LOGIN_REJ reason); with
//! `--io`, INQUIRY, a 4 KiB WRITE (immediate data when granted, else a
//! direct descriptor the target RDMA READs) and a READ of it back, compared
//! byte for byte; then disconnect. `--hold S` stays logged in up to S
//! seconds, printing the RDMA/CM events, until the target disconnects the
//! channel (a later SINGLE login of the same initiator port terminates it)
//! or the device is removed.
//!
//! Prints one summary line: `srp_initiator: logins N rejects N io-ok N
//! terminated N` and exits non-zero on any unexpected outcome.
//!
//!   srp_initiator --dest 169.254.77.1:5555 --id-ext <16 hex> --ioc-guid <16 hex>
//!       [--port-id <32 hex>] [--multi] [--no-imm] [--io] [--count N] [--hold S]
//!       [--expect-reject]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use srptd::mem::DmaBuf;
use srptd::rdma::{
    AccessFlags, CmEvent, CmEventKind, CmId, CompletionChannel, CompletionQueue, ConnParam, EventChannel,
    MemoryRegion, ProtectionDomain, QpCaps, QpInit, QpState, QueuePair, RecvRequest, RecvScratch, SendOp,
    SendRequest, SendScratch, WcOpcode, WorkCompletion,
};
use srptd::wire::{
    parse_hex, Cmd, DataDesc, DirectDesc, ImmediateDesc, LoginReject, LoginRequest, LoginResponse, Rsp, Tag,
    BUF_FMT_DIRECT, BUF_FMT_INDIRECT,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "Minimal userspace SRP initiator (RDMA/CM) for srptd tests")]
struct Args {
    /// Target address: IP:PORT.
    #[arg(long)]
    dest: SocketAddr,
    /// Target port identifier extension (16 hex digits).
    #[arg(long)]
    id_ext: String,
    /// IOC GUID (16 hex digits).
    #[arg(long)]
    ioc_guid: String,
    /// Initiator port identifier (32 hex digits); default: 8 zero bytes and
    /// the local port's GID interface ID, like ib_srp over RDMA/CM.
    #[arg(long)]
    port_id: Option<String>,
    /// MULTI-CHANNEL ACTION "independent" instead of SINGLE.
    #[arg(long)]
    multi: bool,
    /// Do not request immediate data.
    #[arg(long)]
    no_imm: bool,
    /// Run INQUIRY, WRITE and READ-back on LUN 0 on every login.
    #[arg(long)]
    io: bool,
    /// Logins to perform, one after the other.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Stay logged in up to this many seconds, until the target disconnects.
    #[arg(long)]
    hold: Option<u64>,
    /// Every login must be rejected (prints the reason).
    #[arg(long)]
    expect_reject: bool,
}

const TIMEOUT: Duration = Duration::from_secs(20);
/// Requested max initiator-to-target IU length: room for 4 KiB immediate data.
const IT_IU_LEN: u32 = 68 + 4096;
/// SRP-2 immediate data offset the Linux initiator uses.
const IMM_OFFSET: u16 = 68;
const RECV_SLOTS: usize = 4;
const RECV_LEN: usize = 512;
const SEND_OFF: usize = RECV_SLOTS * RECV_LEN;
const SEND_LEN: usize = IT_IU_LEN as usize;
const DATA_OFF: usize = (SEND_OFF + SEND_LEN).next_multiple_of(4096);
const DATA_LEN: usize = 4096;
const BUF_LEN: usize = DATA_OFF + 2 * DATA_LEN;

fn hex_bytes<const N: usize>(s: &str, what: &str) -> Res<[u8; N]> {
    parse_hex(s.trim_start_matches("0x"))
        .ok_or_else(|| format!("--{what}: expected {} hex digits, got {s:?}", 2 * N).into())
}

fn expect_event(ch: &Arc<EventChannel>, want: CmEventKind) -> Res<CmEvent> {
    match ch.wait_event(TIMEOUT)? {
        Some(ev) if ev.kind == want => Ok(ev),
        Some(ev) => Err(format!("expected {want:?}, got {:?} (status {})", ev.kind, ev.status).into()),
        None => Err(format!("timeout waiting for {want:?}").into()),
    }
}

/// Next completion from `cq`; failed ones are errors.
fn next_wc(cq: &CompletionQueue) -> Res<WorkCompletion> {
    let mut wc = [WorkCompletion::default(); 1];
    if cq.wait_poll(&mut wc, TIMEOUT)? == 0 {
        return Err("timeout waiting for a completion".into());
    }
    if !wc[0].is_success() {
        return Err(format!("completion {} failed: {}", wc[0].wr_id, wc[0].status).into());
    }
    Ok(wc[0])
}

/// One logged-in channel.
struct Channel {
    qp: QueuePair,
    cq: Arc<CompletionQueue>,
    buf: Arc<DmaBuf>,
    mr: MemoryRegion,
    rsp: LoginResponse,
    imm: bool,
    tag: u64,
    sq: SendScratch,
    rq: RecvScratch,
}

impl Channel {
    fn post_recv(&mut self, slot: usize) -> Res<()> {
        let sge = self.mr.sge(slot * RECV_LEN, RECV_LEN as u32).ok_or("recv sge")?;
        self.qp
            .post_recv(
                &[RecvRequest {
                    wr_id: slot as u64,
                    local: &[sge],
                }],
                &mut self.rq,
            )
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// Sends `cmd` (already emitted into the send slot, `len` bytes) and
    /// waits for its SRP_RSP; returns (status, data-in residual, sense key).
    fn exchange(&mut self, len: usize) -> Res<(u8, u32, u8)> {
        let sge = self.mr.sge(SEND_OFF, len as u32).ok_or("send sge")?;
        self.qp
            .post_send(&[SendRequest::new(1 << 32, SendOp::Send, &[sge])], &mut self.sq)
            .map_err(|e| e.error)?;
        // The send completion and the response's receive, in either order;
        // the send slot is reused only after both.
        let (mut sent, mut out) = (false, None);
        while !sent || out.is_none() {
            let wc = next_wc(&self.cq)?;
            if wc.opcode != WcOpcode::Recv {
                sent = true;
                continue;
            }
            if out.is_some() {
                return Err("two responses to one command".into());
            }
            let slot = wc.wr_id as usize;
            let mut iu = [0u8; RECV_LEN];
            let len = (wc.byte_len as usize).min(RECV_LEN);
            self.buf.read(slot * RECV_LEN, &mut iu[..len]);
            let rsp = Rsp::parse(&iu[..len])?;
            if rsp.tag != Tag(self.tag) {
                return Err(format!("response tag {:?}, expected {}", rsp.tag, self.tag).into());
            }
            // Fixed format sense: the key is in byte 2 (SPC-4 4.5.3).
            let key = rsp.sense.get(2).map_or(0, |k| k & 0x0f);
            out = Some((rsp.status, rsp.data_in_res_cnt, key));
            self.post_recv(slot)?;
        }
        Ok(out.unwrap_or_default())
    }

    /// Runs one command; a UNIT ATTENTION (the first command of a new
    /// I_T nexus gets POWER ON OR RESET, SAM-5 5.14) is retried once.
    fn command(&mut self, cdb: &[u8], out: Option<&[u8]>, in_len: u32) -> Res<(u8, u32)> {
        match self.command_once(cdb, out, in_len)? {
            (0x02, _, 0x06) => self.command_once(cdb, out, in_len).map(|(st, res, _)| (st, res)),
            (st, res, _) => Ok((st, res)),
        }
    }

    fn command_once(&mut self, cdb: &[u8], out: Option<&[u8]>, in_len: u32) -> Res<(u8, u32, u8)> {
        self.tag += 1;
        let lun = [0u8; 8];
        let cmd = Cmd::new(Tag(self.tag), lun, cdb);
        let mut iu = vec![0u8; SEND_LEN];
        let len = match out {
            Some(data) if self.imm => {
                let d = DataDesc::Immediate(ImmediateDesc {
                    len: data.len() as u32,
                    desc_end: 0,
                });
                cmd.with_data_out(d)
                    .emit_with_immediate(&mut iu, IMM_OFFSET as usize, data)?
            }
            Some(data) => {
                self.buf.write(DATA_OFF, data);
                let d = DirectDesc {
                    va: self.mr.addr() + DATA_OFF as u64,
                    rkey: self.mr.rkey(),
                    len: data.len() as u32,
                };
                cmd.with_data_out(DataDesc::Direct(d)).emit(&mut iu)?
            }
            None if in_len > 0 => {
                let d = DirectDesc {
                    va: self.mr.addr() + (DATA_OFF + DATA_LEN) as u64,
                    rkey: self.mr.rkey(),
                    len: in_len,
                };
                cmd.with_data_in(DataDesc::Direct(d)).emit(&mut iu)?
            }
            None => cmd.emit(&mut iu)?,
        };
        self.buf.write(SEND_OFF, &iu[..len]);
        self.exchange(len)
    }

    /// INQUIRY, WRITE(10) of a pattern at `lba`, READ(10) back, compare.
    fn io(&mut self, seed: u32) -> Res<()> {
        let (st, res) = self.command(&[0x12, 0, 0, 0, 96, 0], None, 96)?;
        let mut inq = [0u8; 36];
        self.buf.read(DATA_OFF + DATA_LEN, &mut inq);
        if st != 0 || res > 96 - 36 || &inq[8..13] != b"SRPTD" {
            return Err(format!(
                "INQUIRY: status {st:#x}, residual {res}, vendor {:?}",
                &inq[8..16]
            )
            .into());
        }
        let lba = (seed % 1024) * 8;
        let data: Vec<u8> = (0..DATA_LEN)
            .map(|i| (i as u32 ^ seed.wrapping_mul(2654435761)) as u8)
            .collect();
        let l = lba.to_be_bytes();
        let (st, _) = self.command(&[0x2a, 0, l[0], l[1], l[2], l[3], 0, 0, 8, 0], Some(&data), 0)?;
        if st != 0 {
            return Err(format!("WRITE(10) lba {lba}: status {st:#x}").into());
        }
        self.buf.write(DATA_OFF + DATA_LEN, &[0u8; DATA_LEN]);
        let (st, res) = self.command(
            &[0x28, 0, l[0], l[1], l[2], l[3], 0, 0, 8, 0],
            None,
            DATA_LEN as u32,
        )?;
        let mut back = vec![0u8; DATA_LEN];
        self.buf.read(DATA_OFF + DATA_LEN, &mut back);
        if st != 0 || res != 0 || back != data {
            return Err(format!("READ(10) lba {lba}: status {st:#x}, residual {res}, data differs").into());
        }
        Ok(())
    }
}

enum Login {
    Accepted(Box<Channel>, Arc<EventChannel>, CmId),
    Rejected(LoginReject),
}

fn login(args: &Args, port_id: Option<[u8; 16]>, target: [u8; 16]) -> Res<Login> {
    let ch = EventChannel::new()?;
    let id = CmId::new(&ch)?;
    id.resolve_addr(None, args.dest, Duration::from_secs(5))?;
    expect_event(&ch, CmEventKind::AddrResolved)?;
    id.resolve_route(Duration::from_secs(5))?;
    expect_event(&ch, CmEventKind::RouteResolved)?;
    let ctx = id.verbs_context()?;
    let port_id = match port_id {
        Some(p) => p,
        None => {
            let gid = ctx.query_gid(id.port_num(), 0)?;
            let mut p = [0u8; 16];
            p[8..].copy_from_slice(&gid.0[8..]);
            p
        }
    };
    let pd = ProtectionDomain::new(&ctx)?;
    let cc = CompletionChannel::new(&ctx)?;
    let cq = CompletionQueue::new(&ctx, 16, Some(&cc), 0, 0)?;
    let buf = Arc::new(DmaBuf::new(BUF_LEN)?);
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_WRITE;
    let mr = MemoryRegion::register(&pd, buf.clone(), access)?;
    let qp = QueuePair::new_rc(
        &pd,
        &QpInit {
            send_cq: &cq,
            recv_cq: &cq,
            srq: None,
            caps: QpCaps {
                max_send_wr: 4,
                max_recv_wr: RECV_SLOTS as u32,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: true,
        },
    )?;
    qp.modify(&id.init_qp_attr(QpState::Init)?)?;
    let mut chan = Channel {
        qp,
        cq,
        buf,
        mr,
        rsp: LoginResponse {
            tag: Tag(0),
            req_lim_delta: 0,
            max_it_iu_len: 0,
            max_ti_iu_len: 0,
            buf_fmt: 0,
            rsp_flags: 0,
        },
        imm: false,
        tag: 0,
        sq: SendScratch::with_capacity(2, 2),
        rq: RecvScratch::with_capacity(2, 2),
    };
    for slot in 0..RECV_SLOTS {
        chan.post_recv(slot)?;
    }
    let mut flags = if args.multi {
        LoginRequest::MULTI
    } else {
        LoginRequest::SINGLE
    };
    if !args.no_imm {
        flags |= LoginRequest::IMMED_REQUESTED;
    }
    let req = LoginRequest {
        tag: Tag(0x5150_4c47),
        req_it_iu_len: IT_IU_LEN,
        req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
        req_flags: flags,
        imm_data_offset: IMM_OFFSET,
        initiator_port_id: port_id,
        target_port_id: target,
    };
    let mut pdata = [0u8; LoginRequest::RDMA_CM_LEN];
    req.emit_rdma_cm(&mut pdata)?;
    id.connect(&ConnParam {
        private_data: &pdata,
        responder_resources: 4,
        initiator_depth: 4,
        retry_count: 7,
        rnr_retry_count: 7,
        qp_num: chan.qp.qp_num(),
        ..Default::default()
    })?;
    let ev = ch
        .wait_event(TIMEOUT)?
        .ok_or("timeout waiting for the login answer")?;
    match ev.kind {
        CmEventKind::ConnectResponse => {}
        CmEventKind::Rejected => return Ok(Login::Rejected(LoginReject::parse(ev.private_data())?)),
        k => return Err(format!("login: unexpected {k:?} (status {})", ev.status).into()),
    }
    let rsp = LoginResponse::parse(ev.private_data())?;
    let peer = ev.conn.as_ref().ok_or("no connection parameters")?;
    id.ready_qp(
        &chan.qp,
        Some(peer.initiator_depth),
        Some(peer.responder_resources),
    )?;
    id.establish()?;
    if rsp.req_lim_delta < 2 || (rsp.max_ti_iu_len as usize) > RECV_LEN {
        return Err(format!("login response with unusable limits: {rsp:?}").into());
    }
    chan.imm = rsp.rsp_flags & LoginResponse::IMMED_SUPPORTED != 0 && rsp.max_it_iu_len >= IT_IU_LEN;
    chan.rsp = rsp;
    Ok(Login::Accepted(Box::new(chan), ch, id))
}

fn run(args: &Args) -> Res<()> {
    let id_ext: [u8; 8] = hex_bytes(&args.id_ext, "id-ext")?;
    let ioc: [u8; 8] = hex_bytes(&args.ioc_guid, "ioc-guid")?;
    let mut target = [0u8; 16];
    target[..8].copy_from_slice(&id_ext);
    target[8..].copy_from_slice(&ioc);
    let port_id = args
        .port_id
        .as_deref()
        .map(|p| hex_bytes::<16>(p, "port-id"))
        .transpose()?;
    let (mut logins, mut rejects, mut io_ok, mut terminated) = (0u32, 0u32, 0u32, 0u32);
    let start = Instant::now();
    for i in 0..args.count {
        match login(args, port_id, target).map_err(|e| format!("login {i}: {e}"))? {
            Login::Rejected(rej) => {
                rejects += 1;
                println!("login {i}: rejected, reason {:#010x}", rej.reason.0);
                if !args.expect_reject {
                    return Err(format!("login {i} rejected: reason {:#010x}", rej.reason.0).into());
                }
            }
            Login::Accepted(mut chan, ch, id) => {
                logins += 1;
                if args.expect_reject {
                    return Err(format!("login {i} accepted, expected a reject").into());
                }
                if i == 0 || args.count <= 4 {
                    println!(
                        "login {i}: accepted, req_lim {} max_it_iu_len {} max_ti_iu_len {} multichannel result {} immediate {}",
                        chan.rsp.req_lim_delta,
                        chan.rsp.max_it_iu_len,
                        chan.rsp.max_ti_iu_len,
                        chan.rsp.multichannel_result(),
                        chan.imm
                    );
                }
                if args.io {
                    chan.io(i).map_err(|e| format!("login {i}: {e}"))?;
                    io_ok += 1;
                }
                // Ended by the target (DISCONNECTED) or by the device going
                // away (DEVICE_REMOVAL: release everything at once).
                let mut ended = None;
                if let Some(s) = args.hold {
                    let deadline = Instant::now() + Duration::from_secs(s);
                    while let Some(ev) = ch.wait_event(deadline.saturating_duration_since(Instant::now()))? {
                        println!("login {i}: event {:?} status {}", ev.kind, ev.status);
                        if matches!(ev.kind, CmEventKind::Disconnected | CmEventKind::DeviceRemoval) {
                            ended = Some(ev.kind);
                            break;
                        }
                    }
                    match ended {
                        Some(CmEventKind::Disconnected) => {
                            terminated += 1;
                            println!(
                                "login {i}: disconnected by the target after {:.1?}",
                                start.elapsed()
                            );
                        }
                        Some(_) => println!("login {i}: device removed after {:.1?}", start.elapsed()),
                        None => println!("login {i}: still connected after {s}s"),
                    }
                }
                if ended.is_none() {
                    id.disconnect()?;
                    expect_event(&ch, CmEventKind::Disconnected)?;
                }
                let _ = chan.qp.to_error(); // fails once the device is gone
                drop(chan);
                drop(id);
            }
        }
    }
    println!(
        "srp_initiator: logins {logins} rejects {rejects} io-ok {io_ok} terminated {terminated} in {:.1?}",
        start.elapsed()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srp_initiator: {e}");
            ExitCode::FAILURE
        }
    }
}
