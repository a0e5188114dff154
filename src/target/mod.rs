//! The running target: RDMA/CM listener and connection management on a
//! small tokio runtime (control plane), channels on poller threads (data
//! path).

pub mod device;
pub mod dm;
pub mod poller;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::proto::{
    negotiate, Channel, ChannelConfig, ChannelStats, LoginLimits, MultiChannel, TargetPortId,
};
use crate::rdma::{
    self, AccessFlags, CmEvent, CmEventKind, CmId, CmIdHandle, CompletionQueue, ConnParam, EventChannel,
    MemoryRegion, QpCaps, QpInit, QueuePair,
};
use crate::scsi::{InitiatorPortId, Target};
use crate::wire::{LoginReject, LoginRequest, RejectReason, Tag, BUF_FMT_DIRECT, BUF_FMT_INDIRECT};

use device::Device;
use poller::{ChannelDriver, PollerConfig, PollerEvent, PollerHandle, PollerMsg};

/// Everything the target needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// RDMA/CM port to listen on.
    pub port: u16,
    /// Devices to serve (empty: all).
    pub devices: Vec<String>,
    /// Login limits offered to every channel.
    pub limits: LoginLimits,
    /// Data pool per channel, bytes.
    pub pool_size: usize,
    /// Poller threads.
    pub pollers: usize,
    /// Worker threads per poller for blocking backstore I/O.
    pub io_threads: usize,
    /// Busy-poll time after the last completion before sleeping.
    pub spin: Duration,
    /// How long a clean shutdown waits for initiators to log out.
    pub shutdown_timeout: Duration,
    /// Answer device-management MADs on the served ports (`dm::DmService`).
    pub dm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 5555,
            devices: Vec::new(),
            limits: LoginLimits::default(),
            pool_size: 32 << 20,
            pollers: 1,
            io_threads: 4,
            spin: Duration::from_micros(50),
            shutdown_timeout: Duration::from_secs(10),
            dm: true,
        }
    }
}

/// Why the target could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no RDMA device found (load rdma_rxe and create one with `rdma link add rxe0 type rxe netdev <if>`, or see the README)")]
    NoDevice,
    #[error("--device {0}: no such RDMA device (available: {1})")]
    UnknownDevice(String, String),
    #[error("cannot listen on RDMA/CM port {port}: {source}")]
    Listen { port: u16, source: rdma::Error },
    #[error("{0}")]
    Rdma(#[from] rdma::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Totals printed when the target stops.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Logins accepted.
    pub logins: u64,
    /// Logins rejected.
    pub rejects: u64,
    /// Channels still open at exit (resources not freed).
    pub leaked_channels: usize,
    /// Sum of the channels' counters.
    pub stats: ChannelStats,
}

struct Conn {
    id: CmId,
    key: u64,
    poller: usize,
    nexus: (InitiatorPortId, [u8; 16]),
    disconnect_sent: bool,
}

struct Control {
    opts: Options,
    target: Arc<Target>,
    port_id: TargetPortId,
    events: Arc<EventChannel>,
    pollers: Vec<Arc<PollerHandle>>,
    devices: HashMap<String, Arc<Device>>,
    conns: HashMap<CmIdHandle, Conn>,
    by_key: HashMap<u64, CmIdHandle>,
    nexus_channels: HashMap<(InitiatorPortId, [u8; 16]), Vec<u64>>,
    next_key: u64,
    summary: Summary,
}

/// The identity initiators use: `id_ext` and `ioc_guid` are the node GUID of
/// the first device served, as the kernel target does.
pub fn identity(devices: &[String]) -> Result<(TargetPortId, Vec<String>), StartError> {
    let all = rdma::devices()?;
    if all.is_empty() {
        return Err(StartError::NoDevice);
    }
    let names: Vec<String> = all.iter().map(|d| d.name.clone()).collect();
    for d in devices {
        if !names.contains(d) {
            return Err(StartError::UnknownDevice(d.clone(), names.join(", ")));
        }
    }
    let first = devices.first().cloned().unwrap_or_else(|| names[0].clone());
    let guid = all
        .iter()
        .find(|d| d.name == first)
        .map(|d| d.guid)
        .unwrap_or_default();
    let served = if devices.is_empty() {
        names
    } else {
        devices.to_vec()
    };
    Ok((
        TargetPortId {
            id_ext: guid,
            ioc_guid: guid,
        },
        served,
    ))
}

