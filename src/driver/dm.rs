//! The device-management agent of the running target: one DevMgt (class
//! 0x06, version 1) responder per port of every device srptd serves, on the
//! control-plane runtime.
//!
//! The protocol is [`crate::mad::DmAgent`] (sans-I/O); this module opens
//! the umad ports, registers the class, moves MADs between the ports and
//! the agents (tokio `AsyncFd` on the umad fd, no allocation per MAD) and
//! builds each agent's [`DmConfig`] from the live configuration
//! ([`DmSettings`]), so that what it advertises is what logins get.
//!
//! Starting never fails: a port where the class cannot be registered (no
//! umad device, or `EPERM` because the kernel's ib_srpt or another srptd
//! owns it) is logged and skipped, and the target runs without it. See
//! `docs/device-management.md`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Options;
use crate::mad::agent::{DmAgent, DmConfig};
use crate::proto::TargetPortId;
use crate::rdma::umad::{Agent, LinkLayer, PortInfo, UmadPort};
use crate::rdma::{Context, DeviceAttr};
use crate::scsi::Target;
use crate::wire::mad::{DmMad, Method, MgmtClass, MAD_LEN};

/// The target-wide values the agents advertise, taken from the
/// configuration logins are negotiated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmSettings {
    /// `id_ext` of the `ready` line: published as service name
    /// `SRP.T10:<id_ext>`.
    pub id_ext: u64,
    /// `ioc_guid` of the `ready` line: the IOControllerProfile GUID.
    pub ioc_guid: u64,
    /// ServiceID of the SRP service entry.
    pub service_id: u64,
    /// Credits every login is granted (`LoginLimits::queue_depth`):
    /// SendMessageQueueDepth.
    pub queue_depth: u32,
    /// Largest it_iu_len a login is granted (`LoginLimits::max_it_iu_len`):
    /// SendMessageSize, which srp_daemon hands to the initiator as
    /// `max_it_iu_size`.
    pub max_it_iu_len: u32,
    /// Largest data transfer of one command (`ChannelConfig::max_transfer`,
    /// the target's `max_transfer_bytes`): RDMATransferSize.
    pub max_transfer: u32,
    /// The RDMA/CM port logins go to (only for the add_target strings
    /// logged at start).
    pub cm_port: u16,
    /// How channels on a software device run (their RDMA READ depth bound
    /// is the one IOControllerProfile advertises).
    pub software: super::SoftwareDevice,
}

impl DmSettings {
    /// The settings of a target started with `opts`, whose commands may
    /// move up to `max_transfer` bytes, with identity `port_id`.
    ///
    /// ServiceID: the IB CM service ID an `AF_IB` RDMA/CM listener in
    /// `RDMA_PS_IB` on `opts.port` has (`0x013f15b3` for 5555), which
    /// passes ib_srp's bare SRP_LOGIN_REQ through; an `AF_INET` listener's
    /// ID (`RDMA_PS_TCP`) would reject it. See docs/device-management.md.
    pub fn new(opts: &Options, max_transfer: u32, port_id: TargetPortId) -> Self {
        Self {
            id_ext: port_id.id_ext,
            ioc_guid: port_id.ioc_guid,
            service_id: super::ib_service_id(opts.port),
            queue_depth: opts.limits.queue_depth,
            max_it_iu_len: opts.limits.max_it_iu_len,
            max_transfer,
            cm_port: opts.port,
            software: opts.software,
        }
    }
}

/// What a device contributes to its ports' profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceFacts {
    /// `ibv_device_attr::vendor_id` (24-bit IEEE OUI).
    pub vendor_id: u32,
    /// `vendor_part_id`.
    pub vendor_part_id: u32,
    /// `hw_ver`.
    pub hw_ver: u32,
    /// `max_qp_init_rd_atom`: RDMA READs a QP may have outstanding as
    /// requester, the bound of every channel's RDMA READ depth.
    pub max_qp_init_rd_atom: u32,
}

