//! The I/O of `srptd dm-query`: a umad session on one port that runs a
//! [`DmQuery`] (send each request it returns, feed back the answer or a
//! timeout), and [`probe`], which sends a list of single requests. The
//! kernel's umad layer does the per-request timeouts and retries; the only
//! clock here is the wait for the kernel to give a request back.

use std::io;
use std::time::{Duration, Instant};

use crate::mad::query::{initiator_it_iu_len, AttrError, DmQuery, DmReport, QueryContext};
use crate::rdma::umad::{Agent, Grh, LinkLayer, MadAddress, UmadPort};
use crate::wire::mad::{AttributeId, DmMad, Method, MgmtClass, MAD_LEN};

/// Errors of [`query`].
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("port has no GID at index {0}")]
    NoGid(u8),
    #[error("no IOUnitInfo from the destination: {0}")]
    NoIoUnitInfo(AttrError),
}

/// Parameters of [`query_with`].
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub device: String,
    pub port: u8,
    /// Destination GID; default: the port's own GID `gid_index` (on RoCE a
    /// GRH is mandatory; on InfiniBand no GRH is sent when this is `None`).
    pub dest_gid: Option<[u8; 16]>,
    /// Destination LID; default: the port's own LID (0 on RoCE).
    pub dest_lid: Option<u16>,
    /// Source GID index for the GRH (softroce-vm.md: 0, the link-local GID;
    /// replies to the IPv4-mapped GID are dropped by the kernel's MAD layer).
    pub gid_index: u8,
    pub pkey_index: u16,
    /// Per-try response timeout handed to the kernel.
    pub timeout_ms: u32,
    pub retries: u32,
}

impl QueryOptions {
    pub fn new(device: &str, port: u8) -> Self {
        Self {
            device: device.to_owned(),
            port,
            dest_gid: None,
            dest_lid: None,
            gid_index: 0,
            pkey_index: 0,
            timeout_ms: 1000,
            retries: 3,
        }
    }
}

/// Query the DevMgt agent at `dest_gid` (default: the port's own GID index
/// 0, i.e. this node) from `device` port `port`.
pub fn query(device: &str, port: u8, dest_gid: Option<[u8; 16]>) -> Result<DmReport, QueryError> {
    query_with(&QueryOptions {
        dest_gid,
        ..QueryOptions::new(device, port)
    })
}

/// An open port with a requester agent and the address of the
/// destination, per [`QueryOptions`].
struct Session {
    port: UmadPort,
    agent: Agent,
    addr: MadAddress,
    dest_gid: Option<[u8; 16]>,
    pkey: u16,
}

impl Session {
    fn open(o: &QueryOptions) -> Result<Self, QueryError> {
        let port = UmadPort::open(&o.device, o.port)?;
        let info = port.port_info()?;
        let roce = info.link_layer != LinkLayer::InfiniBand;
        let dest_gid = match o.dest_gid {
            Some(g) => Some(g),
            None if roce => Some(info.gid(o.gid_index).ok_or(QueryError::NoGid(o.gid_index))?),
            None => None,
        };
        let grh = dest_gid.map(|gid| Grh {
            gid,
            gid_index: o.gid_index,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        });
        let addr = MadAddress {
            pkey_index: o.pkey_index,
            ..MadAddress::gsi(o.dest_lid.unwrap_or(info.base_lid), grh)
        };
        // A requester-only agent: no methods, so it coexists with ib_srpt's
        // or srptd's own DevMgt agent on the same port.
        let agent = port.register_agent(MgmtClass::DEVICE_MGMT.0, DmMad::CLASS_VERSION, &[])?;
        let pkey = info
            .pkeys
            .get(usize::from(o.pkey_index))
            .copied()
            .unwrap_or(0xffff);
        Ok(Self {
            port,
            agent,
            addr,
            dest_gid,
            pkey,
        })
    }

    /// Send `req` and wait for the answer whose TID has the same low 32
    /// bits. `Ok(None)`: no answer.
    fn exchange(&self, o: &QueryOptions, req: &[u8; MAD_LEN]) -> Result<Option<[u8; MAD_LEN]>, QueryError> {
        let tid = u64::from_be_bytes(req[8..16].try_into().unwrap_or_default()) as u32;
        self.port
            .send(&self.agent, &self.addr, req, o.timeout_ms, o.retries)?;
        let wait = Duration::from_millis(u64::from(o.timeout_ms) * (u64::from(o.retries) + 1))
            + Duration::from_secs(1);
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(r) = self.port.recv(Some(left))? else {
                tracing::debug!(tid, "DevMgt: no answer before deadline");
                return Ok(None);
            };
            let rtid = u64::from_be_bytes(r.mad[8..16].try_into().unwrap_or_default()) as u32;
            if r.agent_id != self.agent.id() || rtid != tid {
                continue;
            }
            if r.status != 0 {
                // Our own request, given back by the kernel after its
                // retries (status ETIMEDOUT) or a send error.
                tracing::debug!(tid, status = r.status, "DevMgt: request returned unanswered");
                return Ok(None);
            }
            if r.mad[3] & Method::RESP_BIT != 0 {
                return Ok(Some(r.mad));
            }
        }
    }
}

/// The it_iu_len the kernel initiator on this node asks for with immediate
/// data: 68 + its `max_imm_data` (module parameters, as srp_daemon reads
/// them; ib_srp's defaults when it is not loaded), or `None` when its
/// `use_imm_data` is off.
pub fn local_initiator_it_iu_len() -> Option<u32> {
    let param = |name: &str| std::fs::read_to_string(format!("/sys/module/ib_srp/parameters/{name}")).ok();
    initiator_it_iu_len(param("use_imm_data").as_deref(), param("max_imm_data").as_deref())
}

fn tid_seed() -> u32 {
    std::process::id().wrapping_mul(0x9e37_79b9)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
}

/// [`query`] with all parameters.
pub fn query_with(o: &QueryOptions) -> Result<DmReport, QueryError> {
    let s = Session::open(o)?;
    let mut q = DmQuery::with_context(
        tid_seed(),
        QueryContext {
            dest_gid: s.dest_gid,
            dest_lid: s.addr.lid,
            pkey: s.pkey,
            initiator_it_iu_len: local_initiator_it_iu_len(),
        },
    );
    while let Some(req) = q.poll_request() {
        match s.exchange(o, &req)? {
            None => q.handle_timeout(),
            Some(rsp) => match q.handle_response(&rsp) {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    tracing::debug!("DevMgt query: unexpected answer");
                    q.handle_timeout();
                }
            },
        }
    }
    let report = q.into_report();
    if let Err(e) = &report.io_unit_info {
        return Err(QueryError::NoIoUnitInfo(e.clone()));
    }
    Ok(report)
}

/// each answer (`None`: no answer), for checking a responder's error
/// statuses.
pub fn probe(
    o: &QueryOptions,
    requests: &[(Method, AttributeId, u32)],
) -> Result<Vec<Option<DmMad>>, QueryError> {
    let s = Session::open(o)?;
    let mut tid = tid_seed();
    let mut out = Vec::with_capacity(requests.len());
    for &(method, attr, attr_mod) in requests {
        tid = tid.wrapping_add(1).max(1);
        let req = DmMad::request(method, u64::from(tid), attr, attr_mod).to_bytes();
        out.push(match s.exchange(o, &req)? {
            Some(rsp) => Some(DmMad::parse(&rsp).map_err(|e| io::Error::other(e.to_string()))?),
            None => None,
        });
    }
    Ok(out)
}