/// Runs the target until SIGINT/SIGTERM; prints the `ready` line when it
/// accepts logins.
pub fn run(opts: Options, target: Arc<Target>) -> Result<Summary, StartError> {
    let (port_id, served) = identity(&opts.devices)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (ev_tx, ev_rx) = unbounded_channel();
        let io_queue = (opts.limits.queue_depth as usize + 8) * 64;
        let pcfg = PollerConfig {
            spin: opts.spin,
            io_threads: opts.io_threads,
            io_queue,
        };
        let pollers = (0..opts.pollers.max(1))
            .map(|i| poller::spawn(i, pcfg, ev_tx.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let events = EventChannel::new()?;
        let listener = CmId::new(&events)?;
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, opts.port));
        let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, opts.port));
        // An IPv6 wildcard listener also takes IPv4 connections (unless the
        // system says otherwise); fall back to IPv4 only.
        let bound = listener.bind_addr(v6).or_else(|_| listener.bind_addr(v4));
        if let Err(source) = bound.and_then(|_| listener.listen(128)) {
            return Err(StartError::Listen {
                port: opts.port,
                source,
            });
        }
        tracing::info!(port = opts.port, devices = ?served, "listening");
        let dm = dm::DmService::for_target(&opts, &target, port_id, &served);
        println!(
            "ready id_ext={:016x} ioc_guid={:016x} port={}",
            port_id.id_ext, port_id.ioc_guid, opts.port
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut c = Control {
            opts,
            target,
            port_id,
            events,
            pollers,
            devices: HashMap::new(),
            conns: HashMap::new(),
            by_key: HashMap::new(),
            nexus_channels: HashMap::new(),
            next_key: 1,
            summary: Summary::default(),
        };
        let result = c.main_loop(ev_rx, listener).await;
        dm.stop().await;
        result
    })
}

