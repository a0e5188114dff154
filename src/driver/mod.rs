//! The running target: RDMA/CM listeners and connection management on a
//! small tokio runtime (control plane), channels on poller threads (data
//! path).
//!
//! Listeners: one wildcard IPv6/IPv4 RDMA/CM listener on the configured
//! port (it follows devices as they come and go), and on every InfiniBand
//! port of a served device one in the IB port space (`AF_IB`, service ID
//! [`ib_service_id`]) for IB CM logins. A device that goes away
//! (DEVICE_REMOVAL) has its channels drained and freed, then its PD, MRs and
//! SRQ, so that the kernel can finish removing it; other devices keep
//! serving.

pub mod channel;
pub mod device;
pub mod dm;
pub mod poller;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::mad::agent::{rdma_cm_service_id, RDMA_PS_IB};
use crate::proto::{
    negotiate, Channel, ChannelConfig, ChannelStats, LoginLimits, MultiChannel, TargetPortId,
};
use crate::rdma::{
    self, AccessFlags, CmEvent, CmEventKind, CmId, CmIdHandle, CompletionQueue, ConnParam, Context,
    EventChannel, Gid, IbAddr, LinkLayer, MemoryRegion, PortSpace, QpCaps, QpInit, QueuePair,
};
use crate::scsi::{InitiatorPortId, Target};
use crate::wire::{LoginReject, LoginRequest, RejectReason, Tag, BUF_FMT_DIRECT, BUF_FMT_INDIRECT};

use channel::{ChannelDriver, RecvSide};
use device::{Device, SrqSettings};
use poller::{PollerConfig, PollerEvent, PollerHandle, PollerMsg};

/// The IB CM service ID srptd listens on in the IB port space for RDMA/CM
/// port `port` (`RDMA_PS_IB << 16 | port`; 0x00000000013f15b3 for 5555),
/// as `docs/device-management.md` recommends advertising in the DevMgt
/// ServiceEntries for InfiniBand initiators.
pub fn ib_service_id(port: u16) -> u64 {
    rdma_cm_service_id(RDMA_PS_IB, port)
}

/// The `AF_IB` address of the IB port-space listener on a port with GID
/// `gid` (default P_Key, exactly [`ib_service_id`]).
pub fn ib_listen_addr(gid: Gid, port: u16) -> IbAddr {
    IbAddr {
        gid,
        pkey: 0xffff,
        service_id: ib_service_id(port),
        service_id_mask: !0,
    }
}

/// How long the control plane keeps asking librdmacm to let go of a removed
/// device, and keeps looking for InfiniBand ports to listen on after one.
const DEVICE_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
const IB_RESCAN_WINDOW: Duration = Duration::from_secs(120);
const TICK: Duration = Duration::from_secs(1);

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
    /// One shared receive queue per device instead of a receive queue per
    /// channel.
    pub srq: bool,
    /// Receive slots of each device's SRQ (`None`: derived, see
    /// [`device::srq_slots`]).
    pub srq_size: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 5555,
            devices: Vec::new(),
            limits: LoginLimits::default(),
            pool_size: 32 << 20,
            pollers: default_pollers(),
            io_threads: 4,
            spin: Duration::from_micros(50),
            shutdown_timeout: Duration::from_secs(10),
            dm: true,
            srq: false,
            srq_size: None,
        }
    }
}

/// Poller threads by default: one per CPU the process may run on, at most
/// [`MAX_DEFAULT_POLLERS`]. An idle poller sleeps, so spare ones cost
/// nothing; channels go to the least loaded one.
pub fn default_pollers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_DEFAULT_POLLERS)
}

/// Upper bound of [`default_pollers`].
pub const MAX_DEFAULT_POLLERS: usize = 8;

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
    /// Shared receive queue slots neither posted nor owned by a channel at
    /// exit (or when their device went away).
    pub leaked_srq_slots: u64,
    /// Sum of the channels' counters.
    pub stats: ChannelStats,
    /// Times the pollers went to sleep (woken by a completion event, a
    /// control message or a backstore completion).
    pub poller_sleeps: u64,
    /// `ibv_post_send` calls (each a doorbell system call on soft-RoCE).
    pub doorbells: u64,
}

