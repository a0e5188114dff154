//! The Device Management query: what srp_daemon's `do_port` does against
//! one port, as a sans-I/O state machine ([`DmQuery`]) whose result is a
//! [`DmReport`] of plain data, and the table of error probes
//! ([`standard_probes`]). No system calls and no clock: the umad session in
//! [`crate::mad::session`] sends what [`DmQuery::poll_request`] returns and
//! feeds back each answer, or a timeout when the kernel gave the request
//! back after its retries. Rendering is in [`crate::mad::render`].
//!
//! Sequence (srp_daemon `do_port`): Get(ClassPortInfo), Get(IOUnitInfo),
//! then for every slot the controller list marks present,
//! Get(IOControllerProfile, slot) and Get(ServiceEntries) in chunks of four
//! entries (modifier `slot << 16 | last << 8 | first`).
//!
//! TIDs: the kernel's umad layer replaces the high 32 bits of a request's
//! TID with the agent's `hi_tid`, so responses are matched on the low 32
//! bits only.

use std::fmt;

use crate::mad::agent::{RDMA_PS_IB, RDMA_PS_TCP};
use crate::wire::mad::{
    AttributeId, ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, MadStatus, Method, MgmtClass,
    ServiceEntries, ServiceEntriesModifier, ServiceEntry, MAD_LEN,
};
use crate::wire::{hex, WireError};

/// Why an attribute is missing from a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrError {
    /// The responder answered with a non-zero status.
    Status(MadStatus),
    /// No answer after the kernel's retries.
    Timeout,
    /// The answer did not parse.
    Malformed(WireError),
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {s}"),
            Self::Timeout => f.write_str("no answer"),
            Self::Malformed(e) => write!(f, "malformed answer: {e}"),
        }
    }
}

/// One request/answer pair, with the raw attribute data, for comparing
/// responders byte by byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub attr_id: AttributeId,
    pub attr_mod: u32,
    /// `None` when there was no answer.
    pub status: Option<MadStatus>,
    pub data: [u8; DmMad::DATA_LEN],
}

/// One I/O controller found in the IOUnitInfo controller list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerReport {
    /// 1-based slot.
    pub slot: u16,
    pub profile: Result<IoControllerProfile, AttrError>,
    /// The service entries that were read.
    pub services: Vec<ServiceEntry>,
    /// The first error reading service entries, if any.
    pub services_error: Option<AttrError>,
}

/// Everything a DevMgt query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmReport {
    /// Where the requests went (from the [`QueryContext`]).
    pub dest_gid: Option<[u8; 16]>,
    pub dest_lid: u16,
    /// The P_Key the requests used (for the add_target string).
    pub pkey: u16,
    pub class_port_info: Result<ClassPortInfo, AttrError>,
    pub io_unit_info: Result<IoUnitInfo, AttrError>,
    pub controllers: Vec<ControllerReport>,
    /// Every exchange, in order.
    pub transcript: Vec<Exchange>,
    /// The it_iu_len the local initiator asks for when it uses immediate
    /// data (ib_srp: 68 + `max_imm_data`), if known: add_target strings
    /// then carry `max_it_iu_size=<SendMessageSize>` where that is smaller
    /// (from the [`QueryContext`]).
    pub initiator_it_iu_len: Option<u32>,
}

impl Default for DmReport {
    fn default() -> Self {
        Self {
            dest_gid: None,
            dest_lid: 0,
            pkey: 0xffff,
            class_port_info: Err(AttrError::Timeout),
            io_unit_info: Err(AttrError::Timeout),
            controllers: Vec::new(),
            transcript: Vec::new(),
            initiator_it_iu_len: None,
        }
    }
}

/// What the caller knows before the first request: where the requests go
/// and what the local initiator asks for. Copied into the [`DmReport`] (the
/// add_target strings need it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryContext {
    pub dest_gid: Option<[u8; 16]>,
    pub dest_lid: u16,
    /// The P_Key of the requests' P_Key index.
    pub pkey: u16,
    /// See [`DmReport::initiator_it_iu_len`] and [`initiator_it_iu_len`].
    pub initiator_it_iu_len: Option<u32>,
}

