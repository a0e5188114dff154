//! Loopback test of `srptd::rdma` on a real (soft-RoCE) device.
//!
//! A server thread listens with RDMA/CM; the main thread connects as a
//! client, sending its buffer's address and rkey as private data. The
//! server accepts with its own QP (INIT → RTR → RTS, then `rdma_accept`
//! with `qp_num`), RDMA READs the client's region A, RDMA WRITEs it back
//! transformed into region B, and SENDs a summary; the client checks the
//! bytes. Then the client disconnects and both tear down. Repeated N times
//! (default 50); the first attempt is rejected on purpose. Resource counts
//! (`rdma resource show`) must be back to the baseline after each round.
//!
//! Usage: rdma_loopback [ADDR:PORT] [CONNECTIONS]   (default 169.254.77.1:7471 50)

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use srptd::mem::DmaBuf;
use srptd::rdma::{
    AccessFlags, CmEvent, CmEventKind, CmId, CompletionChannel, CompletionQueue, ConnParam, Context,
    EventChannel, MemoryRegion, ProtectionDomain, QpCaps, QpInit, QpState, QueuePair, RecvRequest,
    RecvScratch, Remote, SendOp, SendRequest, SendScratch, SharedReceiveQueue, WcOpcode, WcStatus,
    WorkCompletion,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const REGION: usize = 32 * 1024;
const RECV_OFF: usize = 2 * REGION;
const RECV_LEN: u32 = 256;
const MAGIC: &[u8; 4] = b"SRPL";
const BAD_MAGIC: &[u8; 4] = b"NOPE";
const ACCEPT_DATA: &[u8] = b"srptd-accept";
const REJECT_DATA: &[u8] = b"srptd-reject: bad magic";
const TIMEOUT: Duration = Duration::from_secs(20);

fn pattern(idx: u32, i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 8)).wrapping_add(idx as usize * 13) as u8
}

/// Private data of the connect request: magic, index, then the client's
/// buffer address, rkey and region length.
fn login_data(magic: &[u8; 4], idx: u32, addr: u64, rkey: u32) -> [u8; 28] {
    let mut d = [0u8; 28];
    d[..4].copy_from_slice(magic);
    d[4..8].copy_from_slice(&idx.to_le_bytes());
    d[8..16].copy_from_slice(&addr.to_le_bytes());
    d[16..20].copy_from_slice(&rkey.to_le_bytes());
    d[20..24].copy_from_slice(&(REGION as u32).to_le_bytes());
    d
}

fn wait_event(ch: &Arc<EventChannel>, want: CmEventKind) -> Res<CmEvent> {
    match ch.wait_event(TIMEOUT)? {
        Some(ev) if ev.kind == want => Ok(ev),
        Some(ev) => Err(format!("expected {want:?}, got {:?} (status {})", ev.kind, ev.status).into()),
        None => Err(format!("timeout waiting for {want:?}").into()),
    }
}

/// Waits for `n` successful completions.
fn wait_wcs(cq: &CompletionQueue, n: usize) -> Res<Vec<WorkCompletion>> {
    let out = wait_wcs_any(cq, n)?;
    for wc in &out {
        if !wc.is_success() {
            return Err(format!(
                "work completion {} failed: {} (vendor {:#x})",
                wc.wr_id, wc.status, wc.vendor_err
            )
            .into());
        }
    }
    Ok(out)
}

/// Like `wait_wcs`, but returns failed completions too.
fn wait_wcs_any(cq: &CompletionQueue, n: usize) -> Res<Vec<WorkCompletion>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    let mut buf = [WorkCompletion::default(); 8];
    while out.len() < n {
        let k = cq.wait_poll(&mut buf, deadline.saturating_duration_since(Instant::now()))?;
        if k == 0 {
            return Err(format!("timeout: {} of {n} completions", out.len()).into());
        }
        out.extend_from_slice(&buf[..k]);
    }
    Ok(out)
}

struct Verbs {
    pd: Arc<ProtectionDomain>,
    cq: Arc<CompletionQueue>,
    buf: Arc<DmaBuf>,
    mr: MemoryRegion,
}