impl DeviceFacts {
    pub fn from_attr(a: &DeviceAttr, soft: &super::SoftwareDevice) -> Self {
        Self {
            vendor_id: a.vendor_id,
            vendor_part_id: a.vendor_part_id,
            hw_ver: a.hw_ver,
            // As logins bound it.
            max_qp_init_rd_atom: super::login::QpLimits::of(a, soft).max_qp_init_rd_atom,
        }
    }
}

/// The most RDMA READs a channel on a device with `max_qp_init_rd_atom`
/// gets: what the connect handler grants to the largest offer.
pub fn max_rdma_read_depth(max_qp_init_rd_atom: u32) -> u8 {
    super::rdma_read_depth(u8::MAX, max_qp_init_rd_atom)
}

/// The agent configuration for a port of device `d`. Vendor, device and
/// version IDs are the HCA's, as ib_srpt reports them; the ChangeID is
/// derived from the advertised content (see [`content_change_id`]).
pub fn dm_config(s: &DmSettings, d: &DeviceFacts) -> DmConfig {
    let mut c = DmConfig {
        ioc_guid: s.ioc_guid,
        id_ext: s.id_ext,
        vendor_id: d.vendor_id & 0xff_ffff,
        device_id: d.vendor_part_id,
        // The field is 16 bits; keep the low ones, as ib_srpt does.
        device_version: d.hw_ver as u16,
        subsystem_vendor_id: d.vendor_id & 0xff_ffff,
        subsystem_id: 0,
        service_id: s.service_id,
        send_queue_depth: u16::try_from(s.queue_depth).unwrap_or(u16::MAX),
        rdma_read_depth: max_rdma_read_depth(d.max_qp_init_rd_atom),
        send_size: s.max_it_iu_len,
        rdma_size: s.max_transfer,
        ..DmConfig::for_node_guid(s.ioc_guid)
    };
    c.change_id = content_change_id(&c);
    c
}

/// The initial IOUnitInfo ChangeID: a 16-bit hash (FNV-1a) of everything
/// the agent advertises, never 0. A target restarted with another
/// configuration thus shows another ChangeID to managers that cache
/// profiles (IBTA 16.3.3.3), as a running one does after
/// [`DmService::update`].
pub fn content_change_id(c: &DmConfig) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    eat(&c.ioc_guid.to_be_bytes());
    eat(&c.id_ext.to_be_bytes());
    eat(&c.vendor_id.to_be_bytes());
    eat(&c.device_id.to_be_bytes());
    eat(&c.device_version.to_be_bytes());
    eat(&c.subsystem_vendor_id.to_be_bytes());
    eat(&c.subsystem_id.to_be_bytes());
    eat(&c.service_id.to_be_bytes());
    eat(&c.send_queue_depth.to_be_bytes());
    eat(&[c.rdma_read_depth]);
    eat(&c.send_size.to_be_bytes());
    eat(&c.rdma_size.to_be_bytes());
    eat(c.id_string.as_bytes());
    match (h ^ (h >> 16)) as u16 {
        0 => 1,
        n => n,
    }
}

/// The agent of one port and the device facts its configuration is built
/// from: the part of a port's service that does no I/O.
#[derive(Debug)]
pub struct PortState {
    agent: DmAgent,
    facts: DeviceFacts,
}

impl PortState {
    pub fn new(s: &DmSettings, facts: DeviceFacts) -> Self {
        Self {
            agent: DmAgent::new(dm_config(s, &facts)),
            facts,
        }
    }

    /// Apply new settings; returns whether the advertised configuration
    /// changed (the ChangeID then moved).
    pub fn apply(&mut self, s: &DmSettings) -> bool {
        self.agent.reconfigure(dm_config(s, &self.facts))
    }

    pub fn agent(&self) -> &DmAgent {
        &self.agent
    }

    pub fn agent_mut(&mut self) -> &mut DmAgent {
        &mut self.agent
    }
}

/// MADs handled per readiness event before yielding to the rest of the
/// control plane.
const BATCH: usize = 32;
/// Consecutive receive errors after which a port's agent gives up.
const MAX_RECV_ERRORS: u32 = 64;