impl Default for QueryContext {
    fn default() -> Self {
        Self {
            dest_gid: None,
            dest_lid: 0,
            pkey: 0xffff,
            initiator_it_iu_len: None,
        }
    }
}

/// Offset of the immediate data in the Linux initiator's SRP_CMD.
const IB_SRP_IMM_DATA_OFFSET: u32 = 68;
/// ib_srp's default `max_imm_data`.
const IB_SRP_DEFAULT_MAX_IMM_DATA: u32 = 8192;

/// The it_iu_len the Linux initiator asks for with immediate data, from
/// the values of its module parameters `use_imm_data` and `max_imm_data`
/// (as srp_daemon reads them; `None` when not loaded, then ib_srp's
/// defaults apply): 68 + `max_imm_data`, or `None` when `use_imm_data` is
/// off.
pub fn initiator_it_iu_len(use_imm_data: Option<&str>, max_imm_data: Option<&str>) -> Option<u32> {
    if matches!(use_imm_data.map(str::trim), Some("N" | "n" | "0")) {
        return None;
    }
    let imm = max_imm_data
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(IB_SRP_DEFAULT_MAX_IMM_DATA);
    Some(IB_SRP_IMM_DATA_OFFSET.saturating_add(imm))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ClassPortInfo,
    IoUnitInfo,
    /// Profile of controller `idx` in `report.controllers`.
    Profile(usize),
    /// Service entries of controller `idx` starting at `first`.
    Services(usize, u8),
    Done,
}

/// Sans-I/O DevMgt query: call [`DmQuery::poll_request`] for the next
/// request to send, then feed what comes back to
/// [`DmQuery::handle_response`] (or [`DmQuery::handle_timeout`]) until
/// [`DmQuery::is_done`].
#[derive(Debug, Clone)]
pub struct DmQuery {
    next_tid: u32,
    step: Step,
    outstanding: Option<(u32, AttributeId, u32)>,
    report: DmReport,
}

impl DmQuery {
    /// A query whose first request uses TID `first_tid` (low 32 bits; 0 is
    /// skipped, as srp_daemon does, because OpenSM ignores it), with a
    /// default [`QueryContext`].
    pub fn new(first_tid: u32) -> Self {
        Self::with_context(first_tid, QueryContext::default())
    }

    /// [`DmQuery::new`] for the destination and initiator of `ctx`.
    pub fn with_context(first_tid: u32, ctx: QueryContext) -> Self {
        Self {
            next_tid: first_tid,
            step: Step::ClassPortInfo,
            outstanding: None,
            report: DmReport {
                dest_gid: ctx.dest_gid,
                dest_lid: ctx.dest_lid,
                pkey: ctx.pkey,
                initiator_it_iu_len: ctx.initiator_it_iu_len,
                ..DmReport::default()
            },
        }
    }

    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// The low 32 bits of the TID of the request awaiting an answer.
    pub fn outstanding_tid(&self) -> Option<u32> {
        self.outstanding.map(|o| o.0)
    }

    pub fn report(&self) -> &DmReport {
        &self.report
    }

    pub fn into_report(self) -> DmReport {
        self.report
    }

    fn tid(&mut self) -> u32 {
        if self.next_tid == 0 {
            self.next_tid = 1;
        }
        let t = self.next_tid;
        self.next_tid = self.next_tid.wrapping_add(1);
        t
    }

    /// The next request to send, or `None` while one is outstanding or when
    /// done.
    pub fn poll_request(&mut self) -> Option<[u8; MAD_LEN]> {
        if self.outstanding.is_some() {
            return None;
        }
        let (attr, attr_mod) = match self.step {
            Step::ClassPortInfo => (AttributeId::CLASS_PORT_INFO, 0),
            Step::IoUnitInfo => (AttributeId::IO_UNIT_INFO, 0),
            Step::Profile(i) => (
                AttributeId::IO_CONTROLLER_PROFILE,
                u32::from(self.report.controllers[i].slot),
            ),
            Step::Services(i, first) => {
                let c = &self.report.controllers[i];
                let n = c.profile.as_ref().map_or(0, |p| p.service_entries);
                let last = first.saturating_add(3).min(n.saturating_sub(1));
                let m = ServiceEntriesModifier {
                    slot: c.slot,
                    last,
                    first,
                };
                (AttributeId::SERVICE_ENTRIES, m.to_u32())
            }
            Step::Done => return None,
        };
        let tid = self.tid();
        self.outstanding = Some((tid, attr, attr_mod));
        Some(DmMad::request(Method::GET, u64::from(tid), attr, attr_mod).to_bytes())
    }