struct Conn {
    id: CmId,
    key: u64,
    poller: usize,
    nexus: (InitiatorPortId, [u8; 16]),
    device: String,
    disconnect_sent: bool,
}

/// A listener in the IB port space on one InfiniBand port.
struct IbListener {
    _id: CmId,
    device: String,
    port: u8,
}

struct Control {
    opts: Options,
    target: Arc<Target>,
    port_id: TargetPortId,
    events: Arc<EventChannel>,
    pollers: Vec<Arc<PollerHandle>>,
    devices: HashMap<String, Arc<Device>>,
    /// Removed devices whose channels are still closing.
    removing: HashMap<String, Arc<Device>>,
    /// Removed and freed devices librdmacm still has to let go of.
    releasing: Vec<(String, tokio::time::Instant)>,
    /// The IPv6/IPv4 wildcard listener (None: to be re-created, or shutting
    /// down).
    listener: Option<CmId>,
    ib_listeners: HashMap<CmIdHandle, IbListener>,
    /// Devices whose ports were looked at for IB port-space listeners.
    ib_scanned: HashSet<String>,
    ib_rescan_until: Option<tokio::time::Instant>,
    tick_at: Option<tokio::time::Instant>,
    shutting_down: bool,
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
        let listener = listen_ip(&events, opts.port).map_err(|source| StartError::Listen {
            port: opts.port,
            source,
        })?;
        let port = opts.port;
        let dm = dm::DmService::for_target(&opts, &target, port_id, &served);
        let mut c = Control {
            opts,
            target,
            port_id,
            events,
            pollers,
            devices: HashMap::new(),
            removing: HashMap::new(),
            releasing: Vec::new(),
            listener: Some(listener),
            ib_listeners: HashMap::new(),
            ib_scanned: HashSet::new(),
            ib_rescan_until: None,
            tick_at: None,
            shutting_down: false,
            conns: HashMap::new(),
            by_key: HashMap::new(),
            nexus_channels: HashMap::new(),
            next_key: 1,
            summary: Summary::default(),
        };
        c.scan_ib_ports(&served);
        tracing::info!(
            port,
            srq = c.opts.srq,
            ib_listeners = c.ib_listeners.len(),
            devices = ?served,
            "listening"
        );
        println!(
            "ready id_ext={:016x} ioc_guid={:016x} port={}",
            port_id.id_ext, port_id.ioc_guid, port
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let result = c.main_loop(ev_rx).await;
        dm.stop().await;
        result
    })
}

/// The wildcard RDMA/CM listener on `port`: IPv6, which also takes IPv4
/// connections (unless the system says otherwise), else IPv4 only.
fn listen_ip(events: &Arc<EventChannel>, port: u16) -> rdma::Result<CmId> {
    let listener = CmId::new(events)?;
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    listener
        .bind_addr(v6)
        .or_else(|_| listener.bind_addr(v4))
        .and_then(|_| listener.listen(128))?;
    Ok(listener)
}

/// The InfiniBand ports of device `name` with their GID 0. Other link
/// layers (RoCE, soft-RoCE, iWARP) are skipped: their initiators log in
/// over IP.
fn ib_ports(name: &str) -> rdma::Result<Vec<(u8, Gid)>> {
    let ctx = Context::open(name)?;
    let attr = ctx.query_device()?;
    let mut v = Vec::new();
    for port in 1..=attr.phys_port_cnt {
        let pa = ctx.query_port(port)?;
        match pa.link_layer {
            // Unspecified: drivers that predate the field are InfiniBand.
            LinkLayer::InfiniBand | LinkLayer::Unspecified => v.push((port, ctx.query_gid(port, 0)?)),
            other => tracing::debug!(
                device = name,
                port,
                link_layer = ?other,
                "no IB port-space listener on a port that is not InfiniBand"
            ),
        }
    }
    Ok(v)
}

