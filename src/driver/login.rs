//! Login acceptance: an RDMA/CM CONNECT_REQUEST carrying an SRP_LOGIN_REQ
//! becomes a channel on a poller, or an SRP_LOGIN_REJ.
//!
//! [`Control::on_connect_request`] is a pipeline of named steps, each with
//! one input and one output; a step that refuses the login returns a
//! [`Refusal`] (the SRP_LOGIN_REJ and the reason logged):
//!
//! 1. [`parse_login`]: the request in the private data;
//! 2. [`Control::login_device`]: the device it arrived on, opened and served;
//!    [`Control::target_port`]: its RDMA port as an SCSI target port (ALUA);
//! 3. [`Control::negotiate`]: SRP negotiation ([`crate::proto::negotiate`]);
//! 4. [`size_channel`]: RDMA READ depths and queue sizes from the offer and
//!    the device's limits (and [`srq_overcommit`], a warning only);
//! 5. [`Control::build_channel`]: queue pair, CQ and memory regions, receives
//!    posted;
//! 6. [`accept_param`] and `rdma_accept`;
//! 7. SINGLE RDMA CHANNEL: the nexus's other channels end;
//! 8. the channel is counted, logged and handed to its poller.
//!
//! The decisions (steps 1, 2's "served", 4, 6's parameters) are pure
//! functions tested below without hardware.

use super::channel::ChannelKey;
use std::sync::Arc;

use crate::mem::DmaBuf;
use crate::proto::{negotiate, Accepted, Channel, ChannelConfig, ChannelMemory, LoginLimits, MultiChannel};
use crate::rdma::{
    AccessFlags, CmEvent, CmId, CompletionQueue, ConnParam, DeviceAttr, MemoryRegion, QpCaps, QpInit,
    QueuePair, ReceivedConnParam,
};
use crate::scsi::{InitiatorPortId, TargetPort};
use crate::wire::{LoginReject, LoginRequest, RejectReason, Tag, BUF_FMT_DIRECT, BUF_FMT_INDIRECT};

use super::channel::{ChannelDriver, RecvSide};
use super::conns::{Conn, NexusId};
use super::control::Control;
use super::device::Device;
use super::poller::PollerMsg;
use super::StartError;

/// A login refused: the SRP_LOGIN_REJ to send and why (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub reject: LoginReject,
    pub why: &'static str,
}

impl Refusal {
    fn new(tag: Tag, reason: RejectReason, why: &'static str) -> Refusal {
        Refusal {
            reject: LoginReject {
                tag,
                reason,
                buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            },
            why,
        }
    }
}

/// What the connect request offers for RDMA READs. RDMA/CM reports the
/// request's values from our side: the initiator's responder resources
/// arrive as our initiator depth (RDMA READs we may have outstanding; the
/// Linux initiator offers 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Offer {
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

/// Step 1: the SRP_LOGIN_REQ of a connect request and its RDMA READ offer.
/// SRP over RDMA/CM: the login request is the 56-byte private data; through
/// an IB port-space listener (`ib_cm`, IB CM logins) it is the 64-byte IU
/// form, as the IB CM REQ carries it. A login we cannot even parse is
/// answered with tag 0.
pub(super) fn parse_login(
    conn: Option<&ReceivedConnParam>,
    ib_cm: bool,
) -> Result<(LoginRequest, Offer), Refusal> {
    let unable = |why| Refusal::new(Tag(0), RejectReason::UNABLE_ESTABLISH_CHANNEL, why);
    let Some(conn) = conn else {
        return Err(unable("no private data"));
    };
    let parsed = if ib_cm {
        LoginRequest::parse(&conn.private_data)
    } else {
        LoginRequest::parse_rdma_cm(&conn.private_data)
    };
    let req = parsed.map_err(|e| {
        tracing::debug!(error = %e, "bad SRP_LOGIN_REQ");
        unable("malformed SRP_LOGIN_REQ")
    })?;
    let offer = Offer {
        responder_resources: conn.responder_resources,
        initiator_depth: conn.initiator_depth,
    };
    Ok((req, offer))
}

/// Whether device `name` is served when `--device` named `wanted` (empty:
/// every device).
pub(super) fn is_served(wanted: &[String], name: &str) -> bool {
    wanted.is_empty() || wanted.iter().any(|d| d == name)
}