fn verbs_for(ctx: &Arc<Context>, access: AccessFlags, tag: u64) -> Res<Verbs> {
    let pd = ProtectionDomain::new(ctx)?;
    let ch = CompletionChannel::new(ctx)?;
    let cq = CompletionQueue::new(ctx, 16, Some(&ch), 0, tag)?;
    let buf = Arc::new(DmaBuf::new(3 * REGION)?);
    let mr = MemoryRegion::register(&pd, buf.clone(), access)?;
    Ok(Verbs { pd, cq, buf, mr })
}

fn caps() -> QpCaps {
    QpCaps {
        max_send_wr: 8,
        max_recv_wr: 4,
        max_send_sge: 2,
        max_recv_sge: 1,
        max_inline_data: 64,
    }
}

/// Server side of one connection. Returns bytes moved by RDMA.
fn serve_one(ch: &Arc<EventChannel>, sq: &mut SendScratch, first: bool) -> Res<u64> {
    let mut ev = wait_event(ch, CmEventKind::ConnectRequest)?;
    let id = ev.new_id.take().ok_or("connect request without id")?;
    let conn = ev.conn.clone().ok_or("connect request without parameters")?;
    let pdata = &conn.private_data;
    if pdata.len() < 24 || &pdata[..4] != MAGIC {
        id.reject(REJECT_DATA)?;
        return Err("rejected".into());
    }
    let idx = u32::from_le_bytes(pdata[4..8].try_into()?);
    let remote_addr = u64::from_le_bytes(pdata[8..16].try_into()?);
    let rkey = u32::from_le_bytes(pdata[16..20].try_into()?);
    let len = u32::from_le_bytes(pdata[20..24].try_into()?);
    if len as usize != REGION {
        return Err("bad region length".into());
    }

    let ctx = id.verbs_context()?;
    let dev = ctx.query_device()?;
    if first {
        let port = ctx.query_port(id.port_num())?;
        let gid = ctx.query_gid(id.port_num(), 0)?;
        println!(
            "server: device {} guid {} fw {:?} port {} {:?} {:?} mtu {} gid0 {gid}; max_qp_wr {} max_sge {} \
             max_qp_rd_atom {} max_qp_init_rd_atom {} max_cqe {} max_srq_wr {}",
            ctx.name(),
            srptd::rdma::format_guid(ctx.node_guid()),
            dev.fw_ver,
            id.port_num(),
            port.state,
            port.link_layer,
            port.active_mtu,
            dev.max_qp_wr,
            dev.max_sge,
            dev.max_qp_rd_atom,
            dev.max_qp_init_rd_atom,
            dev.max_cqe,
            dev.max_srq_wr,
        );
        println!(
            "server: request from {:?} to {:?}: private data {} bytes, initiator_depth {} responder_resources {}",
            id.peer_addr(),
            id.local_addr(),
            pdata.len(),
            conn.initiator_depth,
            conn.responder_resources
        );
    }
    let v = verbs_for(&ctx, AccessFlags::LOCAL_WRITE, 1000 + idx as u64)?;
    let qp = QueuePair::new_rc(
        &v.pd,
        &QpInit {
            send_cq: &v.cq,
            recv_cq: &v.cq,
            srq: None,
            caps: caps(),
            sq_sig_all: false,
        },
    )?;
    // We are responder for the peer's READs up to its initiator depth, and
    // initiate READs up to its responder resources, within device limits.
    let resp = conn.initiator_depth.min(dev.max_qp_rd_atom.min(255) as u8);
    let depth = conn
        .responder_resources
        .min(dev.max_qp_init_rd_atom.min(255) as u8);
    if depth == 0 {
        return Err("peer allows no RDMA READ".into());
    }
    id.ready_qp(&qp, Some(resp), Some(depth))?;
    if qp.state()? != QpState::Rts {
        return Err("server QP not in RTS".into());
    }
    id.accept(&ConnParam {
        private_data: ACCEPT_DATA,
        responder_resources: resp,
        initiator_depth: depth,
        rnr_retry_count: 7,
        qp_num: qp.qp_num(),
        ..Default::default()
    })?;
    wait_event(ch, CmEventKind::Established)?;

    // RDMA READ the client's region A into our region A.
    let a = v.mr.sge(0, REGION as u32).ok_or("sge")?;
    let remote_a = Remote {
        addr: remote_addr,
        rkey,
    };
    qp.post_send(&[SendRequest::new(1, SendOp::RdmaRead(remote_a), &[a])], sq)?;
    let wcs = wait_wcs(&v.cq, 1)?;
    if wcs[0].opcode != WcOpcode::RdmaRead || wcs[0].wr_id != 1 {
        return Err(format!("unexpected completion {:?}", wcs[0]).into());
    }
    let mut sum = 0u64;
    let mut bad = 0usize;
    v.buf.with_bytes_mut(0, REGION, |src| {
        for (i, b) in src.iter_mut().enumerate() {
            if *b != pattern(idx, i) {
                bad += 1;
            }
            sum += *b as u64;
            *b ^= 0x5a;
        }
    });
    if bad != 0 {
        return Err(format!("server: {bad} bytes read by RDMA READ differ").into());
    }
    // Region B (the transformed bytes) → client's region B, then a SEND
    // with the checksum, in one post; only the SEND is signaled (RC orders
    // the WRITE before it).
    v.buf.copy_to(0, &v.buf, REGION, REGION);
    let b = v.mr.sge(REGION, REGION as u32).ok_or("sge")?;
    let msg_off = RECV_OFF;
    v.buf.write(msg_off, b"DONE");
    v.buf.write(msg_off + 4, &idx.to_le_bytes());
    v.buf.write(msg_off + 8, &sum.to_le_bytes());
    let msg = v.mr.sge(msg_off, 16).ok_or("sge")?;
    let remote_b = Remote {
        addr: remote_addr + REGION as u64,
        rkey,
    };
    qp.post_send(
        &[
            SendRequest::new(2, SendOp::RdmaWrite(remote_b), &[b]).signaled(false),
            SendRequest::new(3, SendOp::SendWithImm(idx), &[msg]),
        ],
        sq,
    )?;
    let wcs = wait_wcs(&v.cq, 1)?;
    if wcs[0].wr_id != 3 || wcs[0].opcode != WcOpcode::Send {
        return Err(format!("unexpected completion {:?}", wcs[0]).into());
    }

    wait_event(ch, CmEventKind::Disconnected)?;
    if let Err(e) = id.disconnect() {
        // After the peer's DREQ the kernel has already replied; EINVAL here
        // is expected on some kernels.
        tracing::debug!("server disconnect after DISCONNECTED: {e}");
    }
    // A receive posted now is flushed when the QP goes to the error state.
    let r = v.mr.sge(RECV_OFF, RECV_LEN).ok_or("sge")?;
    let mut rq = RecvScratch::with_capacity(1, 1);
    qp.post_recv(
        &[RecvRequest {
            wr_id: 99,
            local: &[r],
        }],
        &mut rq,
    )?;
    qp.to_error()?;
    let wcs = wait_wcs_any(&v.cq, 1)?;
    if wcs[0].wr_id != 99 || wcs[0].status != WcStatus::WR_FLUSH_ERR || qp.state()? != QpState::Error {
        return Err(format!("expected a flushed receive, got {:?}", wcs[0]).into());
    }
    drop(qp);
    drop(v);
    drop(ctx);
    drop(id);
    Ok(2 * REGION as u64 + 16)
}