/// How often the service looks whether ports whose agent ended (their
/// device went away) can be served again.
const RESTART_CHECK: Duration = Duration::from_secs(2);

/// The running device-management agents; [`DmService::stop`] unregisters
/// them. A port's agent ends when its device goes away (the kernel marks the
/// umad file dead); it is started again when a device of that name is back.
#[derive(Debug)]
pub struct DmService {
    settings: watch::Sender<DmSettings>,
    supervisor: Option<JoinHandle<()>>,
}

/// One port's agent.
#[derive(Debug)]
struct PortTask {
    dev: String,
    port: u8,
    task: Option<JoinHandle<()>>,
    /// Starting it again failed since it ended (logged once).
    restart_failed: bool,
}

impl DmService {
    /// Start answering DevMgt MADs on every port of `devices` for the
    /// target run with `opts` (`opts.dm == false`: nothing is started).
    /// Must be called inside the tokio runtime. Never fails: ports that
    /// cannot be served are logged.
    pub fn for_target(opts: &Options, target: &Target, port_id: TargetPortId, devices: &[String]) -> Self {
        let settings = DmSettings::new(opts, target.max_transfer_bytes(), port_id);
        if !opts.dm {
            tracing::info!("device management disabled (--no-dm): DevMgt MADs are not answered");
            return Self::idle(settings);
        }
        Self::start(settings, devices)
    }

    fn idle(settings: DmSettings) -> Self {
        Self {
            settings: watch::Sender::new(settings),
            supervisor: None,
        }
    }

    /// Start an agent on every port of every device in `devices`.
    pub fn start(settings: DmSettings, devices: &[String]) -> Self {
        let mut svc = Self::idle(settings);
        let rx = svc.settings.subscribe();
        let mut ports = Vec::new();
        for dev in devices {
            let attr = match Context::open(dev).and_then(|c| c.query_device()) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(device = %dev, error = %e, "device management disabled on this device: cannot query it");
                    continue;
                }
            };
            let facts = DeviceFacts::from_attr(&attr, &rx.borrow().software);
            for port in 1..=attr.phys_port_cnt {
                match start_port(&rx, dev, port, facts) {
                    Ok(task) => ports.push(PortTask {
                        dev: dev.clone(),
                        port,
                        task: Some(task),
                        restart_failed: false,
                    }),
                    Err(e) => tracing::warn!(
                        device = %dev,
                        port,
                        "device management disabled on this port (the target runs without it): {e}"
                    ),
                }
            }
        }
        if !ports.is_empty() {
            svc.supervisor = Some(tokio::spawn(supervise(rx, ports)));
        }
        svc
    }

    /// The settings advertised now.
    pub fn settings(&self) -> DmSettings {
        self.settings.borrow().clone()
    }

    /// Advertise new settings (e.g. after a configuration change): every
    /// port whose advertised profile changes moves its ChangeID.
    pub fn update(&self, settings: DmSettings) {
        self.settings.send_replace(settings);
    }

    /// Stop answering and unregister every agent.
    pub async fn stop(self) {
        let Self { settings, supervisor } = self;
        // Dropping the sender ends every port's loop and the supervisor.
        drop(settings);
        if let Some(s) = supervisor {
            if let Err(e) = s.await {
                tracing::error!(error = %e, "device management task failed");
            }
        }
    }
}

/// Starts the agent of one port: opens its umad file, registers the DevMgt
/// class and spawns its loop.
fn start_port(
    rx: &watch::Receiver<DmSettings>,
    dev: &str,
    port: u8,
    facts: DeviceFacts,
) -> io::Result<JoinHandle<()>> {
    let umad = UmadPort::open(dev, port)?;
    let agent = umad
        .register_agent(
            MgmtClass::DEVICE_MGMT.0,
            DmMad::CLASS_VERSION,
            &[Method::GET.0, Method::SET.0],
        )
        .map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                io::Error::new(
                    e.kind(),
                    "the DevMgt class (0x06 v1, Get/Set) is already registered on this port by another agent: \
                     the kernel's ib_srpt, or another srptd",
                )
            } else {
                e
            }
        })?;
    let info = umad.port_info();
    let rx = rx.clone();
    let state = PortState::new(&rx.borrow(), facts);
    log_started(dev, port, &state, &rx.borrow(), info.as_ref().ok());
    let afd = umad.to_async()?;
    Ok(tokio::spawn(serve(afd, agent, state, rx)))
}