/// RDMA READs a channel may have outstanding: what the initiator offers
/// (its responder resources), at most the device's `max_qp_init_rd_atom`,
/// at least 1 (the DM agent advertises this with the largest offer).
pub fn rdma_read_depth(offered: u8, max_qp_init_rd_atom: u32) -> u8 {
    u32::from(offered).min(max_qp_init_rd_atom).clamp(1, 255) as u8
}

/// The device limits a channel is sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QpLimits {
    pub max_qp_wr: u32,
    pub max_qp_rd_atom: u32,
    pub max_qp_init_rd_atom: u32,
}

impl QpLimits {
    /// The limits of device `a`; on a software device (rxe, siw) a channel
    /// keeps at most `soft.read_depth` RDMA READs in flight.
    pub fn of(a: &DeviceAttr, soft: &SoftwareDevice) -> QpLimits {
        let init = if a.is_software() {
            soft.read_cap(a.max_qp_init_rd_atom)
        } else {
            a.max_qp_init_rd_atom
        };
        QpLimits {
            max_qp_wr: a.max_qp_wr,
            max_qp_rd_atom: a.max_qp_rd_atom,
            max_qp_init_rd_atom: init,
        }
    }
}

/// RDMA READs a channel on a software RDMA device has outstanding at most.
/// rdma_rxe (Linux 6.1) generates an RDMA READ's whole response stream in
/// one softirq run of the initiator's responder; with several READs queued
/// those runs last long enough, under emulation, to hold an SRP_CMD of the
/// Linux initiator unacknowledged when its retransmit timer fires, and the
/// retry makes rxe replay a memory registration and fail the queue pair
/// (a 10 s stall; docs/stalls.md). One READ at a time bounds each run by
/// one command's data.
pub const SOFTWARE_READ_DEPTH: u32 = 1;

/// How channels on a software RDMA device (rxe, siw) run: two rules that
/// keep soft-RoCE from retrying an SRP_CMD (docs/stalls.md). One READ in
/// flight is the default; one poller per device, which costs far more
/// throughput (docs/performance.md) and showed no extra benefit beside it,
/// is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftwareDevice {
    /// RDMA READs a channel keeps in flight at most; 0: the device's limit
    /// (`data_path.software_read_depth`).
    pub read_depth: u32,
    /// All channels of the device on one poller
    /// (`data_path.software_one_poller`; see `Control::poller_for`).
    pub one_poller: bool,
}

impl Default for SoftwareDevice {
    fn default() -> Self {
        SoftwareDevice {
            read_depth: SOFTWARE_READ_DEPTH,
            one_poller: false,
        }
    }
}

impl SoftwareDevice {
    /// RDMA READ depth bound of a software device whose own bound is
    /// `max_qp_init_rd_atom`.
    pub fn read_cap(&self, max_qp_init_rd_atom: u32) -> u32 {
        match self.read_depth {
            0 => max_qp_init_rd_atom,
            d => max_qp_init_rd_atom.min(d),
        }
    }
}

/// RDMA READ depths of a connection, as `rdma_accept` and the queue pair's
/// RTR/RTS transitions take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadDepths {
    /// RDMA READs the initiator may have outstanding against us.
    pub responder_resources: u8,
    /// RDMA READs we may have outstanding (the channel's READ depth).
    pub initiator_depth: u8,
}

/// The settings a channel's target-wide part comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChannelDefaults {
    pub limits: LoginLimits,
    pub pool_size: usize,
    pub max_transfer: u32,
}

/// Step 4: the channel's configuration and READ depths for an accepted
/// login: the READ depth from the offer within the device's limits, the
/// send queue within `max_qp_wr`. (The shared receive ring, in SRQ mode,
/// is the device's: the caller adds it.)
pub(super) fn size_channel(
    acc: &Accepted,
    offer: Offer,
    dev: QpLimits,
    d: &ChannelDefaults,
) -> (ChannelConfig, ReadDepths) {
    let init_depth = rdma_read_depth(offer.initiator_depth, dev.max_qp_init_rd_atom);
    let resp_res = (offer.responder_resources as u32)
        .min(dev.max_qp_rd_atom)
        .min(255) as u8;
    let mut cfg = ChannelConfig::new(acc.it_iu_len, acc.imm_data_offset, d.limits.queue_depth);
    cfg.pool_size = d.pool_size;
    cfg.max_transfer = d.max_transfer;
    cfg.max_ti_iu_len = d.limits.max_ti_iu_len;
    cfg.rdma_read_depth = init_depth as u32;
    cfg.sq_depth = cfg.sq_depth.min(dev.max_qp_wr.saturating_sub(1)).max(8);
    let depths = ReadDepths {
        responder_resources: resp_res,
        initiator_depth: init_depth,
    };
    (cfg, depths)
}

