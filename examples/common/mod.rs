//! RDMA/CM plumbing shared by the userspace SRP test initiators
//! (`srp_initiator`, `srp_hostile`): resolve, create PD/CQ/QP and one
//! registered buffer, post receives, connect with an SRP_LOGIN_REQ as
//! private data, and report the login answer.
//!
//! The buffer is laid out as `recv_slots` receive slots of `recv_len`
//! bytes, then `send_len` bytes of send area, then (4 KiB aligned)
//! `data_len` bytes for data buffers and indirect tables. Receive work
//! requests carry the slot number as wr_id; sends posted through
//! [`Conn::send`] carry `SEND_WR | n`.

#![allow(dead_code, reason = "each example uses part of it")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use srptd::mem::DmaBuf;
use srptd::rdma::{
    AccessFlags, CmEvent, CmEventKind, CmId, CompletionChannel, CompletionQueue, ConnParam, EventChannel,
    MemoryRegion, ProtectionDomain, QpCaps, QpInit, QpState, QueuePair, RecvRequest, RecvScratch, SendOp,
    SendRequest, SendScratch, WorkCompletion,
};
use srptd::wire::{parse_hex, LoginReject, LoginResponse};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const TIMEOUT: Duration = Duration::from_secs(20);
/// wr_id bit of sends (receives use the slot number).
pub const SEND_WR: u64 = 1 << 32;

pub fn hex_bytes<const N: usize>(s: &str, what: &str) -> Res<[u8; N]> {
    parse_hex(s.trim_start_matches("0x"))
        .ok_or_else(|| format!("--{what}: expected {} hex digits, got {s:?}", 2 * N).into())
}

/// TARGET PORT IDENTIFIER: id_ext then ioc_guid, as ib_srp builds it.
pub fn target_port_id(id_ext: &str, ioc_guid: &str) -> Res<[u8; 16]> {
    let id_ext: [u8; 8] = hex_bytes(id_ext, "id-ext")?;
    let ioc: [u8; 8] = hex_bytes(ioc_guid, "ioc-guid")?;
    let mut target = [0u8; 16];
    target[..8].copy_from_slice(&id_ext);
    target[8..].copy_from_slice(&ioc);
    Ok(target)
}

pub fn expect_event(ch: &Arc<EventChannel>, want: CmEventKind) -> Res<CmEvent> {
    match ch.wait_event(TIMEOUT)? {
        Some(ev) if ev.kind == want => Ok(ev),
        Some(ev) => Err(format!("expected {want:?}, got {:?} (status {})", ev.kind, ev.status).into()),
        None => Err(format!("timeout waiting for {want:?}").into()),
    }
}

/// Sizes of the registered buffer and queues.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub recv_slots: usize,
    pub recv_len: usize,
    pub send_len: usize,
    pub data_len: usize,
    pub max_send_wr: u32,
}

impl Layout {
    pub const fn send_off(&self) -> usize {
        self.recv_slots * self.recv_len
    }
    pub const fn data_off(&self) -> usize {
        (self.send_off() + self.send_len).next_multiple_of(4096)
    }
    pub const fn buf_len(&self) -> usize {
        self.data_off() + self.data_len
    }
}

/// One RDMA/CM connection with its queue pair and buffer.
pub struct Conn {
    pub qp: QueuePair,
    pub cq: Arc<CompletionQueue>,
    pub buf: Arc<DmaBuf>,
    pub mr: MemoryRegion,
    pub layout: Layout,
    pub ch: Arc<EventChannel>,
    pub id: CmId,
    pub rsp: LoginResponse,
    pub sq: SendScratch,
    pub rq: RecvScratch,
    pub sends: u64,
}

pub enum Login {
    Accepted(Box<Conn>),
    Rejected(LoginReject),
}