    /// Feed a received MAD. Returns `Ok(true)` if it answered the
    /// outstanding request (the query moved on), `Ok(false)` if it is not
    /// ours (other class, not a response, other TID) and was ignored.
    pub fn handle_response(&mut self, mad: &[u8]) -> Result<bool, WireError> {
        let m = DmMad::parse(mad)?;
        let h = m.header;
        let Some((tid, attr, attr_mod)) = self.outstanding else {
            return Ok(false);
        };
        if h.mgmt_class != MgmtClass::DEVICE_MGMT
            || !h.method.is_response()
            || h.tid as u32 != tid
            || h.attr_id != attr
        {
            return Ok(false);
        }
        self.outstanding = None;
        self.report.transcript.push(Exchange {
            attr_id: attr,
            attr_mod,
            status: Some(h.status),
            data: m.data,
        });
        let result = if h.status.is_success() {
            Ok(&m.data)
        } else {
            Err(AttrError::Status(h.status))
        };
        self.advance(result);
        Ok(true)
    }

    /// The outstanding request got no answer (the kernel returned it with
    /// `ETIMEDOUT`, or the caller's wait expired).
    pub fn handle_timeout(&mut self) {
        let Some((_, attr, attr_mod)) = self.outstanding.take() else {
            return;
        };
        self.report.transcript.push(Exchange {
            attr_id: attr,
            attr_mod,
            status: None,
            data: [0; DmMad::DATA_LEN],
        });
        self.advance(Err(AttrError::Timeout));
    }

    fn advance(&mut self, result: Result<&[u8; DmMad::DATA_LEN], AttrError>) {
        fn parse<T>(
            r: Result<&[u8; 192], AttrError>,
            f: fn(&[u8]) -> Result<T, WireError>,
        ) -> Result<T, AttrError> {
            r.and_then(|d| f(d).map_err(AttrError::Malformed))
        }
        self.step = match self.step {
            Step::ClassPortInfo => {
                // Informational only (srp_daemon does not read it): go on
                // whatever happened.
                self.report.class_port_info = parse(result, ClassPortInfo::parse);
                Step::IoUnitInfo
            }
            Step::IoUnitInfo => {
                self.report.io_unit_info = parse(result, IoUnitInfo::parse);
                match &self.report.io_unit_info {
                    Ok(iou) => {
                        self.report.controllers = iou
                            .present_slots()
                            .map(|slot| ControllerReport {
                                slot,
                                profile: Err(AttrError::Timeout),
                                services: Vec::new(),
                                services_error: None,
                            })
                            .collect();
                        self.first_profile(0)
                    }
                    Err(_) => Step::Done,
                }
            }
            Step::Profile(i) => {
                let c = &mut self.report.controllers[i];
                c.profile = parse(result, IoControllerProfile::parse);
                match &c.profile {
                    Ok(p) if p.service_entries > 0 => Step::Services(i, 0),
                    _ => self.first_profile(i + 1),
                }
            }
            Step::Services(i, first) => {
                let c = &mut self.report.controllers[i];
                let n = c.profile.as_ref().map_or(0, |p| p.service_entries);
                let last = first.saturating_add(3).min(n.saturating_sub(1));
                match parse(result, ServiceEntries::parse) {
                    Ok(s) => {
                        let count = usize::from(last - first) + 1;
                        c.services.extend_from_slice(&s.entries[..count]);
                    }
                    Err(e) => {
                        c.services_error.get_or_insert(e);
                    }
                }
                match last.checked_add(1) {
                    Some(next) if next < n => Step::Services(i, next),
                    _ => self.first_profile(i + 1),
                }
            }
            Step::Done => Step::Done,
        };
    }