/// Whether a channel needing `need` bytes fits beside `in_use` within the
/// channel memory budget `limit`.
pub(super) fn fits_memory(in_use: u64, need: u64, limit: u64) -> bool {
    in_use.saturating_add(need) <= limit
}

/// Credits of `channels` channels of `recv_slots` each, if they exceed the
/// `srq_slots` of a shared receive queue. Credits are per channel; the
/// slots are shared: beyond this the initiators may meet receiver-not-ready
/// retries under load.
pub(super) fn srq_overcommit(channels: u64, recv_slots: u32, srq_slots: u32) -> Option<u64> {
    let credits = channels * u64::from(recv_slots);
    (credits > u64::from(srq_slots)).then_some(credits)
}

/// Step 6: the `rdma_accept` parameters: the SRP_LOGIN_RSP `rsp` as
/// private data, the READ depths, RNR and transport retries at the most.
pub(super) fn accept_param(rsp: &[u8], depths: ReadDepths, srq: bool, qp_num: u32) -> ConnParam<'_> {
    ConnParam {
        private_data: rsp,
        responder_resources: depths.responder_resources,
        initiator_depth: depths.initiator_depth,
        flow_control: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        srq,
        qp_num,
    }
}

/// What [`Control::build_channel`] builds a channel from.
pub(super) struct ChannelParams<'a> {
    /// The channel's key (also the CQ's context).
    pub key: ChannelKey,
    /// Index of the poller that will run it.
    pub poller: usize,
    pub cfg: ChannelConfig,
    pub depths: ReadDepths,
    pub device: &'a Arc<Device>,
    pub initiator: &'a InitiatorPortId,
    /// The SCSI target port: the RDMA port the login came through.
    pub port: Arc<TargetPort>,
    /// The connection's id, whose queue pair is readied.
    pub id: &'a CmId,
}

/// A login past steps 1-5: a channel ready to be accepted.
struct Prepared {
    req: LoginRequest,
    acc: Accepted,
    nexus: NexusId,
    /// Channels the nexus had before.
    existing: u32,
    device: Arc<Device>,
    key: ChannelKey,
    poller: usize,
    depths: ReadDepths,
    /// Bytes of the channel's memory.
    memory: u64,
    driver: ChannelDriver,
}

impl Control {
    /// CONNECT_REQUEST: accepts the login (a channel on the least loaded
    /// poller) or rejects it.
    pub(super) fn on_connect_request(&mut self, id: CmId, ev: &CmEvent) {
        let ib_cm = ev.listen_id.is_some_and(|l| self.listeners.is_ib(l));
        match self.prepare_login(&id, ev.conn.as_ref(), ib_cm) {
            Ok(p) => self.accept_login(id, p, ib_cm),
            Err(r) => self.reject(id, r),
        }
    }