impl Control {
    async fn main_loop(&mut self, mut ev_rx: UnboundedReceiver<PollerEvent>) -> Result<Summary, StartError> {
        let afd = self.events.to_async()?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // Set once shutting down: when to stop waiting for logouts, and
        // whether channels were already forced off.
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut forced = false;
        loop {
            if deadline.is_some() && self.conns.is_empty() {
                break;
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let wake_at = deadline.unwrap_or(far);
            let tick_at = self.tick_at;
            tokio::select! {
                r = afd.readable() => {
                    let mut guard = r?;
                    self.drain_cm_events();
                    guard.clear_ready();
                    self.drain_cm_events();
                }
                Some(ev) = ev_rx.recv() => self.on_poller_event(ev),
                _ = tokio::signal::ctrl_c(), if deadline.is_none() => {
                    deadline = Some(self.begin_shutdown());
                }
                _ = sigterm.recv(), if deadline.is_none() => {
                    deadline = Some(self.begin_shutdown());
                }
                _ = tokio::time::sleep_until(tick_at.unwrap_or(far)), if tick_at.is_some() => self.tick(),
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
        for p in &self.pollers {
            let c = p.counters();
            self.summary.poller_sleeps += c.sleeps.load(std::sync::atomic::Ordering::Relaxed);
            self.summary.doorbells += c.doorbells.load(std::sync::atomic::Ordering::Relaxed);
        }
        for d in self.devices.values().chain(self.removing.values()) {
            self.summary.leaked_srq_slots += lost_srq_slots(d, "at exit");
        }
        Ok(self.summary.clone())
    }

    /// Stops accepting logins and logs every initiator out (SRP_T_LOGOUT
    /// once its commands finish); returns the deadline for that.
    fn begin_shutdown(&mut self) -> tokio::time::Instant {
        tracing::info!(
            channels = self.conns.len(),
            "shutting down: logging initiators out"
        );
        self.shutting_down = true;
        self.listener = None;
        self.ib_listeners.clear();
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
            CmEventKind::DeviceRemoval => self.on_device_removal(ev.id),
            CmEventKind::AddrChange => self.on_addr_change(ev.id),
            CmEventKind::Disconnected
            | CmEventKind::Rejected
            | CmEventKind::Unreachable
            | CmEventKind::ConnectError => {
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
            other => tracing::debug!(event = ?other, "RDMA/CM event ignored"),
        }
    }

    /// DEVICE_REMOVAL: on a connection, an IB listener or the id a device's
    /// context comes from, the whole device goes: its channels are drained
    /// and freed, then the device state. (The wildcard listener itself gets
    /// no such event: the kernel drops its per-device part by itself and
    /// adds one for devices that appear later.) librdmacm has already
    /// stopped the kernel side of the id.
    fn on_device_removal(&mut self, h: CmIdHandle) {
        if self.listener.as_ref().is_some_and(|l| l.handle() == h) {
            tracing::warn!("device removal on the RDMA/CM listener; listening again");
            self.relisten();
            return;
        }
        let name = if let Some(l) = self.ib_listeners.remove(&h) {
            Some(l.device)
        } else if let Some(c) = self.conns.get(&h) {
            Some(c.device.clone())
        } else {
            self.devices
                .values()
                .find(|d| d.anchor() == h)
                .map(|d| d.name().to_owned())
        };
        match name {
            Some(name) => self.remove_device(&name),
            None => tracing::debug!(?h, "device removal for an id no longer in use"),
        }
    }

    /// ADDR_CHANGE: the listener's address moved (e.g. bonding failover):
    /// listen again. Connections keep their path.
    fn on_addr_change(&mut self, h: CmIdHandle) {
        if self.listener.as_ref().is_some_and(|l| l.handle() == h) {
            tracing::warn!("address change on the RDMA/CM listener; listening again");
            self.relisten();
        } else if let Some(l) = self.ib_listeners.remove(&h) {
            tracing::warn!(device = %l.device, port = l.port, "address change on an IB listener; listening again");
            self.ib_scanned.remove(&l.device);
            self.ib_listeners.retain(|_, x| x.device != l.device);
            self.ib_rescan_until = Some(tokio::time::Instant::now() + IB_RESCAN_WINDOW);
            self.schedule_tick();
        } else {
            tracing::info!(?h, "address change on a connection");
        }
    }

    /// Replaces the wildcard listener (retried every tick until it works).
    fn relisten(&mut self) {
        self.listener = None;
        if self.shutting_down {
            return;
        }
        match listen_ip(&self.events, self.opts.port) {
            Ok(l) => {
                tracing::info!(port = self.opts.port, "listening again");
                self.listener = Some(l);
            }
            Err(e) => {
                tracing::warn!(error = %e, port = self.opts.port, "listening failed; retrying");
                self.schedule_tick();
            }
        }
    }

    /// Creates IB port-space listeners on the InfiniBand ports of the served
    /// devices not looked at yet.
    fn scan_ib_ports(&mut self, served: &[String]) {
        if self.shutting_down {
            return;
        }
        for name in served {
            if !self.ib_scanned.insert(name.clone()) {
                continue;
            }
            let ports = match ib_ports(name) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(device = %name, error = %e, "cannot look at the ports of a device");
                    self.ib_scanned.remove(name);
                    continue;
                }
            };
            for (port, gid) in ports {
                let addr = ib_listen_addr(gid, self.opts.port);
                let made = CmId::with_port_space(&self.events, PortSpace::Ib)
                    .and_then(|id| id.bind_ib(&addr).and_then(|_| id.listen(128)).map(|_| id));
                match made {
                    Ok(id) => {
                        tracing::info!(
                            device = %name,
                            port,
                            %gid,
                            service_id = format_args!("{:#018x}", addr.service_id),
                            "listening in the IB port space"
                        );
                        self.ib_listeners.insert(
                            id.handle(),
                            IbListener {
                                _id: id,
                                device: name.clone(),
                                port,
                            },
                        );
                    }
                    Err(e) => tracing::warn!(
                        device = %name,
                        port,
                        error = %e,
                        "cannot listen in the IB port space (IB CM logins will not work)"
                    ),
                }
            }
        }
    }

    fn served_devices(&self) -> Vec<String> {
        if !self.opts.devices.is_empty() {
            return self.opts.devices.clone();
        }
        rdma::devices()
            .map(|v| v.into_iter().map(|d| d.name).collect())
            .unwrap_or_default()
    }

    fn schedule_tick(&mut self) {
        if self.tick_at.is_none() {
            self.tick_at = Some(tokio::time::Instant::now() + TICK);
        }
    }

    /// Periodic work, only while something is pending: re-creating a lost
    /// listener, letting librdmacm release removed devices, looking for IB
    /// ports after a removal.
    fn tick(&mut self) {
        self.tick_at = None;
        let now = tokio::time::Instant::now();
        if self.listener.is_none() && !self.shutting_down {
            self.relisten();
        }
        if !self.releasing.is_empty() {
            // Err: librdmacm could not read a device list (none left).
            let known = rdma::resync_cm_devices().ok();
            let mut ib_again = false;
            self.releasing.retain(|(name, until)| {
                if known.as_ref().is_some_and(|k| !k.contains(name)) {
                    tracing::info!(device = %name, "librdmacm let go of the removed device");
                    ib_again = true;
                    false
                } else if now >= *until {
                    tracing::warn!(
                        device = %name,
                        "librdmacm still holds the removed device; its removal waits for srptd to exit"
                    );
                    false
                } else {
                    true
                }
            });
            if ib_again {
                self.ib_rescan_until = Some(now + IB_RESCAN_WINDOW);
            }
        }
        if let Some(until) = self.ib_rescan_until {
            let served = self.served_devices();
            // Forget what is gone, so that a device coming back is scanned.
            self.ib_scanned.retain(|n| served.contains(n));
            self.scan_ib_ports(&served);
            if now >= until {
                self.ib_rescan_until = None;
            }
        }
        if (self.listener.is_none() && !self.shutting_down)
            || !self.releasing.is_empty()
            || self.ib_rescan_until.is_some()
        {
            self.schedule_tick();
        }
    }

    /// The device `name` is going away: stop using it, close its channels
    /// (drain, free); the device state is dropped when the last one closed.
    fn remove_device(&mut self, name: &str) {
        let Some(dev) = self.devices.remove(name) else {
            return;
        };
        let keys: Vec<u64> = self
            .conns
            .values()
            .filter(|c| c.device == name)
            .map(|c| c.key)
            .collect();
        tracing::warn!(
            device = name,
            channels = keys.len(),
            "RDMA device removed; closing its channels"
        );
        self.ib_listeners.retain(|_, l| l.device != name);
        for k in keys {
            self.disconnect(k);
        }
        self.removing.insert(name.to_owned(), dev);
        self.maybe_release(name);
    }

    /// Frees a removed device once none of its channels is left.
    fn maybe_release(&mut self, name: &str) {
        if self.conns.values().any(|c| c.device == name) {
            return;
        }
        let Some(dev) = self.removing.remove(name) else {
            return;
        };
        self.summary.leaked_srq_slots += lost_srq_slots(&dev, "when its device went away");
        for p in &self.pollers {
            p.forget_device(&dev);
        }
        drop(dev);
        tracing::info!(device = name, "removed device: channels closed, resources freed");
        // librdmacm keeps its own context of the device open (for the
        // process) until it re-reads its device list and finds the device
        // gone; ask it to (now and on later ticks). It never does so when no
        // device is left at all (rdma-core's sync_devices_list gives up on
        // an empty list), and the kernel's removal then waits for srptd to
        // exit.
        let others = rdma::devices().is_ok_and(|v| v.iter().any(|d| d.name != name));
        if others {
            self.releasing.push((
                name.to_owned(),
                tokio::time::Instant::now() + DEVICE_RELEASE_TIMEOUT,
            ));
            let _ = rdma::resync_cm_devices();
            self.schedule_tick();
        } else {
            tracing::warn!(
                device = name,
                "no other RDMA device: librdmacm keeps its context of the removed device open, \
                 so the kernel cannot finish removing it until srptd exits"
            );
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
        if self
            .removing
            .get(&name)
            .is_some_and(|d| d.context().same_context(&ctx))
        {
            return Err(rdma::Error::Invalid("device is being removed"));
        }
        if let Some(d) = self.devices.get(&name) {
            if d.context().same_context(&ctx) {
                return Ok(d.clone());
            }
            // Replaced without a removal event reaching us.
            tracing::warn!(device = %name, "RDMA device context changed; dropping the old one");
            self.remove_device(&name);
        }
        let ram: Vec<_> = self.target.luns().into_iter().filter_map(|l| l.dma_buf).collect();
        let srq = self.opts.srq.then_some(SrqSettings {
            slots: self.opts.srq_size,
            max_it_iu_len: self.opts.limits.max_it_iu_len,
            queue_depth: self.opts.limits.queue_depth,
        });
        let d = Arc::new(Device::new(ctx, id.handle(), &ram, srq.as_ref())?);
        // Every poller's completion channel for the device now, not at the
        // first channel that lands on it: the descriptors a device costs are
        // all taken when it is opened, and a login never adds one.
        if let Err(e) = self.pollers.iter().try_for_each(|p| p.comp_channel(&d).map(drop)) {
            for p in &self.pollers {
                p.forget_device(&d);
            }
            return Err(e);
        }
        self.devices.insert(name, d.clone());
        Ok(d)
    }

    fn on_connect_request(&mut self, id: CmId, ev: &CmEvent) {
        // A login we cannot even parse is answered with tag 0.
        let rejection = |tag: Tag, reason: RejectReason| LoginReject {
            tag,
            reason,
            buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
        };
        let Some(conn) = ev.conn.as_ref() else {
            let rej = rejection(Tag(0), RejectReason::UNABLE_ESTABLISH_CHANNEL);
            return self.reject(id, rej, "no private data");
        };
        // SRP over RDMA/CM: the login request is the 56-byte private data;
        // through an IB port-space listener (IB CM logins) it is the 64-byte
        // IU form, as the IB CM REQ carries it.
        let ib = ev.listen_id.is_some_and(|l| self.ib_listeners.contains_key(&l));
        let parsed = if ib {
            LoginRequest::parse(&conn.private_data)
        } else {
            LoginRequest::parse_rdma_cm(&conn.private_data)
        };
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "bad SRP_LOGIN_REQ");
                let rej = rejection(Tag(0), RejectReason::UNABLE_ESTABLISH_CHANNEL);
                return self.reject(id, rej, "malformed SRP_LOGIN_REQ");
            }
        };
        let insufficient = rejection(req.tag, RejectReason::INSUFFICIENT_RESOURCES);
        let device = match self.device(&id) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "opening the device of a connection failed");
                return self.reject(id, insufficient, "device setup failed");
            }
        };
        if !self.opts.devices.is_empty() && !self.opts.devices.iter().any(|d| d == device.name()) {
            let rej = rejection(req.tag, RejectReason::UNABLE_ESTABLISH_CHANNEL);
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
        let p = self.least_loaded_poller();
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
        let init_depth = rdma_read_depth(conn.initiator_depth, attr.max_qp_init_rd_atom);
        let resp_res = (conn.responder_resources as u32)
            .min(attr.max_qp_rd_atom)
            .min(255) as u8;
        let mut cfg = ChannelConfig::new(acc.it_iu_len, acc.imm_data_offset, self.opts.limits.queue_depth);
        cfg.pool_size = self.opts.pool_size;
        cfg.max_transfer = self.target.max_transfer_bytes();
        cfg.max_ti_iu_len = self.opts.limits.max_ti_iu_len;
        cfg.rdma_read_depth = init_depth as u32;
        cfg.sq_depth = cfg.sq_depth.min(attr.max_qp_wr.saturating_sub(1)).max(8);
        if let Some(srq) = device.srq() {
            cfg.shared_recv = Some(srq.shared_recv());
            // Credits are per channel; the slots are shared. Beyond this the
            // initiators may meet receiver-not-ready retries under load.
            let on_device = self.conns.values().filter(|c| c.device == device.name()).count() as u64 + 1;
            let credits = on_device * u64::from(cfg.recv_slots());
            if credits > u64::from(srq.slots()) {
                tracing::warn!(
                    device = device.name(),
                    channels = on_device,
                    credits,
                    srq_slots = srq.slots(),
                    "channels' credits exceed the shared receive queue (see --srq-size)"
                );
            }
        }
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
            srq: device.srq().is_some(),
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
            initiator = %crate::wire::hex(&req.initiator_port_id),
            peer = ?id.peer_addr(),
            device = device.name(),
            channels = existing + 1,
            it_iu_len = acc.it_iu_len,
            max_ti_iu_len = self.opts.limits.max_ti_iu_len,
            credits = self.opts.limits.queue_depth,
            immediate_data = acc.imm_data_offset.is_some(),
            rdma_read_depth = init_depth,
            srq = device.srq().is_some(),
            ib_cm = ib,
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
                device: device.name().to_owned(),
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
        let srq = device.srq().filter(|_| cfg.shared_recv.is_some()).cloned();
        let nexus = self.target.nexus(*ini);
        let ch = Channel::new(cfg, nexus)?;
        let comp = self.pollers[p].comp_channel(device)?;
        // With a shared queue an initiator that overdraws its credits finds
        // receives anyway: leave the CQ room for that too.
        let cqe = sq + rq + 4 + if srq.is_some() { rq } else { 0 };
        let cq = CompletionQueue::new(device.context(), cqe, Some(&comp), 0, key)?;
        let caps = QpCaps {
            max_send_wr: sq + 1,
            max_recv_wr: if srq.is_some() { 0 } else { rq + 1 },
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        let qp = QueuePair::new_rc(
            device.pd(),
            &QpInit {
                send_cq: &cq,
                recv_cq: &cq,
                srq: srq.as_ref().map(|s| s.srq()),
                caps,
                sq_sig_all: false,
            },
        )?;
        let reg =
            |b: &Arc<rdma::DmaBuf>| MemoryRegion::register(device.pd(), b.clone(), AccessFlags::LOCAL_WRITE);
        let recv = match srq {
            Some(s) => RecvSide::Srq(s),
            None => RecvSide::Own(reg(ch.recv_buf())?),
        };
        let mrs = [reg(ch.send_buf())?, reg(ch.pool_buf())?, reg(ch.table_buf())?];
        // INIT -> RTR -> RTS with the attributes RDMA/CM computes for this
        // connection, before accepting (the explicit QP handling).
        id.ready_qp(&qp, Some(resp_res), Some(init_depth))?;
        let mut d = ChannelDriver::new(key, ch, qp, cq, recv, mrs, device.clone());
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

    /// The poller with the fewest channels (the lowest index on a tie), so
    /// that the channels of one login land on different threads: on
    /// soft-RoCE every posting thread also carries the queue pair's protocol
    /// work.
    fn least_loaded_poller(&self) -> usize {
        least_loaded(self.pollers.len(), self.conns.values().map(|c| c.poller))
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
                        if self.removing.contains_key(&c.device) {
                            self.maybe_release(&c.device);
                        }
                    }
                }
            }
        }
    }
}