impl Conn {
    pub fn post_recv(&mut self, slot: usize) -> Res<()> {
        let len = self.layout.recv_len;
        let sge = self.mr.sge(slot * len, len as u32).ok_or("recv sge")?;
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

    /// Posts a SEND of `len` bytes at buffer offset `off`; returns its wr_id.
    pub fn send(&mut self, off: usize, len: usize) -> Res<u64> {
        let sge = self.mr.sge(off, len as u32).ok_or("send sge")?;
        self.sends += 1;
        let wr_id = SEND_WR | (self.sends & 0xffff_ffff);
        self.qp
            .post_send(&[SendRequest::new(wr_id, SendOp::Send, &[sge])], &mut self.sq)
            .map_err(|e| e.error)?;
        Ok(wr_id)
    }

    /// Posts SENDs of `(offset, len)` pieces as one chain (one doorbell, so
    /// they leave back to back); returns how many.
    pub fn send_chain(&mut self, pieces: &[(usize, usize)]) -> Res<usize> {
        let sges = pieces
            .iter()
            .map(|&(off, len)| self.mr.sge(off, len as u32).ok_or("send sge"))
            .collect::<Result<Vec<_>, _>>()?;
        let wrs: Vec<SendRequest<'_>> = sges
            .iter()
            .map(|sge| {
                self.sends += 1;
                SendRequest::new(
                    SEND_WR | (self.sends & 0xffff_ffff),
                    SendOp::Send,
                    std::slice::from_ref(sge),
                )
            })
            .collect();
        self.qp.post_send(&wrs, &mut self.sq).map_err(|e| e.error)?;
        Ok(wrs.len())
    }

    /// Next completion (failed ones included), or None after `timeout`.
    pub fn next_wc(&self, timeout: Duration) -> Res<Option<WorkCompletion>> {
        let mut wc = [WorkCompletion::default(); 1];
        if self.cq.wait_poll(&mut wc, timeout)? == 0 {
            return Ok(None);
        }
        Ok(Some(wc[0]))
    }

    /// The bytes of receive slot `slot` (the first `len`).
    pub fn recv_bytes(&self, slot: usize, len: usize) -> Vec<u8> {
        let len = len.min(self.layout.recv_len);
        let mut iu = vec![0u8; len];
        self.buf.read(slot * self.layout.recv_len, &mut iu);
        iu
    }
}

/// Connects to `dest` with `pdata` (an SRP_LOGIN_REQ, RDMA/CM form or not)
/// as private data. `port_id_of` gets the local port's GID interface ID
/// (the default initiator port identifier's low half) before `pdata` is
/// used, so callers can build it from that.
pub fn login(dest: SocketAddr, layout: Layout, make_pdata: impl FnOnce([u8; 8]) -> Vec<u8>) -> Res<Login> {
    let ch = EventChannel::new()?;
    let id = CmId::new(&ch)?;
    id.resolve_addr(None, dest, Duration::from_secs(5))?;
    expect_event(&ch, CmEventKind::AddrResolved)?;
    id.resolve_route(Duration::from_secs(5))?;
    expect_event(&ch, CmEventKind::RouteResolved)?;
    let ctx = id.verbs_context()?;
    let gid = ctx.query_gid(id.port_num(), 0)?;
    let mut iface = [0u8; 8];
    iface.copy_from_slice(&gid.0[8..]);
    let pd = ProtectionDomain::new(&ctx)?;
    let cc = CompletionChannel::new(&ctx)?;
    let cqe = layout.recv_slots as u32 + layout.max_send_wr + 8;
    let cq = CompletionQueue::new(&ctx, cqe, Some(&cc), 0, 0)?;
    let buf = Arc::new(DmaBuf::new(layout.buf_len())?);
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_WRITE;
    let mr = MemoryRegion::register(&pd, buf.clone(), access)?;
    let qp = QueuePair::new_rc(
        &pd,
        &QpInit {
            send_cq: &cq,
            recv_cq: &cq,
            srq: None,
            caps: QpCaps {
                max_send_wr: layout.max_send_wr,
                max_recv_wr: layout.recv_slots as u32,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: true,
        },
    )?;
    qp.modify(&id.init_qp_attr(QpState::Init)?)?;
    let mut conn = Conn {
        qp,
        cq,
        buf,
        mr,
        layout,
        ch: ch.clone(),
        id,
        rsp: LoginResponse {
            tag: srptd::wire::Tag(0),
            req_lim_delta: 0,
            max_it_iu_len: 0,
            max_ti_iu_len: 0,
            buf_fmt: 0,
            rsp_flags: 0,
        },
        sq: SendScratch::with_capacity(2, 2),
        rq: RecvScratch::with_capacity(2, 2),
        sends: 0,
    };
    for slot in 0..layout.recv_slots {
        conn.post_recv(slot)?;
    }
    let pdata = make_pdata(iface);
    conn.id.connect(&ConnParam {
        private_data: &pdata,
        responder_resources: 4,
        initiator_depth: 4,
        retry_count: 7,
        rnr_retry_count: 7,
        qp_num: conn.qp.qp_num(),
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
    conn.id.ready_qp(
        &conn.qp,
        Some(peer.initiator_depth),
        Some(peer.responder_resources),
    )?;
    conn.id.establish()?;
    conn.rsp = rsp;
    Ok(Login::Accepted(Box::new(conn)))
}