    /// Steps 1-5.
    fn prepare_login(
        &mut self,
        id: &CmId,
        conn: Option<&ReceivedConnParam>,
        ib_cm: bool,
    ) -> Result<Prepared, Refusal> {
        let (req, offer) = parse_login(conn, ib_cm)?;
        let device = self.login_device(id, &req)?;
        let port = self.target_port(id, &device, &req)?;
        let nexus = (req.initiator_port_id, req.target_port_id, port.relative_id());
        let existing = self.conns.nexus_channels(&nexus).len() as u32;
        let peer = if ib_cm {
            None
        } else {
            id.peer_addr().map(|a| a.ip())
        };
        let acc = self.negotiate(&req, existing, peer)?;
        let key = self.conns.new_key();
        let poller = self.poller_for(&device);
        let attr = device.attr();
        tracing::debug!(
            responder_resources = offer.responder_resources,
            initiator_depth = offer.initiator_depth,
            max_qp_init_rd_atom = attr.max_qp_init_rd_atom,
            max_qp_rd_atom = attr.max_qp_rd_atom,
            "connect request parameters"
        );
        let defaults = ChannelDefaults {
            limits: self.opts.limits,
            pool_size: self.opts.pool_size,
            max_transfer: self.target.max_transfer_bytes(),
        };
        let limits = QpLimits::of(attr, &self.opts.software);
        let (mut cfg, depths) = size_channel(&acc, offer, limits, &defaults);
        if let Some(srq) = device.srq() {
            cfg.shared_recv = Some(srq.shared_recv());
            let on_device = self.conns.on_device(device.name()).count() as u64 + 1;
            if let Some(credits) = srq_overcommit(on_device, cfg.recv_slots(), srq.slots()) {
                tracing::warn!(
                    device = device.name(),
                    channels = on_device,
                    credits,
                    srq_slots = srq.slots(),
                    "channels' credits exceed the shared receive queue (see --srq-size)"
                );
            }
        }
        // SRP r16a 6.4: a login the target cannot afford is rejected with
        // INSUFFICIENT RESOURCES, not accepted and paid for with the host.
        let memory = cfg.memory_layout().total();
        if !fits_memory(
            self.conns.memory(),
            memory,
            self.opts.channel_memory.unwrap_or(u64::MAX),
        ) {
            tracing::warn!(
                in_use = self.conns.memory(),
                need = memory,
                limit = self.opts.channel_memory.unwrap_or(u64::MAX),
                channels = self.conns.len(),
                "channel memory limit reached (--max-channel-memory)"
            );
            return Err(Refusal::new(
                req.tag,
                RejectReason::INSUFFICIENT_RESOURCES,
                "channel memory limit",
            ));
        }
        let built = self.build_channel(ChannelParams {
            key,
            poller,
            cfg,
            depths,
            device: &device,
            initiator: &req.initiator_port_id,
            port,
            id,
        });
        let driver = built.map_err(|e| {
            tracing::error!(error = %e, "creating channel resources failed");
            Refusal::new(req.tag, RejectReason::INSUFFICIENT_RESOURCES, "resources")
        })?;
        Ok(Prepared {
            req,
            acc,
            nexus,
            existing,
            device,
            key,
            poller,
            depths,
            memory,
            driver,
        })
    }

    /// Step 2: the device the login arrived on, opened (on its first
    /// login), and served.
    fn login_device(&mut self, id: &CmId, req: &LoginRequest) -> Result<Arc<Device>, Refusal> {
        let device = self.device(id).map_err(|e| {
            tracing::error!(error = %e, "opening the device of a connection failed");
            Refusal::new(
                req.tag,
                RejectReason::INSUFFICIENT_RESOURCES,
                "device setup failed",
            )
        })?;
        if !is_served(&self.opts.devices, device.name()) {
            return Err(Refusal::new(
                req.tag,
                RejectReason::UNABLE_ESTABLISH_CHANNEL,
                "device not served",
            ));
        }
        Ok(device)
    }

    /// Step 2b: the SCSI target port of the RDMA port the login came
    /// through, `device/port` (ALUA, `docs/alua.md`).
    fn target_port(
        &self,
        id: &CmId,
        device: &Device,
        req: &LoginRequest,
    ) -> Result<Arc<TargetPort>, Refusal> {
        let name = format!("{}/{}", device.name(), id.port_num());
        self.target.alua().port(&name).ok_or_else(|| {
            tracing::warn!(port = name, "too many target ports");
            Refusal::new(
                req.tag,
                RejectReason::INSUFFICIENT_RESOURCES,
                "too many target ports",
            )
        })
    }