    fn first_profile(&self, i: usize) -> Step {
        if i < self.report.controllers.len() {
            Step::Profile(i)
        } else {
            Step::Done
        }
    }
}

impl DmReport {
    /// The `add_target` strings srp_daemon would write for each SRP service
    /// entry: InfiniBand, IB CM login to the entry's ServiceID
    /// (srp_daemon `add_non_exist_target`). Needs [`DmReport::dest_gid`].
    pub fn add_target_strings(&self) -> Vec<String> {
        let Some(dgid) = self.dest_gid else {
            return Vec::new();
        };
        self.srp_services()
            .map(|(p, s, id_ext)| {
                let mut t = format!(
                    "id_ext={id_ext},ioc_guid={:016x},dgid={},pkey={:04x},service_id={:016x}",
                    p.guid,
                    hex(&dgid),
                    self.pkey,
                    s.id
                );
                if p.io_class != IoControllerProfile::SRP_IO_CLASS_R16A {
                    t.push_str(&format!(",io_class={:04x}", p.io_class));
                }
                t.push_str(&self.iu_size_option(p));
                t
            })
            .collect()
    }

    /// The `add_target` strings for an RDMA/CM login (RoCE, or InfiniBand
    /// with IPoIB addresses): `dest=<IP>:<port>`. The IP is known only when
    /// the destination GID is IPv4-mapped, the port only when the ServiceID
    /// is an RDMA/CM one (`ps << 16 | port`, as srptd advertises);
    /// otherwise they read `<target IP>` / `<port>`.
    pub fn rdma_cm_add_target_strings(&self) -> Vec<String> {
        let ip = self
            .dest_gid
            .and_then(|g| std::net::Ipv6Addr::from(g).to_ipv4_mapped())
            .map_or_else(|| "<target IP>".to_owned(), |a| a.to_string());
        self.srp_services()
            .map(|(p, s, id_ext)| {
                let ps = (s.id >> 16) as u16;
                let port = if s.id >> 32 == 0 && (ps == RDMA_PS_IB || ps == RDMA_PS_TCP) {
                    (s.id & 0xffff).to_string()
                } else {
                    "<port>".to_owned()
                };
                format!(
                    "id_ext={id_ext},ioc_guid={:016x},dest={ip}:{port}{}",
                    p.guid,
                    self.iu_size_option(p)
                )
            })
            .collect()
    }

    /// Every SRP service entry (name `SRP.T10:<id_ext>`) with its
    /// controller's profile.
    fn srp_services(&self) -> impl Iterator<Item = (&IoControllerProfile, &ServiceEntry, &str)> + '_ {
        self.controllers.iter().flat_map(|c| {
            let p = c.profile.as_ref().ok();
            c.services
                .iter()
                .filter_map(move |s| Some((p?, s, s.srp_id_ext()?)))
        })
    }

    /// `,max_it_iu_size=<SendMessageSize>` when the initiator would ask for
    /// more. srp_daemon adds it when ib_srp's `max_imm_data` exceeds
    /// SendMessageSize; the IU ib_srp asks for is 68 bytes longer than
    /// that, so this compares the whole IU.
    fn iu_size_option(&self, p: &IoControllerProfile) -> String {
        match self.initiator_it_iu_len {
            Some(len) if len > p.send_size => format!(",max_it_iu_size={}", p.send_size),
            _ => String::new(),
        }
    }
}