impl Control {
    async fn main_loop(
        &mut self,
        mut ev_rx: UnboundedReceiver<PollerEvent>,
        listener: CmId,
    ) -> Result<Summary, StartError> {
        let afd = self.events.to_async()?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut listener = Some(listener);
        // Set once shutting down: when to stop waiting for logouts, and
        // whether channels were already forced off.
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut forced = false;
        loop {
            if deadline.is_some() && self.conns.is_empty() {
                break;
            }
            let wake_at = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = afd.readable() => {
                    let mut guard = r?;
                    self.drain_cm_events();
                    guard.clear_ready();
                    self.drain_cm_events();
                }
                Some(ev) = ev_rx.recv() => self.on_poller_event(ev),
                _ = tokio::signal::ctrl_c(), if deadline.is_none() => {
                    deadline = Some(self.begin_shutdown(&mut listener));
                }
                _ = sigterm.recv(), if deadline.is_none() => {
                    deadline = Some(self.begin_shutdown(&mut listener));
                }
                _ = tokio::time::sleep_until(wake_at), if deadline.is_some() => {
                    if forced {
                        break;
                    }
                    tracing::warn!(channels = self.conns.len(), "initiators did not log out in time; disconnecting");
                    forced = true;
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                    let keys: Vec<u64> = self.conns.values().map(|c| c.key).collect();
                    for key in keys {
                        self.disconnect(key);
                    }
                }
            }
        }
        for p in &self.pollers {
            p.send(PollerMsg::Stop);
        }
        if self.conns.is_empty() {
            for p in &self.pollers {
                p.join();
            }
        }
        self.summary.leaked_channels = self.conns.len();
        Ok(self.summary.clone())
    }

    /// Stops accepting logins and logs every initiator out (SRP_T_LOGOUT
    /// once its commands finish); returns the deadline for that.
    fn begin_shutdown(&mut self, listener: &mut Option<CmId>) -> tokio::time::Instant {
        tracing::info!(
            channels = self.conns.len(),
            "shutting down: logging initiators out"
        );
        listener.take();
        let keys: Vec<(u64, usize)> = self.conns.values().map(|c| (c.key, c.poller)).collect();
        for (key, p) in keys {
            self.pollers[p].send(PollerMsg::Logout(key));
        }
        tokio::time::Instant::now() + self.opts.shutdown_timeout
    }

    fn drain_cm_events(&mut self) {
        loop {
            match self.events.get_event() {
                Ok(Some(ev)) => self.on_cm_event(ev),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "reading RDMA/CM events failed");
                    break;
                }
            }
        }
    }

    fn on_cm_event(&mut self, mut ev: CmEvent) {
        match ev.kind {
            CmEventKind::ConnectRequest => {
                if let Some(id) = ev.new_id.take() {
                    self.on_connect_request(id, &ev);
                }
            }
            CmEventKind::Established => {
                if let Some(c) = self.conns.get(&ev.id) {
                    tracing::debug!(key = c.key, "connection established");
                }
            }
            CmEventKind::Disconnected
            | CmEventKind::Rejected
            | CmEventKind::Unreachable
            | CmEventKind::ConnectError
            | CmEventKind::DeviceRemoval => {
                if let Some(c) = self.conns.get_mut(&ev.id) {
                    tracing::info!(key = c.key, event = ?ev.kind, "connection ending");
                    let key = c.key;
                    // Answer the initiator's DREQ (or tell it we are gone).
                    if !c.disconnect_sent {
                        c.disconnect_sent = true;
                        if let Err(e) = c.id.disconnect() {
                            tracing::debug!(error = %e, "rdma_disconnect");
                        }
                    }
                    let p = c.poller;
                    self.pollers[p].send(PollerMsg::Disconnect(key));
                }
            }
            CmEventKind::TimewaitExit => {}
            CmEventKind::AddrChange => tracing::warn!("address change on an RDMA device"),
            other => tracing::debug!(event = ?other, "RDMA/CM event ignored"),
        }
    }

    fn reject(&mut self, id: CmId, rej: LoginReject, why: &str) {
        self.summary.rejects += 1;
        tracing::warn!(reason = format_args!("{:#010x}", rej.reason.0), why, peer = ?id.peer_addr(), "login rejected");
        let mut b = [0u8; LoginReject::LEN];
        let n = rej.emit(&mut b).unwrap_or(0);
        if let Err(e) = id.reject(&b[..n]) {
            tracing::warn!(error = %e, "rdma_reject failed");
        }
    }

    fn device(&mut self, id: &CmId) -> rdma::Result<Arc<Device>> {
        let ctx = id.verbs_context()?;
        let name = ctx.name();
        if let Some(d) = self.devices.get(&name) {
            return Ok(d.clone());
        }
        let ram: Vec<_> = self.target.luns().into_iter().filter_map(|l| l.dma_buf).collect();
        let d = Arc::new(Device::new(ctx, &ram)?);
        self.devices.insert(name, d.clone());
        Ok(d)
    }

    fn on_connect_request(&mut self, id: CmId, ev: &CmEvent) {
        let reject_fmt = BUF_FMT_DIRECT | BUF_FMT_INDIRECT;
        let Some(conn) = ev.conn.as_ref() else {
            return self.reject(
                id,
                LoginReject {
                    tag: Tag(0),
                    reason: RejectReason::UNABLE_ESTABLISH_CHANNEL,
                    buf_fmt: reject_fmt,
                },
                "no private data",
            );
        };
        // SRP over RDMA/CM: the login request is the 56-byte private data.
        let req = match LoginRequest::parse_rdma_cm(&conn.private_data) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "bad SRP_LOGIN_REQ");
                return self.reject(
                    id,
                    LoginReject {
                        tag: Tag(0),
                        reason: RejectReason::UNABLE_ESTABLISH_CHANNEL,
                        buf_fmt: reject_fmt,
                    },
                    "malformed SRP_LOGIN_REQ",
                );
            }
        };
        let insufficient = LoginReject {
            tag: req.tag,
            reason: RejectReason::INSUFFICIENT_RESOURCES,
            buf_fmt: reject_fmt,
        };
        let device = match self.device(&id) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "opening the device of a connection failed");
                return self.reject(id, insufficient, "device setup failed");
            }
        };
        if !self.opts.devices.is_empty() && !self.opts.devices.iter().any(|d| d == device.name()) {
            let rej = LoginReject {
                tag: req.tag,
                reason: RejectReason::UNABLE_ESTABLISH_CHANNEL,
                buf_fmt: reject_fmt,
            };
            return self.reject(id, rej, "device not served");
        }
        let nexus_key = (req.initiator_port_id, req.target_port_id);
        let existing = self.nexus_channels.get(&nexus_key).map_or(0, |v| v.len()) as u32;
        let allowed = self.target.login_allowed(&req.initiator_port_id);
        let acc = match negotiate(&req, self.port_id, &self.opts.limits, allowed, existing) {
            Ok(a) => a,
            Err(rej) => return self.reject(id, rej, "negotiation"),
        };
        let key = self.next_key;
        self.next_key += 1;
        let p = (key as usize) % self.pollers.len();
        let attr = device.attr().clone();
        tracing::debug!(
            responder_resources = conn.responder_resources,
            initiator_depth = conn.initiator_depth,
            max_qp_init_rd_atom = attr.max_qp_init_rd_atom,
            max_qp_rd_atom = attr.max_qp_rd_atom,
            "connect request parameters"
        );
        // RDMA/CM reports the request's values from our side: the initiator's
        // responder resources arrive as our initiator depth (RDMA READs we
        // may have outstanding; the Linux initiator offers 4).
        let init_depth = (conn.initiator_depth as u32)
            .min(attr.max_qp_init_rd_atom)
            .clamp(1, 255) as u8;
        let resp_res = (conn.responder_resources as u32)
            .min(attr.max_qp_rd_atom)
            .min(255) as u8;
        let mut cfg = ChannelConfig::new(acc.it_iu_len, acc.imm_data_offset, self.opts.limits.queue_depth);
        cfg.pool_size = self.opts.pool_size;
        cfg.max_transfer = self.target.max_transfer_bytes();
        cfg.max_ti_iu_len = self.opts.limits.max_ti_iu_len;
        cfg.rdma_read_depth = init_depth as u32;
        cfg.sq_depth = cfg.sq_depth.min(attr.max_qp_wr.saturating_sub(1)).max(8);
        let built = self.build_channel(
            key,
            p,
            cfg,
            &device,
            &req.initiator_port_id,
            &id,
            resp_res,
            init_depth,
        );
        let driver = match built {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "creating channel resources failed");
                return self.reject(id, insufficient, "resources");
            }
        };
        let mut rsp = [0u8; 52];
        let n = acc.response.emit(&mut rsp).unwrap_or(0);
        let param = ConnParam {
            private_data: &rsp[..n],
            responder_resources: resp_res,
            initiator_depth: init_depth,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            srq: false,
            qp_num: driver.qp.qp_num(),
        };
        if let Err(e) = id.accept(&param) {
            tracing::error!(error = %e, "rdma_accept failed");
            return;
        }
        // SRP r16a 6.2 SINGLE RDMA CHANNEL: end the nexus's other channels.
        if acc.multichannel == MultiChannel::TerminateOthers {
            let others = self.nexus_channels.get(&nexus_key).cloned().unwrap_or_default();
            for k in others {
                tracing::info!(key = k, "SINGLE multichannel login replaces channel");
                self.disconnect(k);
            }
        }
        self.summary.logins += 1;
        tracing::info!(
            key,
            initiator = %hex(&req.initiator_port_id),
            peer = ?id.peer_addr(),
            device = device.name(),
            channels = existing + 1,
            it_iu_len = acc.it_iu_len,
            max_ti_iu_len = self.opts.limits.max_ti_iu_len,
            credits = self.opts.limits.queue_depth,
            immediate_data = acc.imm_data_offset.is_some(),
            rdma_read_depth = init_depth,
            "login accepted"
        );
        self.pollers[p].send(PollerMsg::Add(Box::new(driver)));
        self.nexus_channels.entry(nexus_key).or_default().push(key);
        let handle = id.handle();
        self.by_key.insert(key, handle);
        self.conns.insert(
            handle,
            Conn {
                id,
                key,
                poller: p,
                nexus: nexus_key,
                disconnect_sent: false,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn build_channel(
        &mut self,
        key: u64,
        p: usize,
        cfg: ChannelConfig,
        device: &Arc<Device>,
        ini: &InitiatorPortId,
        id: &CmId,
        resp_res: u8,
        init_depth: u8,
    ) -> Result<ChannelDriver, StartError> {
        let sq = cfg.sq_depth;
        let rq = cfg.recv_slots();
        let nexus = self.target.nexus(*ini);
        let ch = Channel::new(cfg, nexus)?;
        let comp = self.pollers[p].comp_channel(device)?;
        let cq = CompletionQueue::new(device.context(), sq + rq + 4, Some(&comp), 0, key)?;
        let caps = QpCaps {
            max_send_wr: sq + 1,
            max_recv_wr: rq + 1,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        let qp = QueuePair::new_rc(
            device.pd(),
            &QpInit {
                send_cq: &cq,
                recv_cq: &cq,
                srq: None,
                caps,
                sq_sig_all: false,
            },
        )?;
        let reg =
            |b: &Arc<rdma::DmaBuf>| MemoryRegion::register(device.pd(), b.clone(), AccessFlags::LOCAL_WRITE);
        let mrs = [
            reg(ch.recv_buf())?,
            reg(ch.send_buf())?,
            reg(ch.pool_buf())?,
            reg(ch.table_buf())?,
        ];
        // INIT -> RTR -> RTS with the attributes RDMA/CM computes for this
        // connection, before accepting (the explicit QP handling).
        id.ready_qp(&qp, Some(resp_res), Some(init_depth))?;
        let mut d = ChannelDriver::new(key, ch, qp, cq, mrs, device.clone());
        // Receives must be posted before the initiator can send.
        d.prime();
        Ok(d)
    }

    fn disconnect(&mut self, key: u64) {
        let Some(h) = self.by_key.get(&key) else { return };
        let Some(c) = self.conns.get_mut(h) else { return };
        if !c.disconnect_sent {
            c.disconnect_sent = true;
            if let Err(e) = c.id.disconnect() {
                tracing::debug!(error = %e, "rdma_disconnect");
            }
        }
        self.pollers[c.poller].send(PollerMsg::Disconnect(key));
    }

    fn on_poller_event(&mut self, ev: PollerEvent) {
        match ev {
            PollerEvent::Disconnect { key } => self.disconnect(key),
            PollerEvent::Closed { key, stats } => {
                self.summary.stats += &stats;
                if let Some(h) = self.by_key.remove(&key) {
                    if let Some(c) = self.conns.remove(&h) {
                        if let Some(v) = self.nexus_channels.get_mut(&c.nexus) {
                            v.retain(|&k| k != key);
                            if v.is_empty() {
                                self.nexus_channels.remove(&c.nexus);
                            }
                        }
                        tracing::info!(key, ?stats, "channel closed");
                        // Dropping `c.id` destroys the RDMA/CM id.
                    }
                }
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