    /// Step 3: SRP negotiation against the target's identity, limits and
    /// access list; the nexus has `existing` channels.
    fn negotiate(
        &self,
        req: &LoginRequest,
        existing: u32,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Accepted, Refusal> {
        let allowed = self.target.login_allowed(&req.initiator_port_id, peer);
        negotiate(req, self.port_id, &self.opts.limits, allowed, existing).map_err(|reject| Refusal {
            reject,
            why: "negotiation",
        })
    }

    /// Step 5: the channel's verbs resources on its device and poller, the
    /// queue pair readied with RDMA/CM's attributes and receives posted.
    fn build_channel(&self, p: ChannelParams<'_>) -> Result<ChannelDriver, StartError> {
        let ChannelParams {
            key,
            poller,
            cfg,
            depths,
            device,
            initiator,
            port,
            id,
        } = p;
        let sq = cfg.sq_depth;
        let rq = cfg.recv_slots();
        let srq = device.srq().filter(|_| cfg.shared_recv.is_some()).cloned();
        let nexus = self.target.nexus_on(*initiator, port);
        let mem = ChannelMemory::with(&cfg.memory_layout(), DmaBuf::new)?;
        let ch = Channel::new(cfg, nexus, mem)?;
        let comp = self.pollers[poller].comp_channel(device)?;
        // With a shared queue an initiator that overdraws its credits finds
        // receives anyway: leave the CQ room for that too.
        let cqe = sq + rq + 4 + if srq.is_some() { rq } else { 0 };
        let cq = CompletionQueue::new(device.context(), cqe, Some(&comp), 0, key.0)?;
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
        let reg = |b: &Arc<DmaBuf>| MemoryRegion::register(device.pd(), b.clone(), AccessFlags::LOCAL_WRITE);
        let recv = match srq {
            Some(s) => RecvSide::Srq(s),
            None => RecvSide::Own(reg(ch.recv_buf())?),
        };
        let mrs = [reg(ch.send_buf())?, reg(ch.pool_buf())?, reg(ch.table_buf())?];
        // INIT -> RTR -> RTS with the attributes RDMA/CM computes for this
        // connection, before accepting (the explicit QP handling).
        id.ready_qp(
            &qp,
            Some(depths.responder_resources),
            Some(depths.initiator_depth),
        )?;
        let mut d = ChannelDriver::new(key, ch, qp, cq, recv, mrs, device.clone());
        // Receives must be posted before the initiator can send.
        d.prime();
        Ok(d)
    }

    /// Steps 6-8: `rdma_accept`, SINGLE RDMA CHANNEL, and the channel handed
    /// to its poller. A failed accept drops the channel (and the id).
    fn accept_login(&mut self, id: CmId, p: Prepared, ib_cm: bool) {
        let mut rsp = [0u8; 52];
        let n = p.acc.response.emit(&mut rsp).unwrap_or(0);
        let srq = p.device.srq().is_some();
        let param = accept_param(&rsp[..n], p.depths, srq, p.driver.qp.qp_num());
        if let Err(e) = id.accept(&param) {
            tracing::error!(error = %e, "rdma_accept failed");
            return;
        }
        // SRP r16a 6.2 SINGLE RDMA CHANNEL: end the nexus's other channels.
        if p.acc.multichannel == MultiChannel::TerminateOthers {
            let others = self.conns.nexus_channels(&p.nexus).to_vec();
            for k in others {
                tracing::info!(key = k.0, "SINGLE multichannel login replaces channel");
                self.disconnect(k);
            }
        }
        self.summary.logins += 1;
        tracing::info!(
            key = p.key.0,
            initiator = %crate::wire::hex(&p.req.initiator_port_id),
            peer = ?id.peer_addr(),
            device = p.device.name(),
            relative_port = p.nexus.2,
            channels = p.existing + 1,
            it_iu_len = p.acc.it_iu_len,
            max_ti_iu_len = self.opts.limits.max_ti_iu_len,
            credits = self.opts.limits.queue_depth,
            immediate_data = p.acc.imm_data_offset.is_some(),
            rdma_read_depth = p.depths.initiator_depth,
            srq,
            ib_cm,
            "login accepted"
        );
        self.pollers[p.poller].send(PollerMsg::Add(Box::new(p.driver)));
        self.conns.insert(Conn {
            id,
            key: p.key,
            poller: p.poller,
            nexus: p.nexus,
            device: p.device.name().to_owned(),
            memory: p.memory,
            disconnect_sent: false,
        });
    }

    fn reject(&mut self, id: CmId, r: Refusal) {
        let Refusal { reject: rej, why } = r;
        self.summary.rejects += 1;
        tracing::warn!(reason = format_args!("{:#010x}", rej.reason.0), why, peer = ?id.peer_addr(), "login rejected");
        let mut b = [0u8; LoginReject::LEN];
        let n = rej.emit(&mut b).unwrap_or(0);
        if let Err(e) = id.reject(&b[..n]) {
            tracing::warn!(error = %e, "rdma_reject failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{LoginLimits, TargetPortId};

    const PORT: TargetPortId = TargetPortId {
        id_ext: 0x0002_c903_0001_0001,
        ioc_guid: 0x0002_c903_0001_0001,
    };

    #[test]
    fn software_devices_keep_one_read_in_flight() {
        let hw = DeviceAttr {
            vendor_id: 0x02c9,
            max_qp_init_rd_atom: 16,
            ..DeviceAttr::default()
        };
        let soft = SoftwareDevice::default();
        assert_eq!(QpLimits::of(&hw, &soft).max_qp_init_rd_atom, 16);
        let rxe = DeviceAttr {
            vendor_id: 0x00ff_ffff,
            ..hw.clone()
        };
        assert!(rxe.is_software());
        assert_eq!(QpLimits::of(&rxe, &soft).max_qp_init_rd_atom, SOFTWARE_READ_DEPTH);
        assert_eq!(
            rdma_read_depth(4, QpLimits::of(&rxe, &soft).max_qp_init_rd_atom),
            1
        );
        // data_path.software_read_depth: 0 lifts the bound, N sets it; a
        // hardware device never has it.
        let lifted = SoftwareDevice {
            read_depth: 0,
            ..soft
        };
        assert_eq!(QpLimits::of(&rxe, &lifted).max_qp_init_rd_atom, 16);
        let four = SoftwareDevice {
            read_depth: 4,
            ..soft
        };
        assert_eq!(QpLimits::of(&rxe, &four).max_qp_init_rd_atom, 4);
        assert_eq!(QpLimits::of(&hw, &four).max_qp_init_rd_atom, 16);
    }

    fn request(flags: u8) -> LoginRequest {
        LoginRequest {
            tag: Tag(0x1234),
            req_it_iu_len: 8260,
            req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            req_flags: flags,
            imm_data_offset: 68,
            initiator_port_id: [7; 16],
            target_port_id: PORT.to_bytes(),
        }
    }

    fn conn(private_data: Vec<u8>) -> ReceivedConnParam {
        ReceivedConnParam {
            private_data,
            responder_resources: 0,
            initiator_depth: 4,
            ..ReceivedConnParam::default()
        }
    }

    #[test]
    fn channel_memory_budget() {
        let mib = 1u64 << 20;
        assert!(fits_memory(0, 36 * mib, 36 * mib));
        assert!(!fits_memory(1, 36 * mib, 36 * mib));
        assert!(fits_memory(27 * 36 * mib, 36 * mib, 1024 * mib));
        assert!(!fits_memory(28 * 36 * mib, 36 * mib, 1024 * mib));
        assert!(!fits_memory(u64::MAX - 1, 2, u64::MAX - 1), "no overflow");
    }

    #[test]
    fn login_requests_parse_by_port_space() {
        let req = request(LoginRequest::MULTI | LoginRequest::IMMED_REQUESTED);
        let mut cm = [0u8; LoginRequest::RDMA_CM_LEN];
        req.emit_rdma_cm(&mut cm).unwrap();
        let mut iu = [0u8; LoginRequest::LEN];
        req.emit(&mut iu).unwrap();
        let offer = Offer {
            responder_resources: 0,
            initiator_depth: 4,
        };
        // RDMA/CM: the 56-byte form.
        assert_eq!(parse_login(Some(&conn(cm.to_vec())), false), Ok((req, offer)));
        // An IB port-space listener: the 64-byte IU.
        assert_eq!(parse_login(Some(&conn(iu.to_vec())), true), Ok((req, offer)));
        // Too short for the form of the port space: tag 0.
        let malformed = Refusal::new(
            Tag(0),
            RejectReason::UNABLE_ESTABLISH_CHANNEL,
            "malformed SRP_LOGIN_REQ",
        );
        assert_eq!(parse_login(Some(&conn(cm.to_vec())), true), Err(malformed));
        assert_eq!(parse_login(Some(&conn(cm[..40].to_vec())), false), Err(malformed));
        assert_eq!(parse_login(Some(&conn(vec![])), false), Err(malformed));
        assert_eq!(
            parse_login(None, false),
            Err(Refusal::new(
                Tag(0),
                RejectReason::UNABLE_ESTABLISH_CHANNEL,
                "no private data"
            ))
        );
    }

    #[test]
    fn devices_served() {
        let rxe = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_served(&[], "rxe0"));
        assert!(is_served(&rxe(&["rxe1", "rxe0"]), "rxe0"));
        assert!(!is_served(&rxe(&["rxe1"]), "rxe0"));
    }

    fn accepted() -> Accepted {
        let limits = LoginLimits::default();
        let req = request(LoginRequest::MULTI | LoginRequest::IMMED_REQUESTED);
        negotiate(&req, PORT, &limits, true, 0).unwrap()
    }

    fn defaults() -> ChannelDefaults {
        ChannelDefaults {
            limits: LoginLimits::default(),
            pool_size: 32 << 20,
            max_transfer: 1 << 20,
        }
    }

    #[test]
    fn channel_sizing() {
        let rxe = QpLimits {
            max_qp_wr: 1 << 20,
            max_qp_rd_atom: 128,
            max_qp_init_rd_atom: 128,
        };
        let acc = accepted();
        let linux = Offer {
            responder_resources: 0,
            initiator_depth: 4,
        };
        let (cfg, depths) = size_channel(&acc, linux, rxe, &defaults());
        assert_eq!(
            depths,
            ReadDepths {
                responder_resources: 0,
                initiator_depth: 4
            }
        );
        assert_eq!(cfg.rdma_read_depth, 4);
        assert_eq!(
            (cfg.it_iu_len, cfg.imm_data_offset),
            (acc.it_iu_len, acc.imm_data_offset)
        );
        assert_eq!(cfg.queue_depth, 128);
        assert_eq!(cfg.max_ti_iu_len, 256);
        assert_eq!((cfg.pool_size, cfg.max_transfer), (32 << 20, 1 << 20));
        assert_eq!(cfg.sq_depth, ChannelConfig::new(0, None, 128).sq_depth);
        assert_eq!(cfg.shared_recv, None);

        // The device bounds the READ depths and the send queue.
        let small = QpLimits {
            max_qp_wr: 100,
            max_qp_rd_atom: 2,
            max_qp_init_rd_atom: 1,
        };
        let greedy = Offer {
            responder_resources: 16,
            initiator_depth: 16,
        };
        let (cfg, depths) = size_channel(&acc, greedy, small, &defaults());
        assert_eq!(
            depths,
            ReadDepths {
                responder_resources: 2,
                initiator_depth: 1
            }
        );
        assert_eq!(cfg.sq_depth, 99);
        // ... but never below 8 send requests or one READ.
        let tiny = QpLimits {
            max_qp_wr: 2,
            max_qp_rd_atom: 0,
            max_qp_init_rd_atom: 0,
        };
        let (cfg, depths) = size_channel(&acc, Offer::default(), tiny, &defaults());
        assert_eq!(cfg.sq_depth, 8);
        assert_eq!((depths.initiator_depth, cfg.rdma_read_depth), (1, 1));
    }

    #[test]
    fn read_depth_is_the_offer_within_the_device() {
        assert_eq!(rdma_read_depth(4, 128), 4);
        assert_eq!(rdma_read_depth(255, 16), 16);
        assert_eq!(rdma_read_depth(0, 16), 1);
        assert_eq!(rdma_read_depth(8, 0), 1);
        assert_eq!(rdma_read_depth(255, u32::MAX), 255);
    }

    #[test]
    fn srq_credit_warning() {
        assert_eq!(srq_overcommit(1, 130, 4096), None);
        assert_eq!(srq_overcommit(31, 130, 4096), None);
        assert_eq!(srq_overcommit(32, 130, 4096), Some(4160));
        assert_eq!(srq_overcommit(1, 130, 130), None);
        assert_eq!(srq_overcommit(1, 131, 130), Some(131));
    }

    #[test]
    fn accept_parameters() {
        let depths = ReadDepths {
            responder_resources: 2,
            initiator_depth: 4,
        };
        let rsp = [1u8; 52];
        let p = accept_param(&rsp, depths, true, 0x11);
        assert_eq!(p.private_data, &rsp[..]);
        assert_eq!((p.responder_resources, p.initiator_depth), (2, 4));
        assert_eq!((p.flow_control, p.retry_count, p.rnr_retry_count), (1, 7, 7));
        assert!(p.srq);
        assert_eq!(p.qp_num, 0x11);
    }
}
