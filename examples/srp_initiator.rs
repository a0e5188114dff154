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
//!       [--port-id <32 hex>] [--multi] [--no-imm] [--io] [--lun N] [--count N] [--hold S]
//!       [--expect-reject]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use srptd::rdma::{CmEventKind, WcOpcode, WorkCompletion};
use srptd::wire::{
    Cmd, DataDesc, DirectDesc, ImmediateDesc, LoginReject, LoginRequest, Rsp, Tag, BUF_FMT_DIRECT,
    BUF_FMT_INDIRECT,
};

mod common;
use common::{expect_event, hex_bytes, Conn, Layout, Res, TIMEOUT};

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
    /// Run INQUIRY, WRITE and READ-back on every login (on --lun).
    #[arg(long)]
    io: bool,
    /// LUN of the --io commands.
    #[arg(long, default_value_t = 0)]
    lun: u16,
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

/// Requested max initiator-to-target IU length: room for 4 KiB immediate data.
const IT_IU_LEN: u32 = 68 + 4096;
/// SRP-2 immediate data offset the Linux initiator uses.
const IMM_OFFSET: u16 = 68;
const RECV_LEN: usize = 512;
const LAYOUT: Layout = Layout {
    recv_slots: 4,
    recv_len: RECV_LEN,
    send_len: IT_IU_LEN as usize,
    data_len: 2 * DATA_LEN,
    max_send_wr: 4,
};
const SEND_OFF: usize = LAYOUT.recv_slots * RECV_LEN;
const SEND_LEN: usize = IT_IU_LEN as usize;
const DATA_LEN: usize = 4096;

/// Next completion from `c`; failed ones and timeouts are errors.
fn next_wc(c: &Conn) -> Res<WorkCompletion> {
    let wc = c.next_wc(TIMEOUT)?.ok_or("timeout waiting for a completion")?;
    if !wc.is_success() {
        return Err(format!("completion {} failed: {}", wc.wr_id, wc.status).into());
    }
    Ok(wc)
}

/// One logged-in channel.
struct Channel {
    c: Box<Conn>,
    imm: bool,
    tag: u64,
    lun: [u8; 8],
}

const DATA_OFF: usize = LAYOUT.data_off();

impl Channel {
    /// Sends `cmd` (already emitted into the send slot, `len` bytes) and
    /// waits for its SRP_RSP; returns (status, data-in residual, sense key).
    fn exchange(&mut self, len: usize) -> Res<(u8, u32, u8)> {
        self.c.send(SEND_OFF, len)?;
        // The send completion and the response's receive, in either order;
        // the send slot is reused only after both.
        let (mut sent, mut out) = (false, None);
        while !sent || out.is_none() {
            let wc = next_wc(&self.c)?;
            if wc.opcode != WcOpcode::Recv {
                sent = true;
                continue;
            }
            if out.is_some() {
                return Err("two responses to one command".into());
            }
            let slot = wc.wr_id as usize;
            let iu = self.c.recv_bytes(slot, wc.byte_len as usize);
            let rsp = Rsp::parse(&iu)?;
            if rsp.tag != Tag(self.tag) {
                return Err(format!("response tag {:?}, expected {}", rsp.tag, self.tag).into());
            }
            // Fixed format sense: the key is in byte 2 (SPC-4 4.5.3).
            let key = rsp.sense.get(2).map_or(0, |k| k & 0x0f);
            out = Some((rsp.status, rsp.data_in_res_cnt, key));
            self.c.post_recv(slot)?;
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
        let cmd = Cmd::new(Tag(self.tag), self.lun, cdb);
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
                self.c.buf.write(DATA_OFF, data);
                let d = DirectDesc {
                    va: self.c.mr.addr() + DATA_OFF as u64,
                    rkey: self.c.mr.rkey(),
                    len: data.len() as u32,
                };
                cmd.with_data_out(DataDesc::Direct(d)).emit(&mut iu)?
            }
            None if in_len > 0 => {
                let d = DirectDesc {
                    va: self.c.mr.addr() + (DATA_OFF + DATA_LEN) as u64,
                    rkey: self.c.mr.rkey(),
                    len: in_len,
                };
                cmd.with_data_in(DataDesc::Direct(d)).emit(&mut iu)?
            }
            None => cmd.emit(&mut iu)?,
        };
        self.c.buf.write(SEND_OFF, &iu[..len]);
        self.exchange(len)
    }

    /// INQUIRY, WRITE(10) of a pattern at `lba`, READ(10) back, compare.
    fn io(&mut self, seed: u32) -> Res<()> {
        let (st, res) = self.command(&[0x12, 0, 0, 0, 96, 0], None, 96)?;
        let mut inq = [0u8; 36];
        self.c.buf.read(DATA_OFF + DATA_LEN, &mut inq);
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
        self.c.buf.write(DATA_OFF + DATA_LEN, &[0u8; DATA_LEN]);
        let (st, res) = self.command(
            &[0x28, 0, l[0], l[1], l[2], l[3], 0, 0, 8, 0],
            None,
            DATA_LEN as u32,
        )?;
        let mut back = vec![0u8; DATA_LEN];
        self.c.buf.read(DATA_OFF + DATA_LEN, &mut back);
        if st != 0 || res != 0 || back != data {
            return Err(format!("READ(10) lba {lba}: status {st:#x}, residual {res}, data differs").into());
        }
        Ok(())
    }
}

