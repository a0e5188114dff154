//! The Device Management query client: what srp_daemon's `do_port` does
//! against one port, as a sans-I/O state machine ([`DmQuery`]) plus one I/O
//! function ([`query`]) that runs it over a [`UmadPort`].
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
use std::io;
use std::time::{Duration, Instant};

use crate::mad::agent::{RDMA_PS_IB, RDMA_PS_TCP};
use crate::rdma::umad::{Grh, LinkLayer, MadAddress, UmadPort};
use crate::wire::mad::{
    AttributeId, ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, MadStatus, Method, MgmtClass,
    ServiceEntries, ServiceEntriesModifier, ServiceEntry, SlotState, MAD_LEN,
};
use crate::wire::WireError;

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
    /// Where the requests went (filled by [`query`]).
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
    /// (filled by [`query`] from [`local_initiator_it_iu_len`]).
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
    /// skipped, as srp_daemon does, because OpenSM ignores it).
    pub fn new(first_tid: u32) -> Self {
        Self {
            next_tid: first_tid,
            step: Step::ClassPortInfo,
            outstanding: None,
            report: DmReport::default(),
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

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

use crate::wire::hex;

/// A GID as in sysfs / `ip -6`: eight groups of four hex digits.
pub fn gid_string(g: &[u8; 16]) -> String {
    g.chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(":")
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

    /// A JSON rendering (hand-written: serde is not a dependency).
    pub fn to_json(&self) -> String {
        let mut j = String::from("{");
        let field = |j: &mut String, k: &str, v: String| {
            if !j.ends_with('{') {
                j.push(',');
            }
            j.push_str(&json_str(k));
            j.push(':');
            j.push_str(&v);
        };
        field(
            &mut j,
            "dest_gid",
            self.dest_gid
                .as_ref()
                .map_or("null".into(), |g| json_str(&gid_string(g))),
        );
        field(&mut j, "dest_lid", self.dest_lid.to_string());
        field(&mut j, "pkey", json_str(&format!("{:04x}", self.pkey)));
        field(
            &mut j,
            "class_port_info",
            json_result(&self.class_port_info, |c| {
                format!(
                    "{{\"base_version\":{},\"class_version\":{},\"cap_mask\":{},\"cap_mask2\":{},\"resp_time_value\":{}}}",
                    c.base_version, c.class_version, c.cap_mask, c.cap_mask2, c.resp_time_value
                )
            }),
        );
        field(
            &mut j,
            "io_unit_info",
            json_result(&self.io_unit_info, |i| {
                let slots: Vec<String> = (1..=u16::from(i.max_controllers))
                    .map(|s| i.slot(s).unwrap_or(SlotState::NO_SLOT).0.to_string())
                    .collect();
                format!(
                    "{{\"change_id\":{},\"max_controllers\":{},\"option_rom\":{},\"diag_device_id\":{},\"slots\":[{}]}}",
                    i.change_id,
                    i.max_controllers,
                    i.option_rom,
                    i.diag_device_id,
                    slots.join(",")
                )
            }),
        );
        let ctrls: Vec<String> = self
            .controllers
            .iter()
            .map(|c| {
                let services: Vec<String> = c
                    .services
                    .iter()
                    .map(|s| {
                        format!(
                            "{{\"name\":{},\"service_id\":{}}}",
                            json_str(s.name_str().unwrap_or("")),
                            json_str(&format!("{:016x}", s.id))
                        )
                    })
                    .collect();
                format!(
                    "{{\"slot\":{},\"profile\":{},\"services\":[{}],\"services_error\":{}}}",
                    c.slot,
                    json_result(&c.profile, profile_json),
                    services.join(","),
                    c.services_error
                        .as_ref()
                        .map_or("null".into(), |e| json_str(&e.to_string()))
                )
            })
            .collect();
        field(&mut j, "controllers", format!("[{}]", ctrls.join(",")));
        let targets: Vec<String> = self.add_target_strings().iter().map(|s| json_str(s)).collect();
        field(&mut j, "add_target", format!("[{}]", targets.join(",")));
        let targets: Vec<String> = self
            .rdma_cm_add_target_strings()
            .iter()
            .map(|s| json_str(s))
            .collect();
        field(&mut j, "add_target_rdma_cm", format!("[{}]", targets.join(",")));
        let ex: Vec<String> = self
            .transcript
            .iter()
            .map(|e| {
                format!(
                    "{{\"attr_id\":{},\"attr_mod\":{},\"status\":{},\"data\":{}}}",
                    json_str(&format!("{:04x}", e.attr_id.0)),
                    json_str(&format!("{:08x}", e.attr_mod)),
                    e.status
                        .map_or("null".into(), |s| json_str(&format!("{:04x}", s.0))),
                    json_str(&hex(&e.data))
                )
            })
            .collect();
        field(&mut j, "transcript", format!("[{}]", ex.join(",")));
        j.push('}');
        j
    }
}

fn profile_json(p: &IoControllerProfile) -> String {
    format!(
        concat!(
            "{{\"guid\":{},\"vendor_id\":{},\"device_id\":{},\"device_version\":{},",
            "\"subsystem_vendor_id\":{},\"subsystem_id\":{},\"io_class\":{},\"io_subclass\":{},",
            "\"protocol\":{},\"protocol_version\":{},\"send_queue_depth\":{},\"rdma_read_depth\":{},",
            "\"send_size\":{},\"rdma_size\":{},\"op_cap_mask\":{},\"svc_cap_mask\":{},",
            "\"service_entries\":{},\"id_string\":{}}}"
        ),
        json_str(&format!("{:016x}", p.guid)),
        json_str(&format!("{:06x}", p.vendor_id)),
        json_str(&format!("{:08x}", p.device_id)),
        json_str(&format!("{:04x}", p.device_version)),
        json_str(&format!("{:06x}", p.subsystem_vendor_id)),
        json_str(&format!("{:08x}", p.subsystem_id)),
        json_str(&format!("{:04x}", p.io_class)),
        json_str(&format!("{:04x}", p.io_subclass)),
        json_str(&format!("{:04x}", p.protocol)),
        json_str(&format!("{:04x}", p.protocol_version)),
        p.send_queue_depth,
        p.rdma_read_depth,
        p.send_size,
        p.rdma_size,
        json_str(&format!("{:02x}", p.op_cap_mask)),
        json_str(&format!("{:02x}", p.svc_cap_mask)),
        p.service_entries,
        json_str(&String::from_utf8_lossy(
            &p.id_string[..p.id_string.iter().position(|&b| b == 0).unwrap_or(64)]
        )),
    )
}

fn json_result<T>(r: &Result<T, AttrError>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("{{\"error\":{}}}", json_str(&e.to_string())),
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if u32::from(c) < 0x20 => o.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl DmReport {
    /// Every exchange's status and attribute data as a hex dump (16 bytes
    /// a line), for comparing responders byte by byte.
    pub fn raw_dump(&self) -> String {
        let mut o = String::new();
        for e in &self.transcript {
            let status = e.status.map_or("none".to_owned(), |s| format!("{:04x}", s.0));
            o.push_str(&format!(
                "raw attr {:04x} mod {:08x} status {status}:\n",
                e.attr_id.0, e.attr_mod
            ));
            for (i, chunk) in e.data.chunks(16).enumerate() {
                let h: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                o.push_str(&format!("  {:3}: {}\n", i * 16, h.join(" ")));
            }
        }
        o
    }
}

impl fmt::Display for DmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest_gid {
            Some(g) => writeln!(
                f,
                "Device management of GID {} (LID {:#06x})",
                gid_string(g),
                self.dest_lid
            )?,
            None => writeln!(f, "Device management of LID {:#06x}", self.dest_lid)?,
        }
        match &self.class_port_info {
            Ok(c) => writeln!(
                f,
                "ClassPortInfo: base version {}, class version {}, capability mask {:#06x}, resp time value {}",
                c.base_version, c.class_version, c.cap_mask, c.resp_time_value
            )?,
            Err(e) => writeln!(f, "ClassPortInfo: {e}")?,
        }
        let iou = match &self.io_unit_info {
            Ok(i) => i,
            Err(e) => return writeln!(f, "IOUnitInfo: {e}"),
        };
        writeln!(f, "IO Unit Info:")?;
        writeln!(f, "    change ID:       {:04x}", iou.change_id)?;
        writeln!(f, "    max controllers: {:#04x}", iou.max_controllers)?;
        writeln!(
            f,
            "    option ROM:      {}",
            if iou.option_rom { "yes" } else { "no" }
        )?;
        for slot in 1..=u16::from(iou.max_controllers) {
            let s = iou.slot(slot).unwrap_or(SlotState::NO_SLOT);
            let name = match s {
                SlotState::NOT_INSTALLED => "not installed",
                SlotState::PRESENT => "present",
                SlotState::NO_SLOT => "no slot",
                _ => "<unknown>",
            };
            writeln!(f, "    controller[{slot:3}]: {name}")?;
        }
        for c in &self.controllers {
            writeln!(f)?;
            writeln!(f, "    controller[{:3}]", c.slot)?;
            let p = match &c.profile {
                Ok(p) => p,
                Err(e) => {
                    writeln!(f, "        IOControllerProfile: {e}")?;
                    continue;
                }
            };
            writeln!(f, "        GUID:             {:016x}", p.guid)?;
            writeln!(f, "        vendor ID:        {:06x}", p.vendor_id)?;
            writeln!(f, "        device ID:        {:06x}", p.device_id)?;
            writeln!(f, "        device version:   {:04x}", p.device_version)?;
            writeln!(
                f,
                "        subsystem:        {:06x}/{:08x}",
                p.subsystem_vendor_id, p.subsystem_id
            )?;
            writeln!(
                f,
                "        IO class:         {:04x} subclass {:04x} protocol {:04x} version {:04x}",
                p.io_class, p.io_subclass, p.protocol, p.protocol_version
            )?;
            writeln!(f, "        send queue depth: {}", p.send_queue_depth)?;
            writeln!(f, "        RDMA read depth:  {}", p.rdma_read_depth)?;
            writeln!(f, "        send size:        {}", p.send_size)?;
            writeln!(f, "        RDMA size:        {}", p.rdma_size)?;
            writeln!(f, "        op cap mask:      {:#04x}", p.op_cap_mask)?;
            writeln!(
                f,
                "        ID:               {}",
                p.id_str().unwrap_or("<not UTF-8>")
            )?;
            writeln!(f, "        service entries:  {}", p.service_entries)?;
            for (i, s) in c.services.iter().enumerate() {
                writeln!(
                    f,
                    "            service[{i:3}]: {:016x} / {}",
                    s.id,
                    s.name_str().unwrap_or("<not UTF-8>")
                )?;
            }
            if let Some(e) = &c.services_error {
                writeln!(f, "            ServiceEntries: {e}")?;
            }
        }
        let ib = self.add_target_strings();
        let cm = self.rdma_cm_add_target_strings();
        if !ib.is_empty() || !cm.is_empty() {
            writeln!(f)?;
        }
        for t in ib {
            writeln!(f, "add_target (IB CM, as srp_daemon): {t}")?;
        }
        for t in cm {
            writeln!(f, "add_target (RDMA/CM, RoCE or IPoIB): {t}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------

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
    agent: crate::rdma::umad::Agent,
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

/// Offset of the immediate data in the Linux initiator's SRP_CMD.
const IB_SRP_IMM_DATA_OFFSET: u32 = 68;
/// ib_srp's default `max_imm_data`.
const IB_SRP_DEFAULT_MAX_IMM_DATA: u32 = 8192;

/// The it_iu_len the kernel initiator on this node asks for with immediate
/// data: 68 + its `max_imm_data` (module parameters, as srp_daemon reads
/// them; ib_srp's defaults when it is not loaded), or `None` when its
/// `use_imm_data` is off.
pub fn local_initiator_it_iu_len() -> Option<u32> {
    let param = |name: &str| {
        std::fs::read_to_string(format!("/sys/module/ib_srp/parameters/{name}"))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    if matches!(param("use_imm_data").as_deref(), Some("N" | "n" | "0")) {
        return None;
    }
    let imm = param("max_imm_data")
        .and_then(|s| s.parse().ok())
        .unwrap_or(IB_SRP_DEFAULT_MAX_IMM_DATA);
    Some(IB_SRP_IMM_DATA_OFFSET.saturating_add(imm))
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
    let mut q = DmQuery::new(tid_seed());
    q.report.dest_gid = s.dest_gid;
    q.report.dest_lid = s.addr.lid;
    q.report.pkey = s.pkey;
    q.report.initiator_it_iu_len = local_initiator_it_iu_len();
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

/// One line per probe answer: method, status and the first data bytes.
pub fn probe_line(name: &str, answer: Option<&DmMad>) -> String {
    match answer {
        Some(m) => format!(
            "probe {name:34} -> method {:#04x} status {:04x} data[0..8] {:02x?}",
            m.header.method.0,
            m.header.status.0,
            &m.data[..8]
        ),
        None => format!("probe {name:34} -> no answer"),
    }
}

/// Send one DevMgt request per `(method, attribute, modifier)` and return
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mad::agent::{DmAgent, DmConfig};
    use proptest::prelude::*;

    const GUID: u64 = 0x0000_00ff_fe00_7701;

    /// Run a query against an in-memory agent; `tamper` may change or drop
    /// each response.
    fn run(agent: &mut DmAgent, mut tamper: impl FnMut(&mut [u8; 256]) -> bool) -> (DmReport, usize) {
        let mut q = DmQuery::new(0);
        q.report.dest_gid = Some([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0x77, 0x01]);
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
    fn raw_dump_and_probes() {
        let mut a = DmAgent::new(DmConfig::for_node_guid(GUID));
        let (r, _) = run(&mut a, |_| true);
        let raw = r.raw_dump();
        assert!(
            raw.starts_with("raw attr 0001 mod 00000000 status 0000:\n    0: 01 01 00 00 00 00 00 14 "),
            "{raw}"
        );
        assert_eq!(raw.lines().count(), 4 * 13);
        let probes = standard_probes();
        assert_eq!(probes.len(), 17);
        assert!(probes
            .iter()
            .any(|p| p.3 == 0x0001_0100 && p.2 == AttributeId::SERVICE_ENTRIES));
        let req = DmMad::request(Method::GET, 1, AttributeId::IO_UNIT_INFO, 0).to_bytes();
        let ans = DmMad::parse(&a.handle(&req).unwrap()).unwrap();
        assert_eq!(
            probe_line("Get IOUnitInfo", Some(&ans)),
            "probe Get IOUnitInfo                     -> method 0x81 status 0000 data[0..8] [00, 01, 10, 00, 10, 00, 00, 00]"
        );
        assert_eq!(
            probe_line("x", None),
            "probe x                                  -> no answer"
        );
    }

    /// The renderings of the canned reports equal `testdata/`, written by
    /// this renderer.
    #[test]
    fn golden_renderings() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/mad/testdata");
        let read = |name: &str, ext: &str| std::fs::read_to_string(format!("{dir}/{name}.{ext}")).unwrap();
        for (name, r) in crate::mad::fixtures::canned_reports() {
            assert_eq!(r.to_json() + "\n", read(name, "json"), "{name}.json");
            assert_eq!(r.to_string(), read(name, "txt"), "{name}.txt");
            assert_eq!(r.raw_dump(), read(name, "raw"), "{name}.raw");
        }
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
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
            let _ = r.to_json();
        }
    }
}