/// Client side of one connection (the main thread).
fn client_one(dst: SocketAddr, idx: u32, reject: bool, rq: &mut RecvScratch) -> Res<u64> {
    let ch = EventChannel::new()?;
    let id = CmId::new(&ch)?;
    id.resolve_addr(None, dst, Duration::from_secs(5))?;
    wait_event(&ch, CmEventKind::AddrResolved)?;
    id.resolve_route(Duration::from_secs(5))?;
    wait_event(&ch, CmEventKind::RouteResolved)?;
    let ctx = id.verbs_context()?;
    let dev = ctx.query_device()?;
    let v = verbs_for(
        &ctx,
        AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_WRITE,
        idx as u64,
    )?;
    // Odd connections receive through an SRQ.
    let srq = if idx % 2 == 1 {
        Some(SharedReceiveQueue::new(&v.pd, 4, 1, 0)?)
    } else {
        None
    };
    let qp = QueuePair::new_rc(
        &v.pd,
        &QpInit {
            send_cq: &v.cq,
            recv_cq: &v.cq,
            srq: srq.as_ref(),
            caps: caps(),
            sq_sig_all: false,
        },
    )?;
    qp.modify(&id.init_qp_attr(QpState::Init)?)?;
    for i in 0..REGION {
        v.buf.write(i, &[pattern(idx, i)]);
    }
    let recv = v.mr.sge(RECV_OFF, RECV_LEN).ok_or("sge")?;
    let rr = [RecvRequest {
        wr_id: 77,
        local: &[recv],
    }];
    match &srq {
        Some(s) => s.post_recv(&rr, rq)?,
        None => qp.post_recv(&rr, rq)?,
    }
    let login = login_data(
        if reject { BAD_MAGIC } else { MAGIC },
        idx,
        v.mr.addr(),
        v.mr.rkey(),
    );
    id.connect(&ConnParam {
        private_data: &login,
        responder_resources: dev.max_qp_rd_atom.min(16) as u8,
        initiator_depth: dev.max_qp_init_rd_atom.min(16) as u8,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: srq.is_some(),
        qp_num: qp.qp_num(),
        ..Default::default()
    })?;
    if reject {
        let ev = wait_event(&ch, CmEventKind::Rejected)?;
        let pd = ev.private_data();
        if !pd.starts_with(REJECT_DATA) {
            return Err(format!("reject private data {:?}", String::from_utf8_lossy(pd)).into());
        }
        println!(
            "client: rejected as expected (status {}, private data {:?})",
            ev.status,
            String::from_utf8_lossy(&pd[..REJECT_DATA.len()])
        );
        return Ok(0);
    }
    let ev = wait_event(&ch, CmEventKind::ConnectResponse)?;
    if !ev.private_data().starts_with(ACCEPT_DATA) {
        return Err("accept private data mismatch".into());
    }
    let peer = ev.conn.as_ref().ok_or("no conn param")?;
    id.ready_qp(&qp, Some(peer.initiator_depth), Some(peer.responder_resources))?;
    id.establish()?;

    // The server's SEND arrives after its RDMA WRITE has landed.
    let wcs = wait_wcs(&v.cq, 1)?;
    let wc = wcs[0];
    if wc.wr_id != 77 || wc.opcode != WcOpcode::Recv || wc.byte_len != 16 || wc.imm_data != Some(idx) {
        return Err(format!("unexpected receive completion {wc:?}").into());
    }
    let mut msg = [0u8; 16];
    v.buf.read(RECV_OFF, &mut msg);
    let expect_sum: u64 = (0..REGION).map(|i| pattern(idx, i) as u64).sum();
    if &msg[..4] != b"DONE"
        || u32::from_le_bytes(msg[4..8].try_into()?) != idx
        || u64::from_le_bytes(msg[8..16].try_into()?) != expect_sum
    {
        return Err(format!("bad message {msg:?}").into());
    }
    let mut bad = 0;
    v.buf.with_bytes(REGION, REGION, |b| {
        for (i, x) in b.iter().enumerate() {
            if *x != pattern(idx, i) ^ 0x5a {
                bad += 1;
            }
        }
    });
    if bad != 0 {
        return Err(format!("client: {bad} bytes written by RDMA WRITE differ").into());
    }
    id.disconnect()?;
    wait_event(&ch, CmEventKind::Disconnected)?;
    qp.to_error()?;
    drop(qp);
    drop(srq);
    drop(v);
    drop(ctx);
    drop(id);
    drop(ch);
    Ok(REGION as u64 * 2 + 16)
}

