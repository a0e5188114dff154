//! Listeners: the wildcard IPv6/IPv4 RDMA/CM listener (re-created when it
//! is lost or its address changes) and one listener in the IB port space
//! on every InfiniBand port of a served device (found by scanning the
//! devices' ports, again after a device came and went).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::mad::agent::{rdma_cm_service_id, RDMA_PS_IB};
use crate::rdma::{self, CmId, CmIdHandle, Context, EventChannel, Gid, IbAddr, LinkLayer, PortSpace};

use super::control::Control;

/// How long the control plane keeps looking for InfiniBand ports to listen
/// on after a device removal.
pub(super) const IB_RESCAN_WINDOW: Duration = Duration::from_secs(120);

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

/// The wildcard RDMA/CM listener on `port`: IPv6, which also takes IPv4
/// connections (unless the system says otherwise), else IPv4 only.
pub(super) fn listen_ip(events: &Arc<EventChannel>, port: u16) -> rdma::Result<CmId> {
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

/// A listener in the IB port space on one InfiniBand port.
#[derive(Debug)]
pub(super) struct IbListener {
    _id: CmId,
    pub device: String,
    pub port: u8,
}

/// Every listener of the target.
#[derive(Debug)]
pub(super) struct Listeners {
    /// The IPv6/IPv4 wildcard listener (None: to be re-created, or shutting
    /// down).
    ip: Option<CmId>,
    ib: HashMap<CmIdHandle, IbListener>,
    /// Devices whose ports were looked at for IB port-space listeners.
    ib_scanned: HashSet<String>,
    /// Look for IB ports on every tick until then.
    ib_rescan_until: Option<Instant>,
}

impl Listeners {
    /// The listeners at start: the wildcard one (IB ones come from
    /// [`Control::scan_ib_ports`]).
    pub fn new(ip: CmId) -> Listeners {
        Listeners {
            ip: Some(ip),
            ib: HashMap::new(),
            ib_scanned: HashSet::new(),
            ib_rescan_until: None,
        }
    }

    /// Whether `h` is the wildcard listener.
    pub fn is_ip(&self, h: CmIdHandle) -> bool {
        self.ip.as_ref().is_some_and(|l| l.handle() == h)
    }

    /// Whether `h` is an IB port-space listener (its logins are IB CM ones).
    pub fn is_ib(&self, h: CmIdHandle) -> bool {
        self.ib.contains_key(&h)
    }

    /// The wildcard listener is gone and must be re-created.
    pub fn ip_lost(&self) -> bool {
        self.ip.is_none()
    }

    pub fn ib_count(&self) -> usize {
        self.ib.len()
    }

    /// Whether IB ports are still being looked for.
    pub fn rescanning(&self) -> bool {
        self.ib_rescan_until.is_some()
    }

    /// Look for IB ports on every tick for [`IB_RESCAN_WINDOW`] from `now`.
    pub fn rescan_from(&mut self, now: Instant) {
        self.ib_rescan_until = Some(now + IB_RESCAN_WINDOW);
    }

    /// Removes the IB listener `h`, if it is one.
    pub fn remove_ib(&mut self, h: CmIdHandle) -> Option<IbListener> {
        self.ib.remove(&h)
    }

    /// Drops the IB listeners on device `name`.
    pub fn drop_device(&mut self, name: &str) {
        self.ib.retain(|_, l| l.device != name);
    }

    /// Closes every listener (shutting down).
    pub fn close(&mut self) {
        self.ip = None;
        self.ib.clear();
    }
}

impl Control {
    /// ADDR_CHANGE: the listener's address moved (e.g. bonding failover):
    /// listen again. Connections keep their path.
    pub(super) fn on_addr_change(&mut self, h: CmIdHandle) {
        if self.listeners.is_ip(h) {
            tracing::warn!("address change on the RDMA/CM listener; listening again");
            self.relisten();
        } else if let Some(l) = self.listeners.ib.remove(&h) {
            tracing::warn!(device = %l.device, port = l.port, "address change on an IB listener; listening again");
            self.listeners.ib_scanned.remove(&l.device);
            self.listeners.drop_device(&l.device);
            self.listeners.rescan_from(Instant::now());
            self.schedule_tick();
        } else {
            tracing::info!(?h, "address change on a connection");
        }
    }

    /// Replaces the wildcard listener (retried every tick until it works).
    pub(super) fn relisten(&mut self) {
        self.listeners.ip = None;
        if self.shutting_down() {
            return;
        }
        match listen_ip(&self.events, self.opts.port) {
            Ok(l) => {
                tracing::info!(port = self.opts.port, "listening again");
                self.listeners.ip = Some(l);
            }
            Err(e) => {
                tracing::warn!(error = %e, port = self.opts.port, "listening failed; retrying");
                self.schedule_tick();
            }
        }
    }

    /// Creates IB port-space listeners on the InfiniBand ports of the served
    /// devices not looked at yet.
    pub(super) fn scan_ib_ports(&mut self, served: &[String]) {
        if self.shutting_down() {
            return;
        }
        for name in served {
            if !self.listeners.ib_scanned.insert(name.clone()) {
                continue;
            }
            let ports = match ib_ports(name) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(device = %name, error = %e, "cannot look at the ports of a device");
                    self.listeners.ib_scanned.remove(name);
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
                        self.listeners.ib.insert(
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

    /// On a tick while rescanning: listeners on the IB ports of the served
    /// devices that have none yet, until the rescan window closes.
    pub(super) fn rescan_ib_ports(&mut self, now: Instant) {
        let Some(until) = self.listeners.ib_rescan_until else {
            return;
        };
        let served = self.served_devices();
        // Forget what is gone, so that a device coming back is scanned.
        self.listeners.ib_scanned.retain(|n| served.contains(n));
        self.scan_ib_ports(&served);
        if now >= until {
            self.listeners.ib_rescan_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