/// Watches the port agents: one whose loop ended (its device went away) is
/// started again once a device of that name is present, checked every
/// [`RESTART_CHECK`] (and only while some agent has ended). Ends, after
/// every agent, when the service is stopped.
async fn supervise(mut rx: watch::Receiver<DmSettings>, mut ports: Vec<PortTask>) {
    let mut check = tokio::time::interval(RESTART_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = check.tick() => restart_ended(&rx, &mut ports).await,
        }
    }
    for p in &mut ports {
        if let Some(t) = p.task.take() {
            if let Err(e) = t.await {
                tracing::error!(device = %p.dev, port = p.port, error = %e, "device management task failed");
            }
        }
    }
}

async fn restart_ended(rx: &watch::Receiver<DmSettings>, ports: &mut [PortTask]) {
    let mut ended = false;
    for p in ports.iter_mut() {
        if let Some(t) = p.task.take_if(|t| t.is_finished()) {
            if let Err(e) = t.await {
                tracing::error!(device = %p.dev, port = p.port, error = %e, "device management task failed");
            }
        }
        ended |= p.task.is_none();
    }
    if !ended {
        return;
    }
    let present = crate::rdma::devices().unwrap_or_default();
    for p in ports.iter_mut().filter(|p| p.task.is_none()) {
        if !present.iter().any(|d| d.name == p.dev) {
            continue;
        }
        let started = Context::open(&p.dev)
            .and_then(|c| c.query_device())
            .map_err(io::Error::from)
            .and_then(|attr| {
                let facts = DeviceFacts::from_attr(&attr, &rx.borrow().software);
                start_port(rx, &p.dev, p.port, facts)
            });
        match started {
            Ok(t) => {
                tracing::info!(device = %p.dev, port = p.port, "device management: the device is back; serving it again");
                p.task = Some(t);
                p.restart_failed = false;
            }
            Err(e) if !p.restart_failed => {
                p.restart_failed = true;
                tracing::warn!(device = %p.dev, port = p.port, error = %e, "device management: cannot serve the port again yet; retrying");
            }
            Err(e) => {
                tracing::debug!(device = %p.dev, port = p.port, error = %e, "device management: still cannot serve the port")
            }
        }
    }
}

fn log_started(dev: &str, port: u8, st: &PortState, s: &DmSettings, info: Option<&PortInfo>) {
    let c = st.agent().config();
    tracing::info!(
        device = %dev,
        port,
        ioc_guid = format_args!("{:016x}", c.ioc_guid),
        service = format_args!("SRP.T10:{:016x}", c.id_ext),
        service_id = format_args!("{:016x}", c.service_id),
        send_size = c.send_size,
        send_queue_depth = c.send_queue_depth,
        rdma_read_depth = c.rdma_read_depth,
        rdma_size = c.rdma_size,
        change_id = c.change_id,
        "answering device-management MADs"
    );
    let Some(info) = info else { return };
    let ids = format!("id_ext={:016x},ioc_guid={:016x}", s.id_ext, s.ioc_guid);
    if info.link_layer == LinkLayer::InfiniBand {
        let dgid = crate::wire::hex(&info.gid(0).unwrap_or_default());
        let pkey = info.pkeys.first().copied().unwrap_or(0xffff);
        tracing::info!(
            device = %dev,
            port,
            "InfiniBand (IB CM) add_target: {ids},dgid={dgid},pkey={pkey:04x},service_id={:016x}",
            s.service_id
        );
        if !info.is_device_mgmt_supported() {
            tracing::info!(
                device = %dev,
                port,
                "srp_daemon will not query this port: its IsDeviceManagementSupported capability bit is not set, \
                 and only a kernel module can set it (docs/device-management.md)"
            );
        }
    } else {
        for g in &info.gids {
            if let Some(ip) = ipv4_mapped(&g.gid) {
                tracing::info!(
                    device = %dev,
                    port,
                    "RoCE (RDMA/CM) add_target: {ids},dest={ip}:{}",
                    s.cm_port
                );
            }
        }
    }
}