/// `rdma resource show` counters summed over devices: ("qp", 1), ...
fn resources() -> Option<Vec<(String, u64)>> {
    let out = std::process::Command::new("rdma")
        .args(["resource", "show"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<(String, u64)> = Vec::new();
    for line in s.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            if let Ok(n) = w[1].parse::<u64>() {
                match v.iter_mut().find(|(k, _)| k == w[0]) {
                    Some((_, c)) => *c += n,
                    None => v.push((w[0].to_string(), n)),
                }
            }
        }
    }
    Some(v)
}

fn show(r: &Option<Vec<(String, u64)>>) -> String {
    match r {
        None => "?".into(),
        Some(v) => v
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Counters other than `ctx`: librdmacm keeps the device context it
/// opened for its first id cached for the life of the process.
fn without_ctx(r: &Option<Vec<(String, u64)>>) -> Option<Vec<(String, u64)>> {
    r.as_ref()
        .map(|v| v.iter().filter(|(k, _)| k != "ctx").cloned().collect())
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .map_or("169.254.77.1:7471", |s| s.as_str())
        .parse()
        .expect("address");
    let n: u32 = args.get(2).map_or(50, |s| s.parse().expect("count"));
    match run(addr, n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdma_loopback: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: SocketAddr, n: u32) -> Res<()> {
    match srptd::rdma::devices() {
        Ok(d) => println!("devices: {d:?}"),
        Err(e) => return Err(format!("no RDMA devices: {e}").into()),
    }
    let baseline_res = resources();
    let (ready_tx, ready_rx) = mpsc::channel::<Res<()>>();
    let (done_tx, done_rx) = mpsc::channel::<u32>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> Res<(u32, u64)> {
        let ch = EventChannel::new()?;
        let listener = CmId::new(&ch)?;
        let setup = listener.bind_addr(addr).and_then(|_| listener.listen(16));
        let failed = setup.is_err();
        ready_tx.send(setup.map_err(|e| e.into()))?;
        if failed {
            return Err("listen failed".into());
        }
        let mut sq = SendScratch::with_capacity(4, 4);
        // The first request carries a bad magic and is rejected.
        match serve_one(&ch, &mut sq, true) {
            Err(e) if e.to_string() == "rejected" => {}
            Err(e) => return Err(e),
            Ok(_) => return Err("bad login was accepted".into()),
        }
        let mut bytes = 0;
        for i in 0..n {
            bytes += serve_one(&ch, &mut sq, i == 0).map_err(|e| format!("server, connection {i}: {e}"))?;
            done_tx.send(i)?;
        }
        // Keep listening until the client has looked at the resources.
        let _ = release_rx.recv();
        drop(listener);
        Ok((n, bytes))
    });
    ready_rx
        .recv()?
        .map_err(|e| format!("server listen on {addr}: {e}"))?;
    let fds0 = fd_count();

    let mut rq = RecvScratch::with_capacity(4, 4);
    let t0 = Instant::now();
    client_one(addr, 0, true, &mut rq).map_err(|e| format!("client, rejected attempt: {e}"))?;
    let mut bytes = 0;
    let mut res_after_first = None;
    let mut res_after_last = None;
    for i in 0..n {
        bytes += client_one(addr, i, false, &mut rq).map_err(|e| format!("client, connection {i}: {e}"))?;
        // Wait until the server has torn the connection down too.
        if done_rx.recv_timeout(TIMEOUT) != Ok(i) {
            let _ = release_tx.send(());
            return Err(server
                .join()
                .map_err(|_| "server thread panicked")?
                .err()
                .unwrap_or_else(|| "server out of step".into()));
        }
        if i == 0 {
            res_after_first = resources();
        }
        if i + 1 == n {
            res_after_last = resources();
        }
    }
    let _ = release_tx.send(());
    let (served, server_bytes) = server.join().map_err(|_| "server thread panicked")??;
    let fds1 = fd_count();
    let res_end = resources();
    println!(
        "client: {n} connections OK in {:.1?}; client checked {bytes} bytes; server moved {server_bytes} bytes over {served} connections",
        t0.elapsed()
    );
    println!("fds: {fds0} after listen, {fds1} at end");
    println!("resources at start:            {}", show(&baseline_res));
    println!("resources after connection 1:  {}", show(&res_after_first));
    println!("resources after connection {n}: {}", show(&res_after_last));
    println!("resources at end:              {}", show(&res_end));
    if fds1 + 2 < fds0 || fds1 > fds0 {
        // The listener's channel (one fd) is gone at the end; nothing else
        // may remain.
        return Err(format!("fd leak: {fds0} -> {fds1}").into());
    }
    if res_after_first != res_after_last {
        return Err("RDMA resources grew between the first and the last connection".into());
    }
    if without_ctx(&baseline_res) != without_ctx(&res_end) {
        return Err("RDMA resources not back to baseline".into());
    }
    println!("rdma_loopback: PASS");
    Ok(())
}