/// Slots of `dev`'s shared receive queue that are not posted, counted once
/// no channel is left on the device (so none owns a slot): lost, and
/// logged as such.
fn lost_srq_slots(dev: &Device, when: &str) -> u64 {
    let Some(srq) = dev.srq() else { return 0 };
    let lost = srq.slots().saturating_sub(srq.posted());
    if lost > 0 {
        tracing::error!(
            device = dev.name(),
            lost,
            "shared receive queue slots not posted {when}"
        );
    }
    u64::from(lost)
}

/// Of `n` pollers, the one with the fewest of the `assigned` channels (each
/// given by its poller's index); the lowest index on a tie.
fn least_loaded(n: usize, assigned: impl Iterator<Item = usize>) -> usize {
    let mut load = vec![0usize; n.max(1)];
    for p in assigned {
        if let Some(l) = load.get_mut(p) {
            *l += 1;
        }
    }
    (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0)
}

/// RDMA READs a channel may have outstanding: what the initiator offers
/// (its responder resources), at most the device's `max_qp_init_rd_atom`,
/// at least 1 (the DM agent advertises this with the largest offer).
pub fn rdma_read_depth(offered: u8, max_qp_init_rd_atom: u32) -> u8 {
    u32::from(offered).min(max_qp_init_rd_atom).clamp(1, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_go_to_the_least_loaded_poller() {
        assert_eq!(least_loaded(1, [].into_iter()), 0);
        assert_eq!(least_loaded(2, [].into_iter()), 0);
        // The second channel of a login goes to the other poller.
        assert_eq!(least_loaded(2, [0].into_iter()), 1);
        assert_eq!(least_loaded(4, [0, 1, 3].into_iter()), 2);
        // A poller freed by a logout is refilled first.
        assert_eq!(least_loaded(3, [0, 0, 2, 2].into_iter()), 1);
        assert_eq!(least_loaded(2, [1, 1, 0].into_iter()), 0);
        // Stale indices (never produced) are ignored, not a panic.
        assert_eq!(least_loaded(2, [0, 7].into_iter()), 1);
        assert_eq!(least_loaded(0, [].into_iter()), 0);
    }

    #[test]
    fn ib_listener_address() {
        // docs/device-management.md: advertise rdma_cm_service_id(RDMA_PS_IB, 5555).
        assert_eq!(ib_service_id(5555), 0x0000_0000_013f_15b3);
        assert_eq!(ib_service_id(0x1234), 0x0000_0000_013f_1234);
        let mut g = [0u8; 16];
        g[..2].copy_from_slice(&[0xfe, 0x80]);
        g[8..].copy_from_slice(&0x0002_c903_0001_0001u64.to_be_bytes());
        let a = ib_listen_addr(Gid(g), 5555);
        assert_eq!(a.gid, Gid(g));
        assert_eq!(
            (a.pkey, a.service_id, a.service_id_mask),
            (0xffff, 0x013f_15b3, !0)
        );
    }

    #[test]
    fn srq_is_off_by_default() {
        let o = Options::default();
        assert!(!o.srq && o.srq_size.is_none());
        assert_eq!(o.port, 5555);
    }
}