/// One request of [`standard_probes`]: a name, the method, attribute and
/// modifier.
pub type Probe = (&'static str, Method, AttributeId, u32);

/// Valid and invalid requests whose answers show how a responder handles
/// errors (`srptd dm-query --probe`; the comparison with ib_srpt is in
/// docs/device-management.md).
pub fn standard_probes() -> Vec<Probe> {
    use AttributeId as A;
    use Method as M;
    let se = |slot, last, first| ServiceEntriesModifier { slot, last, first }.to_u32();
    vec![
        ("Get ClassPortInfo", M::GET, A::CLASS_PORT_INFO, 0),
        ("Get IOUnitInfo", M::GET, A::IO_UNIT_INFO, 0),
        (
            "Get IOControllerProfile slot 0",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            0,
        ),
        (
            "Get IOControllerProfile slot 1",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            1,
        ),
        (
            "Get IOControllerProfile slot 2",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            2,
        ),
        (
            "Get IOControllerProfile slot 16",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            16,
        ),
        (
            "Get IOControllerProfile slot 17",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            17,
        ),
        (
            "Get ServiceEntries 1:0-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 0, 0),
        ),
        (
            "Get ServiceEntries 1:0-1",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 1, 0),
        ),
        (
            "Get ServiceEntries 1:1-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 0, 1),
        ),
        (
            "Get ServiceEntries 1:0-3",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 3, 0),
        ),
        (
            "Get ServiceEntries 2:0-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(2, 0, 0),
        ),
        (
            "Get ServiceEntries 0:0-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(0, 0, 0),
        ),
        ("Get DiagCode", M::GET, A::DIAG_CODE, 0),
        ("Get attribute 0xff00", M::GET, A(0xff00), 0),
        ("Set ClassPortInfo", M::SET, A::CLASS_PORT_INFO, 0),
        ("Set IOUnitInfo", M::SET, A::IO_UNIT_INFO, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mad::agent::{DmAgent, DmConfig};
    use crate::wire::mad::SlotState;
    use proptest::prelude::*;

    const GUID: u64 = 0x0000_00ff_fe00_7701;

    /// Run a query against an in-memory agent; `tamper` may change or drop
    /// each response.
    fn run(agent: &mut DmAgent, mut tamper: impl FnMut(&mut [u8; 256]) -> bool) -> (DmReport, usize) {
        let mut q = DmQuery::with_context(
            0,
            QueryContext {
                dest_gid: Some([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0x77, 0x01]),
                ..QueryContext::default()
            },
        );
        let mut n = 0;
        while let Some(mut req) = q.poll_request() {
            n += 1;
            assert!(q.poll_request().is_none(), "one request at a time");
            // What the kernel does to a request's TID.
            req[8..12].copy_from_slice(&0x0000_0007u32.to_be_bytes());
            match agent.handle(&req) {
                Some(mut rsp) => {
                    if tamper(&mut rsp) {
                        assert_eq!(q.handle_response(&rsp), Ok(true));
                    } else {
                        q.handle_timeout();
                    }
                }
                None => q.handle_timeout(),
            }
            assert!(n < 100);
        }
        assert!(q.is_done());
        (q.into_report(), n)
    }

    #[test]
    fn query_own_agent() {
        let mut a = DmAgent::new(DmConfig::for_node_guid(GUID));
        let (r, n) = run(&mut a, |_| true);
        assert_eq!(n, 4);
        assert_eq!(r.class_port_info.as_ref().unwrap().resp_time_value, 20);
        assert_eq!(r.io_unit_info.as_ref().unwrap().change_id, 1);
        assert_eq!(r.controllers.len(), 1);
        let c = &r.controllers[0];
        assert_eq!(c.slot, 1);
        assert_eq!(c.profile.as_ref().unwrap().guid, GUID);
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].name_str(), Some("SRP.T10:000000fffe007701"));
        assert_eq!(
            r.add_target_strings(),
            vec![
                "id_ext=000000fffe007701,ioc_guid=000000fffe007701,dgid=fe80000000000000000000fffe007701,\
                 pkey=ffff,service_id=000000fffe007701"
            ]
        );
        assert_eq!(
            r.rdma_cm_add_target_strings(),
            vec!["id_ext=000000fffe007701,ioc_guid=000000fffe007701,dest=<target IP>:<port>"]
        );
        let text = r.to_string();
        assert!(text.contains("controller[  1]: present"), "{text}");
        assert!(
            text.contains("IO class:         0100 subclass 609e protocol 0108"),
            "{text}"
        );
        let json = r.to_json();
        assert!(
            json.starts_with("{\"dest_gid\":\"fe80:0000:0000:0000:0000:00ff:fe00:7701\""),
            "{json}"
        );
        assert!(
            json.contains("\"id_string\":\"srptd userspace SRP target\""),
            "{json}"
        );
        assert_eq!(r.transcript.len(), 4);
    }

    #[test]
    fn add_target_options() {
        // srptd's advertisement: RDMA/CM service ID of port 5555, 4164-byte
        // IUs; an initiator asking for 8260 needs max_it_iu_size.
        let mut a = DmAgent::new(DmConfig {
            service_id: crate::mad::agent::rdma_cm_service_id(RDMA_PS_IB, 5555),
            send_size: 4164,
            ..DmConfig::for_node_guid(GUID)
        });
        let (mut r, _) = run(&mut a, |_| true);
        r.initiator_it_iu_len = Some(8260);
        assert_eq!(
            r.add_target_strings(),
            vec![
                "id_ext=000000fffe007701,ioc_guid=000000fffe007701,dgid=fe80000000000000000000fffe007701,\
                 pkey=ffff,service_id=00000000013f15b3,max_it_iu_size=4164"
            ]
        );
        assert_eq!(
            r.rdma_cm_add_target_strings(),
            vec![
                "id_ext=000000fffe007701,ioc_guid=000000fffe007701,dest=<target IP>:5555,max_it_iu_size=4164"
            ]
        );
        r.initiator_it_iu_len = Some(4164);
        r.dest_gid = Some(std::net::Ipv4Addr::new(169, 254, 77, 1).to_ipv6_mapped().octets());
        assert_eq!(
            r.rdma_cm_add_target_strings(),
            vec!["id_ext=000000fffe007701,ioc_guid=000000fffe007701,dest=169.254.77.1:5555"]
        );
        let text = r.to_string();
        assert!(
            text.contains("\nadd_target (IB CM, as srp_daemon): id_ext="),
            "{text}"
        );
        assert!(
            text.contains("\nadd_target (RDMA/CM, RoCE or IPoIB): id_ext=000000fffe007701,ioc_guid=000000fffe007701,dest=169.254.77.1:5555\n"),
            "{text}"
        );
        assert!(r.to_json().contains("\"add_target_rdma_cm\":[\"id_ext="));
    }

    #[test]
    fn ignores_foreign_mads() {
        let mut a = DmAgent::new(DmConfig::for_node_guid(GUID));
        let mut q = DmQuery::new(41);
        let req = q.poll_request().unwrap();
        let mut rsp = a.handle(&req).unwrap();
        // Wrong TID, the request itself, another class: all ignored.
        let mut other = rsp;
        other[15] ^= 1;
        assert_eq!(q.handle_response(&other), Ok(false));
        assert_eq!(q.handle_response(&req), Ok(false));
        rsp[1] = 0x03;
        assert_eq!(q.handle_response(&rsp), Ok(false));
        rsp[1] = 0x06;
        assert!(q.handle_response(&rsp[..100]).is_err());
        assert_eq!(q.handle_response(&rsp), Ok(true));
        assert_eq!(q.outstanding_tid(), None);
        // TIDs skip 0.
        let mut q = DmQuery::new(u32::MAX);
        assert_eq!(q.poll_request().unwrap()[12..16], [0xff; 4]);
        q.handle_timeout();
        assert_eq!(q.poll_request().unwrap()[12..16], [0, 0, 0, 1]);
    }

    #[test]
    fn errors_are_recorded() {
        let mut a = DmAgent::new(DmConfig::for_node_guid(GUID));
        // Every ServiceEntries answer gets a status.
        let (r, _) = run(&mut a, |rsp| {
            if rsp[17] == 0x12 {
                rsp[4..6].copy_from_slice(&0x0100u16.to_be_bytes());
            }
            true
        });
        assert_eq!(
            r.controllers[0].services_error,
            Some(AttrError::Status(MadStatus::NO_IOC))
        );
        assert!(r.add_target_strings().is_empty());
        // No IOUnitInfo: stop there.
        let (r, n) = run(&mut a, |rsp| rsp[17] != 0x10);
        assert_eq!(n, 2);
        assert_eq!(r.io_unit_info, Err(AttrError::Timeout));
        assert!(r.to_string().contains("IOUnitInfo: no answer"));
    }

    #[test]
    fn many_controllers_and_entries() {
        // A fake unit with slots 1 and 3 present, slot 3 with 6 entries:
        // ServiceEntries is read in chunks 0-3 and 4-5.
        let mut q = DmQuery::new(1);
        let mut mods = Vec::new();
        while let Some(req) = q.poll_request() {
            let m = DmMad::parse(&req).unwrap();
            let mut rsp = m.clone();
            rsp.header.method = Method::GET_RESP;
            match m.header.attr_id {
                AttributeId::IO_UNIT_INFO => {
                    let mut i = IoUnitInfo {
                        max_controllers: 4,
                        ..Default::default()
                    };
                    i.set_slot(1, SlotState::PRESENT);
                    i.set_slot(3, SlotState::PRESENT);
                    i.emit(&mut rsp.data).unwrap();
                }
                AttributeId::IO_CONTROLLER_PROFILE => {
                    let p = IoControllerProfile {
                        guid: u64::from(m.header.attr_mod),
                        service_entries: if m.header.attr_mod == 3 { 6 } else { 0 },
                        ..Default::default()
                    };
                    p.emit(&mut rsp.data).unwrap();
                }
                AttributeId::SERVICE_ENTRIES => {
                    mods.push(m.header.attr_mod);
                    let sm = ServiceEntriesModifier::from_u32(m.header.attr_mod);
                    let mut s = ServiceEntries::default();
                    for k in 0..=usize::from(sm.last - sm.first) {
                        s.entries[k] = ServiceEntry::srp(u64::from(sm.first) + k as u64, 0);
                    }
                    s.emit(&mut rsp.data).unwrap();
                }
                _ => {}
            }
            assert_eq!(q.handle_response(&rsp.to_bytes()), Ok(true));
        }
        assert_eq!(mods, vec![0x0003_0300, 0x0003_0504]);
        let r = q.into_report();
        assert_eq!(
            r.controllers.iter().map(|c| c.slot).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let ids: Vec<_> = r.controllers[1]
            .services
            .iter()
            .filter_map(|s| s.srp_id_ext())
            .collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(ids[5], "0000000000000005");
    }

    #[test]
    fn probe_table() {
        let probes = standard_probes();
        assert_eq!(probes.len(), 17);
        assert!(probes
            .iter()
            .any(|p| p.3 == 0x0001_0100 && p.2 == AttributeId::SERVICE_ENTRIES));
    }

    #[test]
    fn initiator_iu_len_from_module_parameters() {
        // Not loaded: ib_srp's defaults.
        assert_eq!(initiator_it_iu_len(None, None), Some(68 + 8192));
        assert_eq!(initiator_it_iu_len(Some("Y\n"), Some("4096\n")), Some(68 + 4096));
        assert_eq!(initiator_it_iu_len(Some("N\n"), Some("4096\n")), None);
        assert_eq!(initiator_it_iu_len(Some("0"), None), None);
        assert_eq!(initiator_it_iu_len(None, Some("junk")), Some(68 + 8192));
        assert_eq!(initiator_it_iu_len(None, Some("4294967295")), Some(u32::MAX));
    }

    proptest! {
        #[test]
        fn random_answers_never_panic(answers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 256), 1..40)) {
            let mut q = DmQuery::new(5);
            let mut answers = answers.into_iter();
            while let Some(req) = q.poll_request() {
                let Some(mut a) = answers.next() else { break };
                // Make it match the outstanding request often enough to
                // drive the state machine.
                a[1] = 0x06;
                a[3] |= 0x80;
                a[8..24].copy_from_slice(&req[8..24]);
                let _ = q.handle_response(&a);
                if q.outstanding_tid().is_some() {
                    q.handle_timeout();
                }
            }
            let r = q.into_report();
            let _ = r.to_string();
            prop_assert!(serde_json::from_str::<serde_json::Value>(&r.to_json()).is_ok());
        }
    }
}