enum Login {
    Accepted(Box<Channel>),
    Rejected(LoginReject),
}

fn login(args: &Args, port_id: Option<[u8; 16]>, target: [u8; 16]) -> Res<Login> {
    let mut flags = if args.multi {
        LoginRequest::MULTI
    } else {
        LoginRequest::SINGLE
    };
    if !args.no_imm {
        flags |= LoginRequest::IMMED_REQUESTED;
    }
    let mut err = None;
    let out = common::login(args.dest, LAYOUT, |iface| {
        let port_id = port_id.unwrap_or_else(|| {
            let mut p = [0u8; 16];
            p[8..].copy_from_slice(&iface);
            p
        });
        let req = LoginRequest {
            tag: Tag(0x5150_4c47),
            req_it_iu_len: IT_IU_LEN,
            req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            req_flags: flags,
            imm_data_offset: IMM_OFFSET,
            initiator_port_id: port_id,
            target_port_id: target,
        };
        let mut pdata = vec![0u8; LoginRequest::RDMA_CM_LEN];
        if let Err(e) = req.emit_rdma_cm(&mut pdata) {
            err = Some(e);
        }
        pdata
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    let c = match out {
        common::Login::Rejected(r) => return Ok(Login::Rejected(r)),
        common::Login::Accepted(c) => c,
    };
    let rsp = c.rsp;
    if rsp.req_lim_delta < 2 || (rsp.max_ti_iu_len as usize) > RECV_LEN {
        return Err(format!("login response with unusable limits: {rsp:?}").into());
    }
    let imm =
        rsp.rsp_flags & srptd::wire::LoginResponse::IMMED_SUPPORTED != 0 && rsp.max_it_iu_len >= IT_IU_LEN;
    // SAM-5 4.7 peripheral device addressing, as ib_srp builds it.
    let mut lun = [0u8; 8];
    lun[..2].copy_from_slice(&args.lun.to_be_bytes());
    Ok(Login::Accepted(Box::new(Channel { c, imm, tag: 0, lun })))
}

fn run(args: &Args) -> Res<()> {
    let target = common::target_port_id(&args.id_ext, &args.ioc_guid)?;
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
            Login::Accepted(mut chan) => {
                logins += 1;
                if args.expect_reject {
                    return Err(format!("login {i} accepted, expected a reject").into());
                }
                if i == 0 || args.count <= 4 {
                    println!(
                        "login {i}: accepted, req_lim {} max_it_iu_len {} max_ti_iu_len {} multichannel result {} immediate {}",
                        chan.c.rsp.req_lim_delta,
                        chan.c.rsp.max_it_iu_len,
                        chan.c.rsp.max_ti_iu_len,
                        chan.c.rsp.multichannel_result(),
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
                    while let Some(ev) = chan
                        .c
                        .ch
                        .wait_event(deadline.saturating_duration_since(Instant::now()))?
                    {
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
                    chan.c.id.disconnect()?;
                    expect_event(&chan.c.ch, CmEventKind::Disconnected)?;
                }
                let _ = chan.c.qp.to_error(); // fails once the device is gone
                drop(chan);
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