/// The IPv4 address of a RoCE v2 GID that is IPv4-mapped (`::ffff:a.b.c.d`).
fn ipv4_mapped(gid: &[u8; 16]) -> Option<Ipv4Addr> {
    Ipv6Addr::from(*gid).to_ipv4_mapped()
}

/// One port's loop: answer requests as they arrive, apply new settings,
/// end when the service is stopped.
async fn serve(
    afd: AsyncFd<UmadPort>,
    mut agent: Agent,
    mut st: PortState,
    mut settings: watch::Receiver<DmSettings>,
) {
    let port = afd.get_ref();
    let (dev, pnum) = (port.device(), port.port());
    let mut out = [0u8; MAD_LEN];
    let mut errors = 0u32;
    'serve: loop {
        tokio::select! {
            changed = settings.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = settings.borrow_and_update().clone();
                if st.apply(&s) {
                    let c = st.agent().config();
                    tracing::info!(
                        device = %dev,
                        port = pnum,
                        change_id = c.change_id,
                        send_size = c.send_size,
                        send_queue_depth = c.send_queue_depth,
                        rdma_size = c.rdma_size,
                        "device management: configuration changed"
                    );
                }
            }
            ready = afd.ready(Interest::READABLE | Interest::ERROR) => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(device = %dev, port = pnum, error = %e, "device management: polling the umad port failed; stopped on this port");
                        break;
                    }
                };
                // The kernel marks a port's umad files dead (EPOLLERR, reads
                // fail with EIO) when its device goes away, and unregisters
                // their agents itself.
                if guard.ready().is_error() {
                    tracing::info!(device = %dev, port = pnum, "device management: the device went away");
                    agent.forget();
                    break;
                }
                for _ in 0..BATCH {
                    match port.recv(None) {
                        Ok(None) => {
                            guard.clear_ready();
                            break;
                        }
                        Ok(Some(m)) => {
                            errors = 0;
                            // Only requests for our agent; a non-zero status
                            // is a send of ours given back by the kernel.
                            if m.agent_id != agent.id() || m.status != 0 {
                                tracing::debug!(device = %dev, port = pnum, mad = ?m, "device management: ignoring MAD");
                                continue;
                            }
                            if !st.agent_mut().handle_into(&m.mad[..m.len], &mut out) {
                                continue;
                            }
                            if let Err(e) = port.send(&agent, &m.addr.reply(), &out, 0, 0) {
                                tracing::warn!(device = %dev, port = pnum, error = %e, to = ?m.addr, "device management: sending an answer failed");
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                tracing::warn!(device = %dev, port = pnum, error = %e, "device management: receiving a MAD failed");
                            }
                            if errors >= MAX_RECV_ERRORS {
                                tracing::error!(device = %dev, port = pnum, error = %e, "device management: receiving keeps failing; stopped on this port");
                                break 'serve;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
    tracing::info!(device = %dev, port = pnum, stats = ?st.agent().stats(), "device management stopped");
    // Dropping `agent` unregisters it; `afd` deregisters the fd.
    drop(agent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mad::{AttributeId, IoControllerProfile, IoUnitInfo};

    const GUID: u64 = 0x0000_00ff_fe00_7701;

    fn settings() -> DmSettings {
        let opts = Options {
            limits: crate::proto::LoginLimits {
                queue_depth: 96,
                max_it_iu_len: 4164,
                ..Default::default()
            },
            ..Options::default()
        };
        DmSettings::new(
            &opts,
            512 << 10,
            TargetPortId {
                id_ext: GUID,
                ioc_guid: GUID,
            },
        )
    }

    fn rxe() -> DeviceFacts {
        DeviceFacts {
            vendor_id: 0xff_ffff,
            vendor_part_id: 0,
            hw_ver: 0,
            max_qp_init_rd_atom: 128,
        }
    }

    fn get(st: &mut PortState, attr: AttributeId, attr_mod: u32) -> DmMad {
        let req = DmMad::request(Method::GET, 7, attr, attr_mod).to_bytes();
        let rsp = st.agent_mut().handle(&req).expect("answered");
        DmMad::parse(&rsp).unwrap()
    }

    #[test]
    fn profile_from_live_settings() {
        let s = settings();
        assert_eq!(s.service_id, 0x0000_0000_013f_15b3);
        let mut st = PortState::new(&s, rxe());
        let p =
            IoControllerProfile::parse(&get(&mut st, AttributeId::IO_CONTROLLER_PROFILE, 1).data).unwrap();
        assert_eq!(p.guid, GUID);
        assert_eq!(p.send_queue_depth, 96);
        assert_eq!(p.send_size, 4164);
        assert_eq!(p.rdma_size, 512 << 10);
        assert_eq!(p.rdma_read_depth, 128);
        assert_eq!(p.vendor_id, 0xff_ffff);
        assert_eq!(p.subsystem_vendor_id, 0xff_ffff);
        let r = get(&mut st, AttributeId::SERVICE_ENTRIES, 0x0001_0000);
        assert_eq!(&r.data[..24], b"SRP.T10:000000fffe007701");
        assert_eq!(r.data[40..48], 0x013f_15b3u64.to_be_bytes());
    }

    #[test]
    fn read_depth_follows_device_limit() {
        assert_eq!(max_rdma_read_depth(0), 1);
        assert_eq!(max_rdma_read_depth(4), 4);
        assert_eq!(max_rdma_read_depth(16), 16);
        assert_eq!(max_rdma_read_depth(1 << 20), 255);
    }

    #[test]
    fn queue_depth_saturates() {
        let s = DmSettings {
            queue_depth: 1 << 20,
            ..settings()
        };
        assert_eq!(dm_config(&s, &rxe()).send_queue_depth, u16::MAX);
    }

    #[test]
    fn change_id_from_content() {
        let s = settings();
        let a = dm_config(&s, &rxe());
        assert_ne!(a.change_id, 0);
        assert_eq!(a.change_id, dm_config(&s, &rxe()).change_id, "deterministic");
        let b = dm_config(
            &DmSettings {
                queue_depth: 95,
                ..s.clone()
            },
            &rxe(),
        );
        assert_ne!(a.change_id, b.change_id);
    }

    #[test]
    fn update_moves_change_id() {
        let s = settings();
        let mut st = PortState::new(&s, rxe());
        let iou =
            |st: &mut PortState| IoUnitInfo::parse(&get(st, AttributeId::IO_UNIT_INFO, 0).data).unwrap();
        let first = iou(&mut st).change_id;
        assert_eq!(first, dm_config(&s, &rxe()).change_id);
        // Same settings: nothing moves.
        assert!(!st.apply(&s));
        assert_eq!(iou(&mut st).change_id, first);
        // New queue depth: the profile and the ChangeID change.
        let s2 = DmSettings {
            queue_depth: 32,
            max_it_iu_len: 8260,
            ..s
        };
        assert!(st.apply(&s2));
        let second = iou(&mut st).change_id;
        assert_ne!(second, first);
        assert_eq!(second, first.wrapping_add(1).max(1));
        let p =
            IoControllerProfile::parse(&get(&mut st, AttributeId::IO_CONTROLLER_PROFILE, 1).data).unwrap();
        assert_eq!((p.send_queue_depth, p.send_size), (32, 8260));
        assert!(!st.apply(&s2));
        assert_eq!(iou(&mut st).change_id, second);
    }

    #[test]
    fn mapped_ipv4() {
        let mut g = [0u8; 16];
        g[10] = 0xff;
        g[11] = 0xff;
        g[12..].copy_from_slice(&[169, 254, 77, 1]);
        assert_eq!(ipv4_mapped(&g), Some(Ipv4Addr::new(169, 254, 77, 1)));
        g[0] = 0xfe;
        assert_eq!(ipv4_mapped(&g), None);
    }
}
